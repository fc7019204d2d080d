"""The guard pipeline every MTProto request passes through.

::

    deadline -> circuit breaker -> flood ledger -> rate limiter -> retry -> attempt (Telethon send)

The layers are listed once, in :attr:`Pipeline.layers`; each is a small object with one job and
one method ``handle(ctx, call_next)`` (like gotd's middlewares / mtcute's network middlewares).
The terminal step, :meth:`Pipeline._attempts`, makes the network attempts: it runs ``send()``
under the remaining deadline and the optional ``attempt_timeout``, classifies what Telethon
raised (:mod:`telethon_guard.classify`), tells the breaker, and normalizes transport errors so no
bare ``ConnectionError`` / ``InvalidBufferError`` reaches the caller.

Cancellation: a caller cancelling its task gets ``CancelledError`` unchanged and everything the
call held is released (limiter slot given back, breaker probe freed). A ``CancelledError`` that
comes from Telethon cancelling the request future on ``disconnect()`` while the caller's task was
NOT cancelled (``Task.cancelling() == 0``, Python 3.11+) is a disconnect: retried within the
budget, else raised as :class:`~telethon_guard.errors.GuardConnectionError` from it. (Python
3.10 has no ``cancelling()``: every ``CancelledError`` propagates.)

Re-entrant: nothing is locked across ``send()`` except the breaker's HALF_OPEN probe, which is
re-entrant per task, so calls nested on one task (entity resolution, DC switch) never deadlock.

Network budget (:func:`~telethon_guard.clock.network_budget`: ``min(attempt_timeout or 1 s,
10 % of the call's deadline budget)``): an attempt that would start with less time than that
before the deadline (after a limiter, flood or backoff wait) is not sent: the call fails with
``DeadlineExceeded`` at once and the breaker is told nothing; the limiter refuses such a slot
up front and the retry policy stops (raising the real error) instead of backing off into it. A
deadline timeout during an attempt counts as a breaker failure only when the attempt had at
least that budget.

Fast path: when nothing is blocked in the local flood table and the limiter's slot is free now
(:meth:`FloodLedger.check_now`, :meth:`RateLimitLayer.reserve_now`), :meth:`Pipeline.invoke`
runs the attempts inline; otherwise the ledger and limiter layers' own code waits.

``observe_only``: the limiter, the flood-ledger pre-check and the breaker's fail-fast only
report (``ObservedDelay`` events) instead of delaying or failing. Retry of transient errors,
waiting out server FLOOD_WAITs that fit, and the deadline stay active: they replace Telethon's own
sleeping/retrying, which is switched off underneath.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from telethon import errors as tl_errors

from .breaker import CircuitBreaker
from .call import CallInfo
from .classify import Action, Verdict, classify
from .clock import Clock, LoopDeadlines, MonotonicClock, network_budget
from .config import GuardConfig
from .errors import (
    AlreadyDelivered,
    AttemptTimeoutError,
    AuthKeyInvalidError,
    DeadlineExceeded,
    GuardConnectionError,
    GuardError,
    TransportFloodError,
)
from .events import (
    DeadlineExceededEvent,
    EventBus,
    RequestFinished,
    redact_peer,
    request_outcome,
)
from .flood import FloodLedger
from .limiter import LimitKeys, RateLimiter, RateLimitLayer
from .retry import RetryPolicy
from .storage import GuardStorage, open_storage

T = TypeVar("T")

_DISCONNECT = Verdict(Action.DISCONNECT, True)
_TIMEOUT = Verdict(Action.TRANSIENT, True)


class CallContext:
    """Per-call state shared by the layers of one :meth:`Pipeline.invoke`.

    ``budget``: the call's total deadline in seconds (``None``: no deadline); ``stage``: where
    the call is (``"limiter"``, ``"flood"``, ``"backoff"``, ``"network"``) for events;
    ``verdict``: classification of the last attempt's error; ``probe``: this call holds the
    HALF_OPEN probe and no verdict was recorded yet; ``attempts``: network attempts made;
    ``task``: the caller's task once the breaker layer looked it up (``None`` before).
    """

    __slots__ = ("attempts", "breaker_key", "budget", "call", "probe", "send", "stage",
                 "task", "verdict")

    def __init__(self, call: CallInfo, send: Callable[[], Awaitable[Any]],
                 budget: float | None) -> None:
        self.call = call
        self.send = send
        self.budget = budget
        self.attempts = 0
        self.verdict: Verdict | None = None
        self.probe = False
        self.breaker_key: str | None = None
        self.stage = "start"
        self.task: asyncio.Task[Any] | None = None


Next = Callable[[CallContext], Awaitable[Any]]


class Layer(Protocol):
    """One pipeline layer: ``await handle(ctx, call_next)`` runs the rest of the pipeline."""

    async def handle(self, ctx: CallContext, call_next: Next) -> Any: ...


class DeadlineLayer:
    """Fills ``call.deadline_at`` from ``GuardConfig.deadline`` when the client left it ``None``,
    fails at once when it has already passed, and reports :class:`DeadlineExceededEvent`."""

    __slots__ = ("_clock", "_deadline", "_events")

    def __init__(self, config: GuardConfig, clock: Clock, events: EventBus | None) -> None:
        self._deadline = config.deadline
        self._clock = clock
        self._events = events

    async def handle(self, ctx: CallContext, call_next: Next) -> Any:
        """Set/verify the call's deadline, run ``call_next``; raises ``DeadlineExceeded``."""
        try:
            self.enter(ctx)
            return await call_next(ctx)
        except DeadlineExceeded:
            self._report(ctx)
            raise

    def enter(self, ctx: CallContext) -> None:
        """The synchronous part of :meth:`handle` before ``call_next``: fill ``deadline_at``
        and ``ctx.budget``; raises ``DeadlineExceeded`` (not reported yet) when it passed."""
        call = ctx.call
        deadline_at = call.deadline_at
        if deadline_at is None:
            if self._deadline is None:
                return
            now = self._clock.now()
            deadline_at = call.deadline_at = now + self._deadline
        else:
            now = self._clock.now()
        if ctx.budget is None:
            ctx.budget = max(0.0, deadline_at - now)
        if deadline_at <= now:
            ctx.stage = "start"
            raise DeadlineExceeded(call.method, ctx.budget)

    def report(self, ctx: CallContext) -> None:
        """Emit :class:`DeadlineExceededEvent` for ``ctx`` (its stage and budget)."""
        self._report(ctx)

    def _report(self, ctx: CallContext) -> None:
        if self._events is not None:
            self._events.emit(DeadlineExceededEvent(ctx.call.method, ctx.budget or 0.0,
                                                    ctx.stage, ctx.call.account))


class _AttemptTimer:
    """The per-attempt deadline timer's callback: cancels the attempt's task and remembers
    that it did (``fired``), so the attempt tells its own timeout from a caller's cancel."""

    __slots__ = ("fired", "handle", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False
        self.handle: Any = None

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


_LOOP_TIME = asyncio.BaseEventLoop.time  # time.monotonic(): the MonotonicClock's time


def _uncancel(task: asyncio.Task[Any]) -> int:
    uncancel = getattr(task, "uncancel", None)
    return int(uncancel()) if uncancel is not None else 0


def _caller_cancelled(task: asyncio.Task[Any] | None) -> bool:
    if task is None:
        return True
    cancelling = getattr(task, "cancelling", None)
    return True if cancelling is None else bool(cancelling())


class Pipeline:
    """Composes the guard layers for one client.

    ``config``: the :class:`GuardConfig`. ``storage``: a
    :class:`~telethon_guard.storage.GuardStorage` (``None``: built from ``config.storage``,
    in memory by default). ``events``: the :class:`EventBus` (``None``: one delivering to
    ``config.on_event`` and the ``telethon_guard`` logger). ``clock``: the guard clock
    (``None``: :class:`MonotonicClock`, i.e. ``time.monotonic``; ``call.deadline_at`` must be
    on this clock).
    """

    def __init__(self, config: GuardConfig, storage: GuardStorage | None = None,
                 events: EventBus | None = None, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.events: EventBus = (events if events is not None
                                 else EventBus(config.on_event, redact=not config.log_peer_ids))
        self.storage: GuardStorage = (
            storage if storage is not None
            else open_storage(config.storage, clock=self.clock,
                              max_peer_keys=config.max_peer_keys,
                              on_unavailable=getattr(config, "storage_fallback", None),
                              timeout=getattr(config, "storage_timeout", None))
        )
        bind_events = getattr(self.storage, "bind_events", None)
        if callable(bind_events):  # shared storage reports StorageFallback on this bus
            bind_events(self.events)
        redact = not config.log_peer_ids
        self.deadline = DeadlineLayer(config, self.clock, self.events)
        self.breaker = CircuitBreaker(config, self.storage, self.clock, self.events)
        self.ledger = FloodLedger(config, self.storage, self.clock, self.events)
        self.limiter = RateLimiter(self.storage, self.clock, self.events,
                                   observe=config.observe_only, redact=redact)
        pacer = self.ledger.pacer
        self.limit_keys = LimitKeys(config, pacer.window if pacer is not None else None)
        self.retry = RetryPolicy(config, self.clock, self.events, breaker=self.breaker)
        self.rate_layer = RateLimitLayer(self.limiter, self.limit_keys)
        self.layers: tuple[Layer, ...] = (
            self.deadline,
            self.breaker,
            self.ledger,
            self.rate_layer,
            self.retry,
        )
        chain: Next = self._attempt
        for layer in reversed(self.layers):
            chain = functools.partial(layer.handle, call_next=chain)
        self._chain = chain  # the layers composed one by one (same behaviour as invoke)
        # invoke()'s path: the deadline and breaker layers run inline in invoke() and the
        # retry loop around the attempt in _attempts() (fewer coroutine frames per call and
        # per resumption); the ledger and limiter layers in between are composed as above.
        inner: Next = self._attempts
        for layer in reversed(self.layers[2:-1]):
            inner = functools.partial(layer.handle, call_next=inner)
        self._inner = inner
        # Below the ledger (for FloodLedger.resume after the inline fast path).
        self._below_ledger: Next = functools.partial(self.rate_layer.handle,
                                                     call_next=self._attempts)
        self._attempt_timeout = config.attempt_timeout
        # MonotonicClock: attempt deadlines share one loop timer per loop (LoopDeadlines).
        self._loop_timers = type(self.clock) is MonotonicClock
        self._deadlines: LoopDeadlines | None = None
        self._deadlines_by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, LoopDeadlines] = weakref.WeakKeyDictionary()
        self._outcomes: dict[str, dict[str, int]] = {}
        self._redact = redact

    def stats(self) -> dict[str, Any]:
        """A snapshot for ``client.guard.stats()``: ``calls`` (``{method: {outcome: count}}``,
        outcome one of :data:`~telethon_guard.events.OUTCOMES`, as in the ``RequestFinished``
        events: ``"ok"``, ``"flood_wait"``, ``"deadline"``, ``"rpc_error"``...), ``breakers``
        (``{key: state}``),
        ``blocked`` (flood scopes with seconds left), ``limiter_queue`` (calls waiting for a
        slot), ``paces`` (``{method: (count, period)}`` learned by adaptive pacing). Peer ids are
        redacted unless ``log_peer_ids``. Breakers and blocks are read from local storage
        only (empty for shared storage: ask the storage)."""
        local: Any = self.storage if getattr(self.storage, "is_local", False) else None
        breakers: dict[str, str] = {}
        blocked: dict[str, float] = {}
        if local is not None:
            for key in getattr(local, "breaker_keys", list)():
                breakers[key] = local.breaker_state_sync(key).state
            scopes: dict[str, float] = getattr(local, "flood_scopes", dict)()
            blocked = {redact_peer(k) if self._redact else k: v for k, v in scopes.items()}
        paces: dict[str, tuple[int, float]] = {}
        pacer = self.ledger.pacer
        if pacer is not None:
            paces = pacer.learned()
        return {
            "calls": {m: dict(c) for m, c in self._outcomes.items()},
            "breakers": breakers,
            "blocked": blocked,
            "limiter_queue": self.limiter.queue_length,
            "paces": paces,
        }

    def _count(self, method: str, outcome: str) -> None:
        per = self._outcomes.get(method)
        if per is None:
            if len(self._outcomes) >= 1024:  # bounded: TL has ~700 methods
                method = "other"
                per = self._outcomes.setdefault(method, {})
            else:
                per = self._outcomes[method] = {}
        per[outcome] = per.get(outcome, 0) + 1

    async def invoke(self, call: CallInfo, send: Callable[[], Awaitable[T]]) -> T:
        """Run ``send()`` (one network attempt of ``call.request``, raising what Telethon raises)
        through every layer and return its result.

        Raises the real last error when retries end (``GuardConnectionError`` from a
        disconnect, ``TransportFloodError`` from a bare transport -429), ``FloodWaitBlocked`` /
        ``SlowModeBlocked`` / ``FloodPremiumBlocked`` when a flood wait (or the wait of a
        learned adaptive pace) does not fit,
        ``CircuitOpenError`` while the breaker is OPEN, ``DeadlineExceeded`` when the deadline
        ends a wait or the network attempt, ``AlreadyDelivered`` for RANDOM_ID_DUPLICATE,
        ``AuthKeyInvalidError`` for transport -404, and any other Telethon error unchanged.
        """
        ctx = CallContext(call, send, None)
        events = self.events
        started = self.clock.now() if events.wants_request_events else None
        try:
            # DeadlineLayer.handle and CircuitBreaker.handle, inline.
            self.deadline.enter(ctx)
            breaker = self.breaker
            d = breaker.enter_local(ctx)
            if d is None:
                result: T = await breaker.handle(ctx, self._inner)
            elif d.decision == "allow" and d.old == d.state:
                # The ledger and limiter layers inline when nothing is blocked and the slot is
                # free now (FloodLedger.check_now, RateLimitLayer.reserve_now); else the
                # layers' own code, which waits.
                ledger = self.ledger
                if ledger.check_now(call) and self.rate_layer.reserve_now(call):
                    try:
                        result = await self._attempts(ctx)
                    except Exception as exc:
                        result = await ledger.resume(ctx, exc, self._below_ledger)
                    else:
                        pacer = ledger.pacer
                        if pacer is not None:
                            pacer.on_success(call.account, call.method)
                else:
                    result = await self._inner(ctx)
            else:
                result = await breaker.decided(ctx, d, self._inner)
        except BaseException as exc:
            if isinstance(exc, DeadlineExceeded):
                self.deadline.report(ctx)
            self._count(call.method, request_outcome(exc))
            if started is not None:
                self._finished(ctx, started, exc)
            raise
        self._count(call.method, "ok")
        if started is not None:
            self._finished(ctx, started, None)
        return result

    def _finished(self, ctx: CallContext, started: float, exc: BaseException | None) -> None:
        call = ctx.call
        self.events.emit(RequestFinished(
            call.method, request_outcome(exc), max(0.0, self.clock.now() - started),
            "" if exc is None else type(exc).__name__, ctx.attempts, call.account))

    # ------------------------------------------------------------------ the network attempt
    async def _attempt(self, ctx: CallContext) -> Any:
        """ONE network attempt (the terminal step of :attr:`_chain`)."""
        return await self._attempts(ctx, False)

    async def _attempts(self, ctx: CallContext, retry: bool = True) -> Any:
        """The retry layer and the network attempts in one frame: :meth:`RetryPolicy.handle`'s
        loop (decisions by :meth:`RetryPolicy.retry_after`) around one attempt per turn.
        ``retry=False``: one attempt, no retry loop."""
        policy: RetryPolicy | None = self.retry if retry else None
        turn = 0
        while True:
            turn += 1
            ctx.verdict = None
            try:
                call = ctx.call
                clock = self.clock
                now = clock.now()
                when = call.deadline_at
                by_deadline = True
                timeout = self._attempt_timeout
                floor = 0.0
                if when is not None:
                    floor = network_budget(ctx.budget or 0.0, timeout)
                    if when - now < floor:
                        # Too little time left for an answer (after a limiter, flood or backoff
                        # wait): fail now, send nothing, tell the breaker nothing.
                        raise DeadlineExceeded(call.method, ctx.budget or 0.0)
                if timeout is not None and (when is None or now + timeout < when):
                    when = now + timeout
                    by_deadline = False
                ctx.stage = "network"
                if when is not None and when <= now:
                    raise DeadlineExceeded(call.method, ctx.budget or 0.0)
                span = 0.0 if when is None else when - now  # this attempt's time (s)
                call.attempt += 1
                ctx.attempts += 1
                timer: _AttemptTimer | None = None
                if when is not None:
                    task = ctx.task
                    if task is None:
                        task = asyncio.current_task()
                    if task is not None:
                        timer = _AttemptTimer(task)
                        if self._loop_timers:
                            loop = task.get_loop()
                            deadlines = self._deadlines
                            if deadlines is None or deadlines.loop is not loop:
                                deadlines = self._deadlines_for(loop)
                            if type(loop).time is not _LOOP_TIME:  # uvloop...: its clock
                                when = loop.time() + (when - now)
                            timer.handle = deadlines.add(when, timer)
                        else:
                            timer.handle = clock.call_at(when, timer)
                try:
                    result = await ctx.send()
                except asyncio.CancelledError as exc:
                    if timer is not None:
                        timer.handle.cancel()
                        if timer.fired:
                            if _uncancel(timer.task) > 0:
                                raise  # the caller cancelled as well: propagate unchanged
                            if not by_deadline or span >= floor:
                                # A timeout counts for the breaker, a deadline timeout only
                                # when the attempt had its network budget.
                                await self._record(ctx, True)
                            if by_deadline:
                                ctx.verdict = None  # the budget is spent: nothing to retry
                                raise DeadlineExceeded(call.method,
                                                       ctx.budget or 0.0) from None
                            ctx.verdict = _TIMEOUT
                            raise AttemptTimeoutError(call.method, timeout or 0.0) from None
                        task = timer.task
                    else:
                        task = asyncio.current_task()
                    if _caller_cancelled(task):
                        raise
                    ctx.verdict = _DISCONNECT
                    await self._record(ctx, True)
                    raise GuardConnectionError(f"{call.method}: connection closed while "
                                               "waiting for the answer") from exc
                except Exception as exc:
                    if timer is not None:
                        timer.handle.cancel()
                        if timer.fired:
                            _uncancel(timer.task)  # send() swallowed our cancel: raised another
                    verdict = classify(exc)
                    ctx.verdict = verdict
                    if verdict.breaker_failure or not isinstance(exc, GuardError):
                        # Guard errors of a nested call (CircuitOpenError, DeadlineExceeded, a
                        # local flood block) say nothing about this connection: not recorded.
                        await self._record(ctx, verdict.breaker_failure)
                    self._raise_normalized(ctx, exc, verdict)
                    raise
                except BaseException:  # KeyboardInterrupt, SystemExit, GeneratorExit
                    if timer is not None:
                        timer.handle.cancel()
                    raise
                if timer is not None:
                    timer.handle.cancel()
                    if timer.fired:
                        _uncancel(timer.task)
                if not self.breaker.record_sync(ctx, False):
                    await self.breaker.record(ctx, False)
                return result
            except Exception as exc:
                if policy is None or not await policy.retry_after(ctx, exc, turn):
                    raise

    def _deadlines_for(self, loop: asyncio.AbstractEventLoop) -> LoopDeadlines:
        deadlines = self._deadlines_by_loop.get(loop)
        if deadlines is None:
            deadlines = self._deadlines_by_loop[loop] = LoopDeadlines(loop)
        self._deadlines = deadlines
        return deadlines

    async def _record(self, ctx: CallContext, failure: bool) -> None:
        if not self.breaker.record_sync(ctx, failure):
            await self.breaker.record(ctx, failure)

    @staticmethod
    def _raise_normalized(ctx: CallContext, exc: Exception, verdict: Verdict) -> None:
        """Replace transport-level errors by the guard's typed ones (``from`` the original)."""
        call = ctx.call
        if verdict.action is Action.DELIVERED:
            if isinstance(exc, AlreadyDelivered):
                return
            raise AlreadyDelivered(call.request, call.random_id, ctx.attempts) from exc
        if isinstance(exc, tl_errors.InvalidBufferError):
            if exc.code == 404:
                raise AuthKeyInvalidError(call.dc_id, -404) from exc
            if exc.code == 429:
                raise TransportFloodError(-429, None) from exc
            raise GuardConnectionError(f"{call.method}: invalid transport buffer") from exc
        if verdict.action is Action.DISCONNECT and not isinstance(exc, GuardError):
            raise GuardConnectionError(f"{call.method}: {type(exc).__name__}: {exc}") from exc


__all__ = ["CallContext", "DeadlineLayer", "Layer", "Pipeline"]
