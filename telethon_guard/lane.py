"""The straight lane: what a call that no layer would stop needs, precomputed per pipeline.

Most calls pass every layer without waiting: nothing blocked in the flood ledger, the breaker
CLOSED with no failure counted, no learned pace for the method, the limiter's slot free now,
no deadline scope, one request (not a wrapper, a file transfer nor a difference request of the
update loop). Reads, sends (``messages.sendMessage``...) and chat writes
(``messages.editMessage``...) alike: for those, the guarded client's ``client(request)``
(:func:`telethon_guard._client_call.lane_call`) does the layers' work inline in ONE coroutine
frame, reading this object's fields: the deadline (one clock read, the attempt timer filed in
a :class:`~telethon_guard.clock.FifoDeadlines`), the limiter's reservation (a send's per-chat
windows included: :meth:`Lane.send_specs`), the send, the await, then the success bookkeeping
(the breaker's, the pacer's, the flood scope tracker's for a write to a chat when it counts
anything, the outcome count, ``RequestFinished`` when someone listens).

With nothing blocked in the flood ledger, a call's peer and ``random_id``
(:func:`~telethon_guard._tl.describe`) change what the layers do before and after a successful
attempt only through the limiter's windows (``send_limits`` and per-chat limits, for a send:
:func:`~telethon_guard.keys.is_send`) and the scope tracker's success record
(:meth:`~telethon_guard.flood_scope.FloodScopeTracker.on_write`); so the lane describes them
only when those are configured or tracking something, and for an attempt that raised (its
:class:`CallInfo` carries both: the slow mode and chat flood scopes, ``idempotent``,
``AlreadyDelivered``).

Anything else goes through :meth:`Pipeline.invoke <telethon_guard.pipeline.Pipeline.invoke>`,
the single definition of the semantics: a call the lane cannot admit before it sends (a check
fails, the limiter's slot is not free now: the slot is given back first) is run by it from
the start, and an attempt that raised is handed to :meth:`Pipeline.resume
<telethon_guard.pipeline.Pipeline.resume>`, which goes on exactly as the layers around the
attempt would (the attempt's classification and breaker verdict, retry, flood ledger).
tests/guard/test_guard_lane.py checks that both give the same results, events, stats, breaker
and ledger state.

The lane exists only for a pipeline whose storage is the in-process
:class:`~telethon_guard.storage.memory.MemoryStorage`, not ``observe_only``, on Python 3.11+
(``Task.cancelling``): :meth:`Lane.of` returns ``None`` otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from .call import CallInfo
from .clock import FifoDeadlines, MonotonicClock, held_deadline
from .events import EVENT_ROUTE, EventBus
from .keys import TRANSFER_METHODS, is_idempotent
from .storage.memory import MemoryStorage

Pipeline = Any
"""A :class:`~telethon_guard.pipeline.Pipeline` (the pipeline imports this module; naming its
class here, even for types only, would make the two an import circle)."""

__all__ = ["Lane"]

_Route = tuple[str, tuple[Any, ...]]

_KINDS: dict[type, str] = {}
"""``{request class: method name}`` for the classes the lane takes (``""``: never), shared by
every lane (it depends on the class only; bounded: the TL schema has ~700 functions)."""


class Lane:
    """The straight lane's state for one :class:`~telethon_guard.pipeline.Pipeline` (module
    docstring). Fields read per call by the lane (never written by it, except the caches):

    * ``kinds``: ``{request class: method name}`` for the classes the lane takes (``""``:
      never; filled by :meth:`kind` on a class's first call; one table for every lane);
    * ``flood``: the ledger's live flood table (empty: nothing blocked anywhere);
    * ``probes``: the breaker's HALF_OPEN probe owners (empty: no probe in flight);
    * ``breakers``: the storage's breaker table (:meth:`MemoryStorage.breaker_table`);
    * ``paces``: the pacer's learned-pace table (``{(account, method): ...}``; empty: none);
    * ``routes``: ``{(account, DC, method): (breaker key, limiter specs)}`` (:meth:`route`);
    * ``sends``: a send's limiter specs depend on its chat (``send_limits`` or per-chat
      limits configured, and a limiter); ``send_routes``: ``{(account, DC, method, peer):
      specs}`` of sends (:meth:`send_specs`);
    * ``scopes``: the flood ledger's :class:`~telethon_guard.flood_scope.FloodScopeTracker`,
      ``scope_sends``: it counts sends, ``scope_methods``: its live table of flooded methods
      (either: a write to a chat is told to it on success);
    * ``decide`` / ``release``: the limiter's synchronous reservation and its give-back
      (``None``: no limiter window applies);
    * ``length``: the attempt timer's length, seconds (``min(deadline, attempt_timeout)``,
      ``None``: no timer), ``by_deadline``: whether that is the deadline;
    * ``account``: ``GuardConfig.account`` as a string, or ``None`` (the client's link's);
    * ``shared``: the pipeline's layers are shared with other clients (``Pipeline.shared``);
    * ``monotonic``: the clock is ``time.monotonic`` (its readings serve the session store);
    * ``succeeded``: the pacer's ``on_success`` (``None``: no adaptive pacing);
    * ``callbacks``, ``quiet``, ``enabled``: the event bus's :meth:`~telethon_guard.events.
      EventBus.listener_tables` (``RequestFinished`` is built when ``len(callbacks) >
      len(quiet) or enabled(logging.DEBUG)``, as ``EventBus.wants_request_events`` says).
    """

    __slots__ = ("account", "breaker", "breakers", "by_deadline", "callbacks", "deadline",
                 "decide", "enabled", "events", "flood", "kinds", "length", "monotonic", "now",
                 "outcomes", "paces", "pipeline", "probes", "quiet", "release", "routes",
                 "scope_methods", "scope_sends", "scopes", "send_routes", "sends", "shared",
                 "succeeded", "timers")

    def __init__(self, pipeline: Pipeline, storage: MemoryStorage) -> None:
        config = pipeline.config
        self.pipeline = pipeline
        self.now = pipeline.clock.now
        self.events = pipeline.events
        self.callbacks, self.quiet, self.enabled = pipeline.events.listener_tables()
        self.breaker = pipeline.breaker
        self.kinds = _KINDS
        self.flood = storage.flood_table()
        self.probes = pipeline.breaker.probing_table()
        self.breakers = storage.breaker_table()
        pacer = pipeline.ledger.pacer
        self.paces: dict[Any, Any] = pacer.pace_table() if pacer is not None else {}
        self.succeeded = pacer.on_success if pacer is not None else None
        self.routes: dict[tuple[str, int, str], _Route] = {}
        limited = pipeline.rate_layer in pipeline.layers
        self.decide = pipeline.limiter.decide_local if limited else None
        self.sends = self.decide is not None and bool(
            config.send_limits or config.peer_limits_private or config.peer_limits_group)
        self.send_routes: dict[tuple[str, int, str, str], tuple[Any, ...]] = {}
        self.scopes = pipeline.ledger.scopes
        self.scope_sends = self.scopes.counts_sends
        self.scope_methods = self.scopes.tracked
        self.release = storage.release_sync
        self.deadline = config.deadline
        timeout = config.attempt_timeout
        self.length = self.deadline
        self.by_deadline = True
        if timeout is not None and (self.length is None or timeout < self.length):
            self.length = timeout
            self.by_deadline = False
        self.account = str(config.account) if config.account else None
        self.outcomes = pipeline.outcomes
        self.timers: FifoDeadlines | None = None
        self.shared = bool(getattr(pipeline, "shared", False))
        self.monotonic = type(pipeline.clock) is MonotonicClock

    @classmethod
    def of(cls, pipeline: Pipeline) -> Lane | None:
        """The lane of ``pipeline``, or ``None`` when it cannot have one (module docstring)."""
        storage = pipeline.storage
        if (sys.version_info < (3, 11) or type(storage) is not MemoryStorage
                or pipeline.config.observe_only or pipeline.admit is not None
                or not isinstance(pipeline.events, EventBus)):
            return None
        if pipeline.rate_layer in pipeline.layers and pipeline.limiter.decide_local is None:
            return None
        return cls(pipeline, storage)

    def kind(self, request: Any, method: str | None) -> str:
        """Remember whether the lane takes ``request``'s class: ``method`` (its method name),
        or ``None`` when the client's description of the class rules it out (a file
        transfer, a difference request, a wrapper). Returns the method name, or ``""``
        (never)."""
        name = method if method is not None and method not in TRANSFER_METHODS else ""
        if len(_KINDS) < 4096:
            _KINDS[type(request)] = name
        return name

    def route(self, account: str, dc_id: int, method: str) -> _Route:
        """``(breaker key, limiter specs)`` of ``(account, DC, method)`` (cached; bounded):
        the same key and the same spec tuple the layers compute (``CircuitBreaker.enter``,
        ``LimitKeys.specs`` without a learned pace)."""
        probe = CallInfo(method, None, account, dc_id)
        key = self.breaker.key_of(probe)
        specs: tuple[Any, ...] = ()
        if self.decide is not None:
            specs = self.pipeline.limit_keys.base_specs(account, dc_id, method)
        if self.shared:  # layers shared with other clients: stats() shows its own accounts
            self.pipeline.note_account(account)
        routes = self.routes
        if len(routes) >= 4096:
            routes.clear()
        route = routes[(account, dc_id, method)] = (key, specs)
        return route

    def send_specs(self, account: str, dc_id: int, method: str, peer: str) -> tuple[Any, ...]:
        """The limiter specs of a send (:func:`~telethon_guard.keys.is_send`) of ``method``
        to ``peer`` (``"peer:<id>"``): the spec tuple :meth:`LimitKeys.specs
        <telethon_guard.limiter.LimitKeys.specs>` builds for it without a learned pace (the
        account's ``send_limits`` and the chat's per-chat windows after the route's specs).
        Cached per ``(account, DC, method, peer)``; bounded (cleared when full)."""
        routes = self.send_routes
        specs = routes.get((account, dc_id, method, peer))
        if specs is not None:
            return specs
        keys = self.pipeline.limit_keys
        probe = CallInfo(method, None, account, dc_id, peer, 0)  # a send: random_id set
        specs = keys.specs(probe)
        if keys.pace_spec(probe, specs) is not None:
            specs = specs[:-1]  # the lane never runs a call with a learned pace
        if len(routes) >= 4096:
            routes.clear()
        routes[(account, dc_id, method, peer)] = specs
        return specs

    def breaker_succeeded(self, key: str, account: str) -> None:
        """The breaker's success record of a lane call when its breaker has something to
        change (``CircuitBreaker.succeeded``); shared layers report a transition on this
        client's bus, as :meth:`Pipeline.invoke <telethon_guard.pipeline.Pipeline.invoke>`
        routes their events."""
        if not self.shared:
            self.breaker.succeeded(key, account)
            return
        token = EVENT_ROUTE.set(self.events)
        try:
            self.breaker.succeeded(key, account)
        finally:
            EVENT_ROUTE.reset(token)

    def pace_succeeded(self, account: str, method: str, now: float) -> None:
        """The pacer's success record of a lane call answered after a pace of ``method`` was
        learned (the call was sent before): a late answer may refine that pace
        (``AdaptivePacer.on_success``), and shared layers report the refined ``PaceLearned``
        on this client's bus, as :meth:`Pipeline.invoke <telethon_guard.pipeline.Pipeline.
        invoke>` routes their events. Only this rare case sets the route: the lane's common
        success path calls ``succeeded`` directly."""
        assert self.succeeded is not None
        if not self.shared:
            self.succeeded(account, method, now)
            return
        token = EVENT_ROUTE.set(self.events)
        try:
            self.succeeded(account, method, now)
        finally:
            EVENT_ROUTE.reset(token)

    def timers_for(self, loop: asyncio.AbstractEventLoop) -> FifoDeadlines:
        """The attempt timers of the lane's calls on ``loop``."""
        timers = self.timers
        if timers is None or timers.loop is not loop:
            assert self.length is not None
            timers = self.timers = FifoDeadlines(self.pipeline.clock, loop, self.length)
            if not self.by_deadline:  # the attempt timeout: held while no live connection
                timers.extend = self.held
        return timers

    def held(self, sender: Any, start: float, now: float) -> float | None:
        """The attempt timer of a lane call started at clock time ``start`` on ``sender`` is
        due at ``now``: the later clock time it is really due at (its request waited for a
        connection: :func:`~telethon_guard.clock.held_deadline`; capped at the call's
        deadline), or ``None`` (due now; a sender without ``live_age``: always)."""
        live_age = getattr(sender, "live_age", None)
        length = self.length
        if live_age is None or length is None:
            return None
        deadline = self.deadline
        return held_deadline(live_age(), now, start, length,
                             None if deadline is None else start + deadline)

    def call_of(self, method: str, request: Any, account: str, dc_id: int, key: str,
                now: float, peer: str | None = None,
                random_id: int | None = None) -> CallInfo:
        """The :class:`CallInfo` of a lane call whose first attempt (started at ``now``)
        raised: as the layers would have left it at that point (``peer``, ``random_id``: the
        request's, as ``make_call`` describes them with :func:`~telethon_guard._tl.describe`;
        ``idempotent`` from both; deadline and budget filled, breaker key, one attempt, stage
        ``network``)."""
        call = CallInfo(method, request, account, dc_id, peer, random_id, False,
                        is_idempotent(method, random_id))
        deadline = self.deadline
        if deadline is not None:
            call.deadline_at = now + deadline
            call.budget = max(0.0, deadline)
        call.breaker_key = key
        call.stage = "network"
        call.attempt = 1
        return call
