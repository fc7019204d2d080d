"""``client.guard.stats()``: one plain snapshot of what the guard is doing.

Two sources, no polling:

* :class:`StatsCollector`, an ``on_event`` subscriber on the guard's
  :class:`~telethon_guard.events.EventBus` (subscribed with ``request_events=False``, so it
  alone never makes the pipeline build a ``RequestFinished`` per call). It counts what the
  layers do not keep themselves: retries, flood waits and refusals by method, transport errors
  by code, reconnect attempts and successes, stray futures retrieved, deadline hits, breaker
  transitions, and the last breaker state seen per key.
* read-only accessors of the pipeline (:meth:`Pipeline.stats`): outcomes per method,
  breaker states and flood blocks from local storage, the limiter queue, learned paces.

With shared storage (Redis) breakers and blocks come from the storage's view: what this
process last learned from Redis. :func:`snapshot` pokes it
(:mod:`telethon_guard.storage.redis_view`): when it is older than 1 s a refresh starts in the
background, so blocks recorded by other processes show within about a second of regular
reads, and ``stats()`` itself stays synchronous with no I/O.

:func:`snapshot` merges both into a :class:`GuardStats` (a frozen dataclass; ``as_dict()``
gives plain dicts, and ``stats["calls"]`` works like a mapping). Every counter is bounded:
keys are TL method names, transport error codes and breaker keys, never peer ids (flood scopes
naming a peer are hashed unless ``GuardConfig.log_peer_ids``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .events import (
    BreakerStateChanged,
    DeadlineExceededEvent,
    FloodBlocked,
    FloodWaitStarted,
    GuardEvent,
    ReconnectAttempt,
    ReconnectGaveUp,
    ReconnectSucceeded,
    RequestFinished,
    RequestLimited,
    RetriesExhausted,
    RetryScheduled,
    StrayFutureRetrieved,
    TransportErrorEvent,
)
from .storage.redis_view import poke_view

_MAX_KEYS = 1024
"""Bound of every per-method / per-key table (TL has about 700 methods)."""


def _bump(table: dict[Any, int], key: Any, n: int = 1) -> None:
    if key not in table and len(table) >= _MAX_KEYS:
        key = "other"
    table[key] = table.get(key, 0) + n


class StatsCollector:
    """Counts guard events for :func:`snapshot`. Call it with an event (it is an ``on_event``
    callback); unknown events are ignored. Never raises on a well-formed event.

    Attributes (all counts since construction; seconds are float):

    * ``retries``: ``{method: RetryScheduled count}``; ``retries_exhausted``: total.
    * ``flood_waits``: ``{method: calls that waited a flood scope}``; ``flood_wait_seconds``:
      sum of the waits announced; ``flood_blocked``: ``{method: calls refused at once}``.
    * ``limited``: calls the rate limiter delayed; ``limited_seconds``: total delay.
    * ``transport_errors``: ``{code: count}`` (negative codes, e.g. ``-429``).
    * ``reconnect_attempts``, ``reconnects`` (successful), ``reconnect_give_ups`` (pending
      calls failed after ``max_reconnect_seconds``), ``stray_futures``,
      ``deadline_exceeded``, ``breaker_transitions``.
    * ``breakers``: ``{key: last state seen}``; ``reconnecting``: ``{dc_id: attempts}`` of DCs
      with a reconnect attempt and no success since (``None`` key: unknown DC).
    """

    __slots__ = ("breaker_transitions", "breakers", "deadline_exceeded", "flood_blocked",
                 "flood_wait_seconds", "flood_waits", "limited", "limited_seconds",
                 "reconnect_attempts", "reconnect_give_ups", "reconnecting", "reconnects",
                 "retries",
                 "retries_exhausted", "stray_futures", "transport_errors")

    def __init__(self) -> None:
        self.retries: dict[str, int] = {}
        self.retries_exhausted = 0
        self.flood_waits: dict[str, int] = {}
        self.flood_wait_seconds = 0.0
        self.flood_blocked: dict[str, int] = {}
        self.limited = 0
        self.limited_seconds = 0.0
        self.transport_errors: Counter[int] = Counter()
        self.reconnect_attempts = 0
        self.reconnects = 0
        self.reconnect_give_ups = 0
        self.stray_futures = 0
        self.deadline_exceeded = 0
        self.breaker_transitions = 0
        self.breakers: dict[str, str] = {}
        self.reconnecting: dict[int | None, int] = {}

    def __call__(self, event: GuardEvent) -> None:
        if type(event) is RequestFinished:  # one per call: counted by the pipeline already
            return
        if isinstance(event, RetryScheduled):
            _bump(self.retries, event.method or "unknown")
        elif isinstance(event, FloodWaitStarted):
            _bump(self.flood_waits, event.method)
            self.flood_wait_seconds += event.seconds
        elif isinstance(event, FloodBlocked):
            _bump(self.flood_blocked, event.method)
        elif isinstance(event, RequestLimited):
            self.limited += 1
            self.limited_seconds += event.waited
        elif isinstance(event, BreakerStateChanged):
            self.breaker_transitions += 1
            if event.key in self.breakers or len(self.breakers) < _MAX_KEYS:
                self.breakers[event.key] = event.new
        elif isinstance(event, TransportErrorEvent):
            self.transport_errors[event.code] += 1
        elif isinstance(event, ReconnectAttempt):
            self.reconnect_attempts += 1
            self.reconnecting[event.dc_id] = event.attempt
        elif isinstance(event, ReconnectSucceeded):
            self.reconnects += 1
            self.reconnecting.pop(event.dc_id, None)
        elif isinstance(event, ReconnectGaveUp):
            self.reconnect_give_ups += 1
        elif isinstance(event, StrayFutureRetrieved):
            self.stray_futures += 1
        elif isinstance(event, DeadlineExceededEvent):
            self.deadline_exceeded += 1
        elif isinstance(event, RetriesExhausted):
            self.retries_exhausted += 1


@dataclass(frozen=True)
class GuardStats:
    """A snapshot of one guard (``client.guard.stats()``). Plain data: safe to serialize.

    * ``calls``: ``{method: {outcome: count}}``; outcome one of ``events.OUTCOMES``
      (``"ok"``, ``"flood_wait"``, ``"deadline"``...), the metrics' ``outcome`` label.
    * ``breakers``: ``{breaker key: "CLOSED" | "OPEN" | "HALF_OPEN"}`` (key
      ``acct:<account>/dc:<dc>``).
    * ``blocked``: ``{flood scope: seconds left}``: methods (and chats, hashed) blocked now.
    * ``limiter_queue``: calls waiting for a rate-limiter slot in this process.
    * ``paces``: ``{method: (count, period s)}`` learned by adaptive pacing.
    * ``retries``, ``flood_waits``, ``flood_blocked``: ``{method: count}``.
    * ``flood_wait_seconds``: sum of flood waits announced to waiting calls (s).
    * ``limited`` / ``limited_seconds``: calls the limiter delayed, and the total delay (s).
    * ``transport_errors``: ``{code: count}``, e.g. ``{-429: 3}``.
    * ``reconnect_attempts``, ``reconnects``, ``reconnect_give_ups``, ``stray_futures``,
      ``deadline_exceeded``,
      ``retries_exhausted``, ``breaker_transitions``: counts.
    * ``available``: ``client.guard.available`` at the time of the snapshot.
    """

    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, float] = field(default_factory=dict)
    limiter_queue: int = 0
    paces: dict[str, tuple[int, float]] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    flood_waits: dict[str, int] = field(default_factory=dict)
    flood_blocked: dict[str, int] = field(default_factory=dict)
    flood_wait_seconds: float = 0.0
    limited: int = 0
    limited_seconds: float = 0.0
    transport_errors: dict[int, int] = field(default_factory=dict)
    reconnect_attempts: int = 0
    reconnects: int = 0
    reconnect_give_ups: int = 0
    stray_futures: int = 0
    deadline_exceeded: int = 0
    retries_exhausted: int = 0
    breaker_transitions: int = 0
    available: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of every field (copies)."""
        return dataclasses.asdict(self)

    def __getitem__(self, name: str) -> Any:
        """``stats["calls"]``: mapping-style access to a field (``KeyError`` if unknown)."""
        if name not in _FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def keys(self) -> tuple[str, ...]:
        """Field names (so ``dict(stats)`` works)."""
        return _FIELDS


_FIELDS = tuple(f.name for f in dataclasses.fields(GuardStats))


def snapshot(pipeline: Any, collector: StatsCollector | None,
             available: bool = True) -> GuardStats:
    """Merge ``pipeline.stats()`` (when it has one) and ``collector``'s counters.

    Breaker states from local storage win; for shared storage (where the pipeline reports
    none) the last state this process saw in ``BreakerStateChanged`` events is used.
    """
    poke_view(getattr(pipeline, "storage", None))  # shared storage: a stale view refreshes
    get = getattr(pipeline, "stats", None)
    base: dict[str, Any] = get() if callable(get) else {}
    c = collector if collector is not None else StatsCollector()
    breakers = dict(c.breakers)
    breakers.update(base.get("breakers", {}))
    return GuardStats(
        calls={m: dict(v) for m, v in base.get("calls", {}).items()},
        breakers=breakers,
        blocked=dict(base.get("blocked", {})),
        limiter_queue=int(base.get("limiter_queue", 0)),
        paces=dict(base.get("paces", {})),
        retries=dict(c.retries),
        flood_waits=dict(c.flood_waits),
        flood_blocked=dict(c.flood_blocked),
        flood_wait_seconds=c.flood_wait_seconds,
        limited=c.limited,
        limited_seconds=c.limited_seconds,
        transport_errors=dict(c.transport_errors),
        reconnect_attempts=c.reconnect_attempts,
        reconnects=c.reconnects,
        reconnect_give_ups=c.reconnect_give_ups,
        stray_futures=c.stray_futures,
        deadline_exceeded=c.deadline_exceeded,
        retries_exhausted=c.retries_exhausted,
        breaker_transitions=c.breaker_transitions,
        available=available,
    )


__all__ = ["GuardStats", "StatsCollector", "snapshot"]
