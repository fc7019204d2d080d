"""The guard clock: monotonic seconds, sleeping and timers.

All guard times (``CallInfo.deadline_at``, flood deadlines, limiter slots) are absolute seconds
on this clock. :class:`MonotonicClock` is ``time.monotonic()`` (the same clock asyncio's default
loop uses); :class:`LoopDeadlines` serves many deadlines with one loop timer. The virtual clock
for tests, ``FakeClock``, lives in :mod:`telethon_guard.fakeclock` (a test tool, not part of
the request path; ``telethon_guard.clock.FakeClock`` still finds it).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TimerHandle(Protocol):
    """A scheduled callback that can be cancelled."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """What the layers need from time: ``now()`` in monotonic seconds, ``sleep`` and timers."""

    def now(self) -> float:
        """Current time, monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (<= 0: just yield)."""
        ...

    def call_at(self, when: float, callback: Callable[[], Any]) -> TimerHandle:
        """Run ``callback()`` on the event loop at clock time ``when``."""
        ...


class MonotonicClock:
    """The production clock: ``time.monotonic()`` and the running asyncio loop's timers."""

    __slots__ = ()

    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds if seconds > 0 else 0)

    def call_at(self, when: float, callback: Callable[[], Any]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.monotonic()), callback)


class LoopDeadlines:
    """Many deadlines on one asyncio loop served by ONE loop timer (for the per-attempt
    deadline of every in-flight call; a ``TimerHandle`` per attempt costs ~3 us).

    :meth:`add` puts ``(when, callback)`` in a heap (``when``: ``loop.time()`` seconds) and
    (re)arms the loop timer when it is the earliest; the timer runs every due callback
    (``when <= loop.time()``, or up to the ``when`` it was armed for, as the loop's own timers
    do) and re-arms for the next one. :meth:`LoopDeadline.cancel` only marks the entry; the
    heap drops cancelled entries when they reach its top or, once they are the majority of
    more than 64 entries, in one sweep (asyncio's rule for its own timer heap).
    """

    __slots__ = ("_armed", "_armed_at", "_dead", "_heap", "_seq", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, LoopDeadline]] = []
        self._seq = itertools.count()
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._dead = 0

    def add(self, when: float, callback: Callable[[], Any]) -> LoopDeadline:
        """Run ``callback()`` at loop time ``when``; returns the cancellable entry."""
        entry = LoopDeadline(self, callback)
        heapq.heappush(self._heap, (when, next(self._seq), entry))
        if when < self._armed_at:
            if self._armed is not None:
                self._armed.cancel()
            self._armed_at = when
            self._armed = self.loop.call_at(when, self._fire)
        return entry

    def __len__(self) -> int:
        """Entries in the heap, cancelled ones not swept yet included."""
        return len(self._heap)

    def _discard(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead > 64 and self._dead * 2 > len(heap):
            heap[:] = [e for e in heap if e[2].callback is not None]
            heapq.heapify(heap)
            self._dead = 0
            if not heap and self._armed is not None:
                self._armed.cancel()
                self._armed = None
                self._armed_at = float("inf")

    def _fire(self) -> None:
        limit = max(self.loop.time(), self._armed_at)
        self._armed = None
        self._armed_at = float("inf")
        heap = self._heap
        due: list[Callable[[], Any]] = []
        while heap and heap[0][0] <= limit:
            entry = heapq.heappop(heap)[2]
            callback = entry.callback
            if callback is None:
                self._dead -= 1
                continue
            entry.callback = None
            due.append(callback)
        if heap:
            when = heap[0][0]
            self._armed_at = when
            self._armed = self.loop.call_at(when, self._fire)
        for callback in due:
            try:
                callback()
            except Exception as exc:  # as the loop does for a failing timer callback
                self.loop.call_exception_handler({
                    "message": "Exception in a LoopDeadlines callback",
                    "exception": exc,
                })


class LoopDeadline:
    """One entry of :class:`LoopDeadlines` (``cancel()`` before it is due: never runs)."""

    __slots__ = ("_owner", "callback")

    def __init__(self, owner: LoopDeadlines, callback: Callable[[], Any]) -> None:
        self._owner = owner
        self.callback: Callable[[], Any] | None = callback

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self._owner._discard()


def __getattr__(name: str) -> Any:
    if name == "FakeClock":  # moved to telethon_guard.fakeclock (a test tool)
        from .fakeclock import FakeClock

        return FakeClock
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Clock", "LoopDeadline", "LoopDeadlines", "MonotonicClock", "TimerHandle"]
