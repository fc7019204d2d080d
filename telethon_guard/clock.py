"""The guard clock: monotonic seconds, sleeping and timers.

All guard times (``CallInfo.deadline_at``, flood deadlines, limiter slots) are absolute seconds
on this clock. :class:`MonotonicClock` is ``time.monotonic()`` (the same clock asyncio's default
loop uses); :class:`LoopDeadlines` serves many deadlines with one loop timer. The virtual clock
for tests, ``FakeClock``, lives in :mod:`telethon_guard.fakeclock` (a test tool, not part of
the request path; ``telethon_guard.clock.FakeClock`` still finds it).
"""

from __future__ import annotations

import asyncio
import collections
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

    :meth:`add` files ``(when, callback)`` (``when``: ``loop.time()`` seconds) and (re)arms the
    loop timer when it is the earliest; the timer runs every due callback (``when <=
    loop.time()``, or up to the ``when`` it was armed for, as the loop's own timers do) and
    re-arms for the next one. Deadlines of one attempt timeout arrive in order, so an entry
    not earlier than the last one filed is appended to a FIFO (O(1)); an earlier one (a
    shorter call deadline) goes to a heap. :meth:`LoopDeadline.cancel` only marks the entry;
    cancelled entries are dropped when they reach the front or, once they are the majority of
    more than 64 entries, in one sweep (asyncio's rule for its own timer heap).
    """

    __slots__ = ("__weakref__", "_armed", "_armed_at", "_dead", "_fifo", "_heap", "_last",
                 "_seq", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._fifo: collections.deque[LoopDeadline] = collections.deque()
        self._last = float("-inf")  # ``when`` of the FIFO's last entry
        self._heap: list[tuple[float, int, LoopDeadline]] = []
        self._seq = itertools.count()
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._dead = 0

    def add(self, when: float, callback: Callable[[], Any]) -> LoopDeadline:
        """Run ``callback()`` at loop time ``when``; returns the cancellable entry."""
        entry = LoopDeadline(self, callback, when)
        if when >= self._last:
            self._fifo.append(entry)
            self._last = when
        else:
            heapq.heappush(self._heap, (when, next(self._seq), entry))
        if when < self._armed_at:
            if self._armed is not None:
                self._armed.cancel()
            self._armed_at = when
            self._armed = self.loop.call_at(when, self._fire)
        return entry

    def __len__(self) -> int:
        """Entries filed, cancelled ones not swept yet included."""
        return len(self._fifo) + len(self._heap)

    def _discard(self) -> None:
        self._dead += 1
        if self._dead > 64 and self._dead * 2 > len(self):
            fifo = self._fifo
            live = [e for e in fifo if e.callback is not None]
            fifo.clear()
            fifo.extend(live)
            if not fifo:
                self._last = float("-inf")
            heap = self._heap
            heap[:] = [e for e in heap if e[2].callback is not None]
            heapq.heapify(heap)
            self._dead = 0
            if not heap and not fifo and self._armed is not None:
                self._armed.cancel()
                self._armed = None
                self._armed_at = float("inf")

    def _fire(self) -> None:
        limit = max(self.loop.time(), self._armed_at)
        self._armed = None
        self._armed_at = float("inf")
        due: list[Callable[[], Any]] = []
        fifo = self._fifo
        heap = self._heap
        inf = float("inf")
        while True:  # the due entries of both, earliest first (a late loop: several due)
            f = fifo[0].when if fifo else inf
            h = heap[0][0] if heap else inf
            if f <= h:
                if f > limit:
                    break
                self._take(fifo.popleft(), due)
            elif h <= limit:
                self._take(heapq.heappop(heap)[2], due)
            else:
                break
        while fifo and fifo[0].callback is None:  # cancelled ones at the front
            fifo.popleft()
            self._dead -= 1
        if not fifo:
            self._last = float("-inf")
        nxt = min(fifo[0].when if fifo else float("inf"), heap[0][0] if heap else float("inf"))
        if nxt != float("inf"):
            self._armed_at = nxt
            self._armed = self.loop.call_at(nxt, self._fire)
        for callback in due:
            try:
                callback()
            except Exception as exc:  # as the loop does for a failing timer callback
                self.loop.call_exception_handler({
                    "message": "Exception in a LoopDeadlines callback",
                    "exception": exc,
                })

    def _take(self, entry: LoopDeadline, due: list[Callable[[], Any]]) -> None:
        callback = entry.callback
        if callback is None:
            self._dead -= 1
            return
        entry.callback = None
        due.append(callback)


class LoopDeadline:
    """One entry of :class:`LoopDeadlines` (``cancel()`` before it is due: never runs;
    ``when``: its loop time)."""

    __slots__ = ("_owner", "callback", "when")

    def __init__(self, owner: LoopDeadlines, callback: Callable[[], Any], when: float) -> None:
        self._owner = owner
        self.callback: Callable[[], Any] | None = callback
        self.when = when

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self._owner._discard()

    def stop(self) -> bool:
        """Cancel the entry; ``True`` when its callback had already run (or it had already
        been cancelled), i.e. when nothing was left to cancel."""
        if self.callback is None:
            return True
        self.callback = None
        self._owner._discard()
        return False


def held_deadline(age: float | None, now: float, start: float, timeout: float,
                  deadline_at: float | None) -> float | None:
    """When an attempt timer (``timeout`` seconds, the attempt started at clock time
    ``start``) that is due at ``now`` is really due, given how long its sender's connection
    has been live: ``age`` seconds (``None``: no live connection now, a paced reconnect runs,
    so the request waits to be sent or re-sent; ``math.inf``: no such wait to account for).

    ``attempt_timeout`` counts from the time the request went out on a live connection, so
    time spent waiting for one is not an attempt timing out: the request went out no earlier
    than ``max(start, now - age)``; with no live connection the timer looks again a full
    ``timeout`` later. Capped at ``deadline_at`` (clock time; ``None``: no deadline). Returns
    the later clock time, or ``None`` when the timer is due now (within 1 ms)."""
    if age is None:
        due = now + timeout
    else:
        due = max(start, now - age) + timeout
    if deadline_at is not None and due > deadline_at:
        due = deadline_at
    return due if due - now > 0.001 else None


class FifoDeadlines:
    """Deadlines of ONE length (``length``, seconds), filed in the order they were taken,
    served by one timer on a :class:`Clock` (the straight lane's attempt timers,
    :mod:`telethon_guard.lane`).

    ``pending`` maps the task to cancel at the deadline to the clock time its deadline was
    taken from (``started``; the deadline is ``started + length``). A task waits for one
    attempt at a time, so it is filed at most once. Every deadline is ``started + the same
    length``, so insertion order is deadline order and filing is one dict store of a value
    the caller already holds: ``pending[task] = now``, then :meth:`arm` with ``now +
    length`` when :attr:`armed` is ``None`` (an armed timer is never later than the earliest
    entry). Stopping is one dict pop: ``pending.pop(task, None) is None`` means the timer
    already fired (and cancelled the task). No object per attempt, no sweep. The timer fires
    at the front entry's deadline, cancels every task that is due and re-arms for the next
    entry (about once per deadline length while calls flow).

    :attr:`extend` (``None``: never; the lane sets it when the length is the attempt
    timeout): for a due task filed in :attr:`holders` too (``holders[task] = (sender,
    started)``, by the caller, who pops it with the task), ``extend(sender, started, now)``
    (``started``: the attempt's real start) returns a later
    clock time to wait until instead of cancelling (the attempt's request waited for a
    connection: :func:`held_deadline`), or ``None`` (cancel now). A task put back that way
    is filed again at the end with ``started = later - length``, possibly before the
    deadlines of entries ahead of it: the timer then scans every entry until the table
    empties.
    """

    __slots__ = ("_armed_at", "_unordered", "armed", "clock", "extend", "holders", "length",
                 "loop", "pending")

    def __init__(self, clock: Clock, loop: asyncio.AbstractEventLoop, length: float) -> None:
        self.clock = clock
        self.loop = loop
        self.length = length
        self.pending: dict[asyncio.Task[Any], float] = {}
        self.armed: TimerHandle | None = None
        self._armed_at = float("-inf")
        self.extend: Callable[[Any, float, float], float | None] | None = None
        self.holders: dict[asyncio.Task[Any], tuple[Any, float]] = {}
        self._unordered = False  # a task was filed again out of deadline order

    def arm(self, when: float) -> None:
        """Arm the timer for clock time ``when`` (nothing is armed)."""
        if not self.pending or len(self.pending) == 1:
            self._unordered = False
        self._armed_at = when
        self.armed = self.clock.call_at(when, self._fire)

    def _fire(self) -> None:
        self.armed = None
        now = self.clock.now()
        limit = max(now, self._armed_at)  # a loop timer may run a bit early
        pending = self.pending
        length = self.length
        due: list[asyncio.Task[Any]] = []
        nxt: float | None = None
        unordered = self._unordered
        for task, started in pending.items():
            when = started + length
            if when > limit:
                if nxt is None or when < nxt:
                    nxt = when
                if not unordered:
                    break
                continue
            due.append(task)
        extend = self.extend
        holders = self.holders
        for task in due:
            started = pending.pop(task)
            if extend is not None:
                holder = holders.get(task)
                if holder is not None:
                    later = extend(holder[0], holder[1], now)
                    if later is not None:  # its request waited for a connection: not due
                        pending[task] = later - length
                        self._unordered = True
                        if nxt is None or later < nxt:
                            nxt = later
                        continue
                    del holders[task]
            try:
                task.cancel()
            except Exception as exc:  # as the loop does for a failing timer callback
                self.loop.call_exception_handler({
                    "message": "Exception in a FifoDeadlines callback", "exception": exc})
        if nxt is not None:
            self.arm(nxt)

    def __len__(self) -> int:
        return len(self.pending)


def __getattr__(name: str) -> Any:
    if name == "FakeClock":  # moved to telethon_guard.fakeclock (a test tool)
        from .fakeclock import FakeClock

        return FakeClock
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Clock", "FifoDeadlines", "LoopDeadline", "LoopDeadlines", "MonotonicClock",
           "TimerHandle", "held_deadline"]
