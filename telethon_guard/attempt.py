"""The terminal step of the pipeline: ONE network attempt of a call.

:meth:`Attempt.run` runs ``call.send()`` under the call's remaining deadline and the optional
``attempt_timeout`` (one loop timer for every in-flight attempt: :class:`~telethon_guard.clock.
LoopDeadlines`), classifies what Telethon raised (:mod:`telethon_guard.classify`, the verdict is
left in ``call.verdict`` for the retry layer), tells the breaker (:meth:`CircuitBreaker.record
<telethon_guard.breaker.CircuitBreaker.record>`) and normalises transport errors so no bare
``ConnectionError`` / ``InvalidBufferError`` reaches the caller:

* transport -404 -> :class:`~telethon_guard.errors.AuthKeyInvalidError`; -429 ->
  :class:`~telethon_guard.errors.TransportFloodError`; any other invalid buffer or disconnect
  -> :class:`~telethon_guard.errors.GuardConnectionError` (``from`` the original);
* ``RANDOM_ID_DUPLICATE`` -> :class:`~telethon_guard.errors.AlreadyDelivered`;
* the attempt timeout -> :class:`~telethon_guard.errors.AttemptTimeoutError` (retryable), or
  :class:`~telethon_guard.errors.MayHaveRunError` (final) when the call is not
  ``idempotent``: the request was sent and may have run, so it is not sent again;
* the deadline during the attempt -> :class:`~telethon_guard.errors.DeadlineExceeded`.

The attempt timeout counts from the request's send on a live connection: on a sender that
tells how long its connection has been live (``call.sender.live_age()``, the guarded sender's
:meth:`~telethon_guard._sender_reconnect.ReconnectingSender.live_age`), a timer due while the
request waited for a paced reconnect (queued, or in flight on the broken connection and to be
re-sent) files itself again for ``attempt_timeout`` after the connection it goes out on
opened (:func:`~telethon_guard.clock.held_deadline`, capped at the deadline). So an attempt
timeout (a breaker failure) means no answer within ``attempt_timeout`` on a live connection;
a call whose whole deadline passed while it waited for a reconnect is a deadline timeout,
which counts as before (when the attempt had its network budget): an outage longer than the
deadline still opens the breaker.

Network budget (:func:`~telethon_guard.network_budget.network_budget`): an attempt that would
start with less time than that before the deadline is not sent (``DeadlineExceeded``, the
breaker is told nothing); a deadline timeout counts as a breaker failure only when the attempt
had that budget.

Cancellation: a caller cancelling its task gets ``CancelledError`` unchanged. A
``CancelledError`` from Telethon cancelling the request future on ``disconnect()`` while the
caller's task was NOT cancelled (``Task.cancelling() == 0``, Python 3.11+) is a disconnect:
``GuardConnectionError`` (retryable). (Python 3.10 has no ``cancelling()``: every
``CancelledError`` propagates.)
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from telethon import errors as tl_errors

from .call import CallInfo
from .classify import Action, Verdict, classify
from .clock import Clock, LoopDeadline, LoopDeadlines, MonotonicClock, held_deadline
from .errors import (
    AlreadyDelivered,
    AttemptTimeoutError,
    AuthKeyInvalidError,
    DeadlineExceeded,
    GuardConnectionError,
    GuardError,
    MayHaveRunError,
    TransportFloodError,
)
from .network_budget import network_budget

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

_DISCONNECT = Verdict(Action.DISCONNECT, True)
_TIMEOUT = Verdict(Action.TRANSIENT, True)
_LOOP_TIME = asyncio.BaseEventLoop.time  # time.monotonic(): the MonotonicClock's time
# ``asyncio.current_task(loop)`` without its Python frame (CPython 3.7-3.13 keep the running
# task per loop in this dict, maintained by the C task implementation); else the function.
_CURRENT_TASKS: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = getattr(
    asyncio.tasks, "_current_tasks", None)
if not isinstance(_CURRENT_TASKS, dict):
    _CURRENT_TASKS = None


class _HeldTimer:
    """The attempt timer of a call on a sender that tells how long its connection has been
    live (:meth:`GuardedMTProtoSender.live_age <telethon_guard._sender_reconnect.
    ReconnectingSender.live_age>`): ``attempt_timeout`` counts from the time the request went
    out on a live connection, so when it is due while the request waited for one (a paced
    reconnect), it files itself again for the time it is really due
    (:func:`~telethon_guard.clock.held_deadline`, capped at the call's deadline) instead of
    cancelling the attempt's task. Answers :meth:`stop` like the other timers."""

    __slots__ = ("age", "clock", "deadline_at", "deadlines", "entry", "fired", "start",
                 "task", "timeout")

    def __init__(self, task: asyncio.Task[Any], clock: Clock, deadlines: LoopDeadlines | None,
                 age: Callable[[], float | None], start: float, timeout: float,
                 deadline_at: float | None) -> None:
        self.task = task
        self.clock = clock
        self.deadlines = deadlines  # the loop's (monotonic clock), else the clock's call_at
        self.age = age
        self.start = start
        self.timeout = timeout
        self.deadline_at = deadline_at
        self.fired = False
        self.entry: Any = None

    def arm(self, when: float, now: float) -> None:
        """File the timer for clock time ``when`` (``now``: the clock's time)."""
        deadlines = self.deadlines
        if deadlines is None:
            self.entry = self.clock.call_at(when, self)
            return
        loop = deadlines.loop
        at = when if type(loop).time is _LOOP_TIME else loop.time() + (when - now)
        self.entry = deadlines.add(at, self)

    def __call__(self) -> None:
        now = self.clock.now()
        later = held_deadline(self.age(), now, self.start, self.timeout, self.deadline_at)
        if later is not None:  # the request waited for a connection: not due yet
            self.arm(later, now)
            return
        self.fired = True
        self.task.cancel()

    def stop(self) -> bool:
        """Cancel the timer; ``True`` when it had already fired."""
        self.entry.cancel()
        return self.fired


class _AttemptTimer:
    """The attempt deadline timer's callback on a clock's own timers (``Clock.call_at``, e.g.
    a fake clock): cancels the attempt's task and remembers that it did. On the monotonic
    clock the attempt files ``task.cancel`` in :class:`~telethon_guard.clock.LoopDeadlines`
    instead (no object of its own); both answer :meth:`stop`."""

    __slots__ = ("fired", "handle", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False
        self.handle: Any = None

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()

    def stop(self) -> bool:
        """Cancel the timer; ``True`` when it had already fired."""
        self.handle.cancel()
        return self.fired


def _uncancel(task: asyncio.Task[Any]) -> int:
    uncancel = getattr(task, "uncancel", None)
    return int(uncancel()) if uncancel is not None else 0


def _caller_cancelled(task: asyncio.Task[Any] | None) -> bool:
    if task is None:
        return True
    cancelling = getattr(task, "cancelling", None)
    return True if cancelling is None else bool(cancelling())


_LOOP_DEADLINES: weakref.WeakValueDictionary[int, LoopDeadlines] = weakref.WeakValueDictionary()
"""``id(loop)`` -> that loop's :class:`LoopDeadlines`, shared by every :class:`Attempt` (one
per client) on it: kept alive by the attempts that use it (and by its armed timer), so a
closed loop is not kept alive by this table; an id reused by a new loop gets a new entry."""


class Attempt:
    """The pipeline's terminal step: ``await attempt.run(call)`` makes one network attempt.

    ``clock``: the guard clock (``call.deadline_at`` is on it); ``attempt_timeout``: seconds
    (``None``: only the deadline bounds an attempt); ``breaker``: told the outcome of every
    attempt that reached the network (``None``: nobody is told).
    """

    __slots__ = ("_breaker", "_clock", "_deadlines", "_loop_timers", "_now", "_timeout")

    def __init__(self, clock: Clock, attempt_timeout: float | None,
                 breaker: CircuitBreaker | None) -> None:
        self._clock = clock
        self._now = clock.now
        self._timeout = attempt_timeout
        self._breaker = breaker
        # MonotonicClock: attempt deadlines share one loop timer per loop (LoopDeadlines).
        self._loop_timers = type(clock) is MonotonicClock
        self._deadlines: LoopDeadlines | None = None  # the loop's (_LOOP_DEADLINES)

    async def run(self, call: CallInfo) -> Any:
        """Run ``call.send()`` once; return its answer or raise (see the module docstring)."""
        now = self._now()
        when = call.deadline_at
        by_deadline = True
        timeout = self._timeout
        floor = 0.0
        if when is not None:
            floor = network_budget(call.budget or 0.0, timeout)
            if when - now < floor:
                # Too little time left for an answer (after a limiter, flood or backoff wait):
                # fail now, send nothing, tell the breaker nothing.
                raise DeadlineExceeded(call.method, call.budget or 0.0)
        if timeout is not None and (when is None or now + timeout < when):
            when = now + timeout
            by_deadline = False
        call.stage = "network"
        if when is not None and when <= now:
            raise DeadlineExceeded(call.method, call.budget or 0.0)
        call.attempt += 1
        # The attempt's timer: a LoopDeadline (monotonic clock) or an _AttemptTimer; either
        # answers stop() -> whether it fired (then it cancelled ``task``).
        timer: LoopDeadline | _AttemptTimer | _HeldTimer | None = None
        task: asyncio.Task[Any] | None = None
        if when is not None:
            loop = asyncio.get_running_loop()
            task = call.task
            if task is None:
                task = (_CURRENT_TASKS.get(loop) if _CURRENT_TASKS is not None
                        else asyncio.current_task(loop))
            live_age = (None if by_deadline or timeout is None
                        else getattr(call.sender, "live_age", None))
            if task is not None and live_age is not None:
                # attempt_timeout counts from the send on a live connection: held while the
                # sender reconnects (_HeldTimer), capped at the deadline.
                deadlines = None
                if self._loop_timers:
                    deadlines = self._deadlines
                    if deadlines is None or deadlines.loop is not loop:
                        deadlines = self._deadlines_for(loop)
                assert timeout is not None
                held = _HeldTimer(task, self._clock, deadlines, live_age, now, timeout,
                                  call.deadline_at)
                held.arm(when, now)
                timer = held
            elif task is not None:
                if self._loop_timers:  # one loop timer for every attempt (LoopDeadlines)
                    deadlines = self._deadlines
                    if deadlines is None or deadlines.loop is not loop:
                        deadlines = self._deadlines_for(loop)
                    at = when
                    if type(loop).time is not _LOOP_TIME:  # uvloop...: its own clock
                        at = loop.time() + (when - now)
                    timer = deadlines.add(at, task.cancel)
                else:
                    timer = _AttemptTimer(task)
                    timer.handle = self._clock.call_at(when, timer)
        send = call.send
        assert send is not None
        try:
            result = await send()
        except BaseException as exc:
            fired = timer is not None and timer.stop()
            await self.failed(call, exc, fired, task, when, now, by_deadline, floor)
            raise  # failed() always raises
        if timer is not None and task is not None and timer.stop():
            _uncancel(task)
        breaker = self._breaker
        if breaker is not None:
            pending = breaker.record(call, False)
            if pending is not None:
                await pending
        return result

    async def failed(self, call: CallInfo, exc: BaseException, fired: bool,
                     task: asyncio.Task[Any] | None, when: float | None, now: float,
                     by_deadline: bool, floor: float) -> NoReturn:
        """The attempt of ``call`` (started at clock time ``now``, its timer due at ``when``:
        the deadline when ``by_deadline``, else the attempt timeout) raised ``exc``; ``fired``:
        its timer had already fired (and cancelled ``task``). Raise what :meth:`run` raises
        (module docstring): the breaker told, the verdict left in ``call.verdict``.
        :meth:`run` and the straight lane (:mod:`telethon_guard.lane`) end here."""
        if isinstance(exc, asyncio.CancelledError):
            if fired and task is not None:
                if _uncancel(task) > 0:
                    raise exc  # the caller cancelled as well: propagate unchanged
                assert when is not None
                deadline_at = call.deadline_at
                if (not by_deadline and deadline_at is not None
                        and deadline_at - self._now() <= 0.001):
                    by_deadline = True  # a held attempt timer ran into the deadline
                    when = deadline_at
                if not by_deadline or when - now >= floor:
                    # A timeout counts for the breaker, a deadline timeout only when the
                    # attempt had its network budget.
                    await self._record(call, True)
                call.verdict = None  # final unless retryable below
                timeout = self._timeout
                if by_deadline:  # the budget is spent: nothing to retry
                    raise DeadlineExceeded(call.method, call.budget or 0.0) from None
                if not call.idempotent:  # sent, may have run: never sent again
                    raise MayHaveRunError(call.method, timeout or 0.0) from None
                call.verdict = _TIMEOUT
                raise AttemptTimeoutError(call.method, timeout or 0.0) from None
            if _caller_cancelled(task if task is not None else asyncio.current_task()):
                raise exc
            call.verdict = _DISCONNECT
            await self._record(call, True)
            raise GuardConnectionError(f"{call.method}: connection closed while "
                                       "waiting for the answer") from exc
        if isinstance(exc, Exception):
            if fired and task is not None:
                _uncancel(task)  # send() swallowed our cancel: raised another
            verdict = classify(exc)
            call.verdict = verdict
            if verdict.breaker_failure or not isinstance(exc, GuardError):
                # Guard errors of a nested call (CircuitOpenError, DeadlineExceeded, a local
                # flood block) say nothing about this connection: not recorded.
                await self._record(call, verdict.breaker_failure)
            _raise_normalized(call, exc, verdict)
        raise exc  # KeyboardInterrupt, SystemExit, GeneratorExit: the timer was stopped

    def _deadlines_for(self, loop: asyncio.AbstractEventLoop) -> LoopDeadlines:
        deadlines = _LOOP_DEADLINES.get(id(loop))
        if deadlines is None or deadlines.loop is not loop:  # none yet, or an id reused
            deadlines = _LOOP_DEADLINES[id(loop)] = LoopDeadlines(loop)
        self._deadlines = deadlines
        return deadlines

    async def _record(self, call: CallInfo, failure: bool) -> None:
        breaker = self._breaker
        if breaker is not None:
            pending = breaker.record(call, failure)
            if pending is not None:
                await pending


def _raise_normalized(call: CallInfo, exc: Exception, verdict: Verdict) -> None:
    """Replace transport-level errors by the guard's typed ones (``from`` the original)."""
    if verdict.action is Action.DELIVERED:
        if isinstance(exc, AlreadyDelivered):
            return
        raise AlreadyDelivered(call.request, call.random_id, call.attempt) from exc
    if isinstance(exc, tl_errors.InvalidBufferError):
        if exc.code == 404:
            raise AuthKeyInvalidError(call.dc_id, -404) from exc
        if exc.code == 429:
            raise TransportFloodError(-429, None) from exc
        raise GuardConnectionError(f"{call.method}: invalid transport buffer") from exc
    if verdict.action is Action.DISCONNECT and not isinstance(exc, GuardError):
        raise GuardConnectionError(f"{call.method}: {type(exc).__name__}: {exc}") from exc


__all__ = ["Attempt"]
