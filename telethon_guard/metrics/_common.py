"""What both exporters share: label rules, bucket bounds, the breaker-state encoding."""

from __future__ import annotations

import itertools
from typing import Any

BREAKER_STATE_VALUES: dict[str, int] = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
"""``telethon_guard_breaker_state`` gauge values: 0 closed, 1 half-open, 2 open."""

FLOOD_WAIT_BUCKETS: tuple[float, ...] = (
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
"""Histogram bounds (seconds) of ``telethon_guard_flood_wait_seconds``: Telegram's FLOOD_WAITs
run from 1 s to about a day (e.g. ``contacts.resolveUsername`` ~48000 s)."""

REQUEST_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Histogram bounds (seconds) of ``telethon_guard_request_duration_seconds``."""

MAX_METHODS = 1024
"""Bound of distinct ``method`` label values (TL has about 700 methods); beyond: ``"other"``."""

LAG_WINDOW = 100
"""Loop-lag gauge: the max of the last ``LAG_WINDOW`` samples of the monitor (1 s at 10 ms)."""


class MethodLabels:
    """Keeps the ``method`` label bounded: TL method names pass (at most ``MAX_METHODS``
    distinct ones), empty names become ``"unknown"``, the rest ``"other"``."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, method: str) -> str:
        if not method:
            return "unknown"
        if method in self._seen:
            return method
        if len(self._seen) >= MAX_METHODS:
            return "other"
        self._seen.add(method)
        return method


def recent_lag(monitor: Any) -> float:
    """Max lag (seconds) among the monitor's last :data:`LAG_WINDOW` samples (0.0 if none).

    ``monitor`` is a :class:`~telethon_guard.loop.LoopLagMonitor` (its ``recent_max``) or
    anything with a ``samples`` iterable of seconds, oldest first."""
    recent_max = getattr(monitor, "recent_max", None)
    if callable(recent_max):
        return float(recent_max(LAG_WINDOW))
    samples = list(getattr(monitor, "samples", ()))
    return max(itertools.islice(reversed(samples), LAG_WINDOW), default=0.0)


def attach_to(client_or_guard: Any, callback: Any) -> Any:
    """Subscribe ``callback`` to the event bus of a guarded client or ``client.guard``;
    returns the unsubscribe function. Raises ``TypeError`` for anything else."""
    state = getattr(client_or_guard, "guard", client_or_guard)
    events = getattr(state, "events", None)
    subscribe = getattr(events, "subscribe", None)
    if not callable(subscribe):
        raise TypeError(f"{client_or_guard!r} is not a guarded client or its guard")
    return subscribe(callback)
