"""The guard clock: monotonic seconds, sleeping and timers, replaceable by a fake in tests.

All guard times (``CallInfo.deadline_at``, flood deadlines, limiter slots) are absolute seconds
on this clock. :class:`MonotonicClock` is ``time.monotonic()`` (the same clock asyncio's default
loop uses). :class:`FakeClock` is virtual time for unit tests: time only moves when every task is
blocked on the fake clock (auto-advance), or when a test calls :meth:`FakeClock.advance`.
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
                    ready = getattr(loop, "_ready", None)
                    if ready is not None and len(ready) > len(drivers) - 1:
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


__all__ = ["Clock", "FakeClock", "LoopDeadline", "LoopDeadlines", "MonotonicClock",
           "TimerHandle"]
