"""Retry of transient errors with exponential backoff and full jitter, inside the deadline.

Retried (design-notes section 3): 500 / ``RPC_CALL_FAIL`` / ``RPC_MCGET_FAIL`` /
``WORKER_BUSY_TOO_LONG_RETRY`` / -503 ``Timeout``, attempt timeouts and disconnects
(``ConnectionError``, transport ``InvalidBufferError`` 429, ``CancelledError`` from Telethon's
disconnect). Never retried: ``PEER_FLOOD`` and every other 4xx, ``*_MIGRATE`` (Telethon handles
it), flood waits (the flood ledger owns them), ``RANDOM_ID_DUPLICATE`` (delivered),
``AuthKeyInvalidError`` / ``TransportFloodError`` (the transport layer decided), and any
login request (:data:`~telethon_guard.keys.LOGIN_METHODS`: a re-sent ``auth.sendCode`` sends a
new code and counts towards a login flood).

Attempt ``k`` (1-based) that fails waits ``uniform(0, min(retry_max_delay, retry_base_delay *
2**(k-1)))`` seconds (AWS "full jitter"). The same request object is re-sent, so its
``random_id`` is kept. Retrying stops and the **real last error** is raised (never
``ValueError('Request was unsuccessful')``) when ``retry_max_attempts`` attempts were made or
when the next delay would end at or after the call's deadline. When the call's circuit breaker
opened meanwhile, the retry is refused with :class:`~telethon_guard.errors.CircuitOpenError`
(``retry_after``; ``may_have_run`` when the last attempt reached the network unanswered)
raised ``from`` the real last error.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from telethon.errors import RPCError

from .call import CallInfo
from .classify import Action
from .clock import Clock
from .config import GuardConfig
from .events import EventBus, RetriesExhausted, RetryScheduled
from .keys import LOGIN_METHODS
from .network_budget import network_budget

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

_RETRYABLE = (Action.TRANSIENT, Action.DISCONNECT)


def backoff_delay(rng: random.Random, attempt: int, base: float, cap: float) -> float:
    """Full-jitter delay after failed attempt ``attempt`` (1-based), in seconds."""
    exp = base * (2.0 ** min(attempt - 1, 62))
    return rng.uniform(0.0, min(cap, exp))


def error_name(exc: BaseException) -> str:
    """``TypeName`` plus Telegram's code/message when present (no request contents)."""
    code = getattr(exc, "code", None)
    msg = getattr(exc, "message", None)
    name = type(exc).__name__
    if code is not None or msg:
        return f"{name}({code} {msg or ''})".replace(" )", ")")
    return name


class RetryPolicy:
    """Pipeline layer: re-runs ``call_next`` (one network attempt) for transient errors.

    ``rng``: a ``random.Random`` (seed it for reproducible jitter in tests). ``breaker``: when
    given, retrying stops once the call's breaker is OPEN.
    """

    __slots__ = ("_attempt_timeout", "_clock", "_events", "base", "breaker", "cap",
                 "max_attempts", "rng")

    def __init__(self, config: GuardConfig, clock: Clock, events: EventBus | None = None, *,
                 rng: random.Random | None = None,
                 breaker: CircuitBreaker | None = None) -> None:
        self._clock = clock
        self._events = events
        self.rng = rng if rng is not None else config.make_rng()
        self.max_attempts = config.retry_max_attempts
        self.base = config.retry_base_delay
        self.cap = config.retry_max_delay
        self.breaker = breaker
        self._attempt_timeout = config.attempt_timeout

    def enter(self, call: CallInfo, call_next: Callable[[CallInfo], Awaitable[Any]],
              ) -> Awaitable[Any] | None:
        """Before the first attempt (:meth:`Pipeline.invoke`'s fast path calls it): no verdict
        yet; ``None`` (the fast path runs the attempt itself and :meth:`recover` if it
        raises)."""
        call.verdict = None
        return None

    async def recover(self, call: CallInfo, exc: Exception,
                      call_next: Callable[[CallInfo], Awaitable[Any]]) -> Any:
        """What :meth:`handle` does once its first attempt (entered through :meth:`enter`)
        raised ``exc``: back off and try again, or raise ``exc`` unchanged when it is final."""
        if not await self._again(call, exc, 1):
            raise exc
        return await self.handle(call, call_next, 1)

    async def handle(self, call: CallInfo, call_next: Callable[[CallInfo], Awaitable[Any]],
                     attempt: int = 0) -> Any:
        """Run ``call_next`` (one attempt) until it succeeds, raises a non-retryable error, or
        the budget ends; then the real last error propagates unchanged. ``attempt``: attempts
        already made (:meth:`recover`)."""
        while True:
            attempt += 1
            call.verdict = None
            try:
                return await call_next(call)
            except Exception as exc:
                if not await self._again(call, exc, attempt):
                    raise

    async def _again(self, call: CallInfo, exc: Exception, attempt: int) -> bool:
        """After attempt ``attempt`` (1-based) failed with ``exc``: ``False`` when it is final
        (not retryable per ``call.verdict``, attempts or deadline spent, breaker OPEN; emits
        ``RetriesExhausted`` for a retryable one), else emit ``RetryScheduled``, sleep the
        backoff and return ``True`` (try again)."""
        verdict = call.verdict
        if verdict is None or verdict.action not in _RETRYABLE:
            return False
        if call.method in LOGIN_METHODS:  # never re-sent on its own (keys.LOGIN_METHODS)
            return False
        if not isinstance(exc, RPCError):  # no answer from Telegram: it may have run
            call.unanswered = True
        stop = attempt >= self.max_attempts
        delay = 0.0
        if not stop:
            delay = backoff_delay(self.rng, attempt, self.base, self.cap)
            dl = call.deadline_at
            # The retry must leave the attempt its network budget (else it would fail with
            # DeadlineExceeded unsent): stop here and raise the real error instead.
            stop = dl is not None and (
                self._clock.now() + delay
                + network_budget(call.budget or 0.0, self._attempt_timeout) >= dl)
        refused = None
        if not stop and self.breaker is not None:
            refused = await self.breaker.refusal(call, exc)
            stop = refused is not None
        if stop:
            if self._events is not None:
                self._events.emit(RetriesExhausted(error_name(exc), attempt,
                                                   call.method, call.account))
            if refused is not None:
                # The breaker opened meanwhile: say so (CircuitOpenError, retry_after), with
                # the last attempt's error as the cause.
                raise refused from exc
            return False
        if self._events is not None:
            self._events.emit(RetryScheduled(error_name(exc), attempt, delay,
                                             call.method, call.account))
        call.stage = "backoff"
        await self._clock.sleep(delay)
        return True


__all__ = ["RetryPolicy", "backoff_delay", "error_name"]
