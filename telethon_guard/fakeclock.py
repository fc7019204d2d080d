"""Virtual monotonic time for tests: :class:`FakeClock` implements the guard's
:class:`~telethon_guard.clock.Clock` protocol on a clock that only moves when told to
(:meth:`FakeClock.advance`) or when every task waits on it (auto-advance).

A test tool: nothing in the request path imports it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any


def ready_callback_count(loop: asyncio.AbstractEventLoop) -> int | None:
    """How many callbacks ``loop`` will run on its next iteration, or ``None`` if unknown.

    Auto-advance needs "every task waits": asyncio has no public signal for it. This is the one
    place that asks, so the private read stays named and replaceable:

    * a loop may answer through a public method ``ready_callback_count() -> int`` (the protocol
      a test event loop can implement);
    * otherwise asyncio's base loop keeps its ready queue in the private ``_ready`` deque
      (CPython 3.8 to 3.13: ``BaseEventLoop._ready``); its length is read, never modified;
    * a loop with neither (uvloop, another implementation) returns ``None``: the driver then
      only steps (a few ``sleep(0)`` rounds with live timers before it jumps), which is slower
      to notice idleness but still correct for tasks that wait on this clock.

    (An earlier attempt walked every task's await chain instead: it made the pacing tests 5 to
    20 times slower.)
    """
    ask = getattr(loop, "ready_callback_count", None)
    if callable(ask):
        return int(ask())
    ready = getattr(loop, "_ready", None)  # asyncio.BaseEventLoop private: see the docstring
    return len(ready) if ready is not None else None


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Virtual monotonic time for tests.

    ``auto_advance=True`` (default): when every task of the loop is idle and a fake timer is
    pending, time jumps to the earliest timer (like trio's autojump clock), so a test of a
    60 s flood wait runs in milliseconds. Only tasks blocked on this clock (or on futures
    resolved by it) count as idle; do not mix with real sleeps. ``advance(dt)`` moves time by
    hand and fires due timers.
    """

    def __init__(self, start: float = 1000.0, *, auto_advance: bool = True) -> None:
        self._now = float(start)
        self._heap: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()
        self._auto = auto_advance
        self._driver: asyncio.Task[None] | None = None
        self.sleeps: list[float] = []  # every sleep requested (seconds), for assertions

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], Any]) -> _FakeTimer:
        t = _FakeTimer(when, callback)
        heapq.heappush(self._heap, (when, next(self._seq), t))
        if self._auto:
            self._ensure_driver()
        return t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_at(self._now + seconds, wake)
        try:
            await fut
        finally:
            timer.cancel()

    def _fire_due(self) -> None:
        while self._heap and self._heap[0][0] <= self._now:
            _, _, t = heapq.heappop(self._heap)
            if not t.cancelled:
                t.cancelled = True
                t.callback()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and run the callbacks of due timers."""
        target = self._now + seconds
        while self._heap and self._heap[0][0] <= target:
            when, _, t = heapq.heappop(self._heap)
            if t.cancelled:
                continue
            self._now = max(self._now, when)
            t.cancelled = True
            t.callback()
        self._now = max(self._now, target)

    @property
    def pending(self) -> int:
        """Number of live timers."""
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def _ensure_driver(self) -> None:
        if self._driver is None or self._driver.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._driver = loop.create_task(self._drive())

    def _has_live_timer(self) -> bool:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return bool(heap)

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        drivers = _DRIVERS
        drivers.add(self)
        try:
            while True:
                # Let every runnable task run until the loop is idle. Other fake clocks'
                # drivers are always runnable: their handles do not count as work.
                idle_rounds = 0
                while idle_rounds < 3:
                    await asyncio.sleep(0)
                    if not self._has_live_timer():
                        return
                    ready = ready_callback_count(loop)
                    if ready is not None and ready > len(drivers) - 1:
                        idle_rounds = 0
                    else:
                        idle_rounds += 1
                when = self._heap[0][0]
                if when > self._now:
                    self._now = when
                self._fire_due()
        finally:
            drivers.discard(self)


_DRIVERS: set[FakeClock] = set()


__all__ = ["FakeClock", "ready_callback_count"]
