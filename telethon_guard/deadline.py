"""The deadline layer: every call gets an absolute deadline on the guard clock.

``GuardConfig.deadline`` (seconds) fills ``call.deadline_at`` when the client left it ``None``
(a ``deadline_scope`` or the client may set a shorter one); ``call.budget`` becomes the whole
budget in seconds (what the network budget and events are computed from). A call whose deadline
has already passed fails at once with :class:`~telethon_guard.errors.DeadlineExceeded`. Every
later layer re-checks the remaining time and fails fast instead of sleeping into it; the
pipeline reports each ``DeadlineExceeded`` once (:meth:`DeadlineLayer.report`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .call import CallInfo
from .clock import Clock
from .config import GuardConfig
from .errors import DeadlineExceeded
from .events import DeadlineExceededEvent, EventBus


class DeadlineLayer:
    """Pipeline layer: set/verify the call's deadline, then ``call_next`` (synchronously: no
    coroutine frame of its own)."""

    __slots__ = ("_clock", "_deadline", "_events", "_now")

    def __init__(self, config: GuardConfig, clock: Clock, events: EventBus | None) -> None:
        self._deadline = config.deadline
        self._clock = clock
        self._now = clock.now
        self._events = events

    def enter(self, call: CallInfo,
              call_next: Callable[[CallInfo], Awaitable[Any]]) -> Awaitable[Any] | None:
        """The layer's whole work, synchronous (:meth:`Pipeline.invoke`'s fast path calls it):
        fill ``call.deadline_at`` and ``call.budget``; return ``None`` (the call goes on);
        raises ``DeadlineExceeded`` when the deadline has already passed."""
        deadline_at = call.deadline_at
        if deadline_at is None:
            if self._deadline is None:
                return None
            now = self._now()
            deadline_at = call.deadline_at = now + self._deadline
        else:
            now = self._now()
        if call.budget is None:
            call.budget = max(0.0, deadline_at - now)
        if deadline_at <= now:
            call.stage = "start"
            raise DeadlineExceeded(call.method, call.budget)
        return None

    def handle(self, call: CallInfo,
               call_next: Callable[[CallInfo], Awaitable[Any]]) -> Awaitable[Any]:
        """:meth:`enter`, then return ``call_next(call)``."""
        self.enter(call, call_next)
        return call_next(call)

    def report(self, call: CallInfo) -> None:
        """Emit :class:`DeadlineExceededEvent` for ``call`` (its stage and budget)."""
        if self._events is not None:
            self._events.emit(DeadlineExceededEvent(call.method, call.budget or 0.0,
                                                    call.stage, call.account))


__all__ = ["DeadlineLayer"]
