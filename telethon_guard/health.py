"""Availability and graceful degradation: ``client.guard.available``, ``wait_available`` and
the fallback helper.

A request handler that must answer fast should not wait for Telegram when the guard already
knows the answer is "not now": the breaker of the main DC is OPEN, the connection is down and
reconnecting, a flood wait is longer than the handler's budget. :func:`with_fallback` (and the
:func:`fallback` decorator) run a Telegram call under a per-call deadline and return a fallback
value (a default, or a cache lookup) at once in those cases, instead of waiting for a timeout::

    channels = await with_fallback(lambda: fetch_live(client), lambda: cache.load(),
                                   timeout=2.0, guard=client)

What "at once" relies on: while the deadline scope of :func:`with_fallback` is active, every
call the guarded client makes gets ``deadline_at = min(config deadline, scope deadline)``, so
the flood ledger raises ``FloodWaitBlocked`` for a wait that ends after it, the rate limiter
raises ``DeadlineExceeded`` for a slot beyond it, and the breaker raises ``CircuitOpenError``
without any network I/O. Only a call that is really on the wire runs until the deadline.

Availability (:func:`unavailable_reason`) is computed from local state only, synchronously,
in microseconds and without I/O, so a ``/health`` endpoint may read it on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

from .errors import (
    AttemptTimeoutError,
    CircuitOpenError,
    DeadlineExceeded,
    FloodPremiumBlocked,
    FloodWaitBlocked,
    GuardConnectionError,
    SlowModeBlocked,
    StorageUnavailableError,
    TransportFloodError,
)
from .storage import stats_view

T = TypeVar("T")

FALLBACK_ERRORS: tuple[type[BaseException], ...] = (
    CircuitOpenError,
    FloodWaitBlocked,
    SlowModeBlocked,
    FloodPremiumBlocked,
    DeadlineExceeded,
    AttemptTimeoutError,
    TransportFloodError,
    GuardConnectionError,
    StorageUnavailableError,
    TimeoutError,
    asyncio.TimeoutError,  # a distinct class before Python 3.11
)
"""Errors that mean "Telegram cannot answer within the budget now": :func:`with_fallback`
returns the fallback for these. Anything else (a 4xx such as ``CHANNEL_PRIVATE``, a bug)
propagates: a cache must not hide a wrong request."""

class _Scope:
    """A deadline scope: the absolute deadline ``at`` on the clock whose ``now`` measured it."""

    __slots__ = ("at", "now")

    def __init__(self, at: float, now: Callable[[], float]) -> None:
        self.at = at
        self.now = now

    def on(self, now: Callable[[], float] | None) -> float:
        """The deadline on the clock ``now`` (``None``: the scope's own clock). On another
        clock the time left is carried over: ``now() + (at - own now())``."""
        if now is None or now == self.now:
            return self.at
        return now() + (self.at - self.now())


_scope_deadline: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "telethon_guard_scope_deadline", default=None)


in_deadline_scope: Callable[[], object] = _scope_deadline.get
"""``in_deadline_scope()``: not ``None`` inside a :func:`deadline_scope` (a C-level read of
the scope's context variable, for the straight lane's check)."""


def current_deadline(now: Callable[[], float] | None = None) -> float | None:
    """Absolute deadline (seconds) of the innermost :func:`deadline_scope`, or ``None``.

    ``now``: the clock to express it on (a guarded client passes its guard clock's ``now``, so
    a scope opened on ``time.monotonic()`` bounds calls timed on a fake or offset clock by the
    same time left); ``None`` returns it on the clock the scope was opened with. The client
    applies it to every call made inside."""
    scope = _scope_deadline.get()
    return None if scope is None else scope.on(now)


def _clock_now(clock: Any, guard: Any) -> Callable[[], float]:
    """The ``now`` function of ``clock`` (an object with ``now()``), else of ``guard`` (a
    ``ClientGuard``, a guarded client or a callable returning either), else ``time.monotonic``."""
    if clock is not None:
        return cast(Callable[[], float], clock.now)
    state = _resolve_guard(guard)
    if state is not None and hasattr(state, "now"):
        return cast(Callable[[], float], state.now)
    return time.monotonic


@contextlib.contextmanager
def deadline_scope(
    seconds: float, *, now: float | None = None, clock: Any = None, guard: Any = None,
) -> Iterator[float]:
    """Within the ``with`` block, every guarded call gets at most ``seconds`` of total budget;
    nested scopes only shorten it. Yields the absolute deadline on the scope's clock.

    * ``clock``: the clock (anything with ``now()`` in monotonic seconds, e.g. a
      :class:`~telethon_guard.fakeclock.FakeClock`) the scope is measured on; else ``guard``'s
      clock (``client.guard``, the client, or a callable returning either: the guard clock,
      ``GuardedTelegramClient(clock=...)``); else ``time.monotonic()``. A call timed on
      another clock gets the same time left (:func:`current_deadline`).
    * ``now``: the start, on that clock (default: its ``now()``).

    Raises ``ValueError`` for a non-positive or non-finite ``seconds``. (No randomness is
    involved, so the guard's ``seed`` / ``rng`` play no part here.)"""
    _check_timeout(seconds)
    clock_now = _clock_now(clock, guard)
    start = clock_now() if now is None else now
    at = start + seconds
    outer = _scope_deadline.get()
    if outer is not None:
        at = min(at, outer.on(clock_now))
    token = _scope_deadline.set(_Scope(at, clock_now))
    try:
        yield at
    finally:
        _scope_deadline.reset(token)


def _check_timeout(seconds: Any) -> None:
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or math.isnan(seconds) or math.isinf(seconds) or seconds <= 0):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {seconds!r}")


def _resolve_guard(guard: Any) -> Any:
    """A ``ClientGuard`` from a ClientGuard, a guarded client, or a zero-argument callable."""
    if guard is None:
        return None
    if hasattr(guard, "pipeline") and hasattr(guard, "config"):
        return guard
    inner = getattr(guard, "guard", None)
    if inner is not None and hasattr(inner, "pipeline"):
        return inner
    if callable(guard):
        return _resolve_guard(guard())
    raise TypeError(f"guard must be a ClientGuard, a guarded client or a callable, not {guard!r}")


# ---- availability ------------------------------------------------------------------------


def _breaker_state(state: Any, key: str) -> tuple[str, float]:
    """``(state, seconds until a probe may be tried)`` of breaker ``key`` from local storage,
    else from the last ``BreakerStateChanged`` this process saw. HALF_OPEN: the probe lease
    left (0 when no probe is out: the next call is the probe); a probe held by a task of this
    process counts as out whatever the storage says."""
    pipeline = state.pipeline
    storage = getattr(pipeline, "storage", None)
    view = stats_view(storage) if storage is not None else None
    if view is not None and (storage.is_local or key in view.breaker_keys()):  # type: ignore[union-attr]
        d = view.breaker_state_sync(key)
        st, left = str(d.state), float(d.retry_after)
    else:
        collector = getattr(state, "collector", None)
        st = collector.breakers.get(key, "CLOSED") if collector is not None else "CLOSED"
        left = 0.0
    if st == "HALF_OPEN" and left <= 0:
        breaker = getattr(pipeline, "breaker", None)
        probing = getattr(breaker, "probing", None)
        if callable(probing) and probing(key):
            left = math.inf
    return st, left


def _breaker_keys(state: Any) -> list[str]:
    storage = getattr(state.pipeline, "storage", None)
    keys: list[str] = []
    view = stats_view(storage) if storage is not None else None
    if view is not None:
        keys = list(view.breaker_keys())
    collector = getattr(state, "collector", None)
    if collector is not None:
        keys.extend(k for k in collector.breakers if k not in keys)
    return keys


def unavailable_reason(state: Any) -> str | None:
    """Why the guard would not get an answer from Telegram now, or ``None`` when it would.

    ``state`` is a ``ClientGuard`` (``client.guard``). Reasons, checked in this order:

    * ``"disconnected"``: the main client is not connected (or was disconnected for good);
    * ``"reconnect failing"``: the main sender gave up waiting (``max_reconnect_seconds``
      passed) and fails calls fast;
    * ``"reconnecting"``: the main sender's paced reconnect loop is running;
    * ``"breaker OPEN"`` / ``"breaker HALF_OPEN"``: the breaker of the main DC (account + DC
      of the client's session) is OPEN with time left, or HALF_OPEN with its one probe out
      (held by a task of this process, or leased in storage). An OPEN breaker whose time is up,
      and a HALF_OPEN one whose probe ended without a verdict (cancelled, deadline before
      send: the probe is released) or whose lease ran out, count as available: the next
      call is the probe.

    Without a bound client (a bare ``ClientGuard``), every known breaker is checked instead.
    Synchronous, no I/O: with shared (Redis) storage the breaker state is the last one this
    process saw in events.
    """
    client = state.main_client() if hasattr(state, "main_client") else None
    keys: list[str]
    if client is not None:
        if not client.is_connected():
            return "disconnected"
        from ._telethon import main_sender

        sender = main_sender(client)
        if getattr(sender, "given_up", False):
            return "reconnect failing"
        if getattr(sender, "is_reconnecting", False):
            return "reconnecting"
        from ._link import account_key
        from .keys import breaker_key

        dc = int(getattr(client.session, "dc_id", 0) or 0)
        keys = [breaker_key(account_key(client, state), dc)]
    else:
        keys = _breaker_keys(state)
    for key in keys:
        st, left = _breaker_state(state, key)
        if st == "OPEN" and left > 0:
            return "breaker OPEN"
        if st == "HALF_OPEN" and left > 0:
            return "breaker HALF_OPEN"
    return None


def is_available(state: Any) -> bool:
    """``unavailable_reason(state) is None``."""
    return unavailable_reason(state) is None


async def wait_available(state: Any, timeout: float, *, interval: float = 0.02) -> bool:
    """Wait until :func:`is_available` (checked every ``interval`` s, or sooner when an OPEN
    breaker's time is up); return ``True`` then, or ``False`` once ``timeout`` seconds have
    passed (never waits longer). Raises ``ValueError`` for a bad ``timeout``/``interval``."""
    _check_timeout(timeout)
    _check_timeout(interval)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        if is_available(state):
            return True
        left = end - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(interval, left))


# ---- fallback ------------------------------------------------------------------------------


async def _value_of(fallback: Any) -> Any:
    if callable(fallback):
        result = fallback()
        if inspect.isawaitable(result):
            result = await result
        return result
    return fallback


def _check_call(call: Any) -> None:
    if callable(call):
        return
    if inspect.iscoroutine(call):
        call.close()  # never awaited: close it, no "was never awaited" warning
    raise TypeError(f"call must be a zero-argument function returning the awaitable "
                    f"(e.g. lambda: client.get_me()), got {type(call).__name__} {call!r:.80}")


async def with_fallback(
    call: Callable[[], Awaitable[T]],
    fallback: Any,
    *,
    timeout: float,
    guard: Any = None,
    errors: tuple[type[BaseException], ...] = FALLBACK_ERRORS,
    on_fallback: Callable[[BaseException | None], Any] | None = None,
) -> T:
    """``await call()`` within ``timeout`` seconds, or the fallback at once when Telegram
    cannot answer in time.

    * ``call``: a zero-argument function returning the awaitable (called at most once, and
      not at all when the guard is unavailable).
    * ``fallback``: the value to return, or a zero-argument callable (sync or async) producing
      it (a cache lookup); called only when needed.
    * ``timeout``: seconds (> 0). Every guarded call inside runs under this deadline
      (:func:`deadline_scope`), so flood waits, limiter slots and retries that cannot end in
      time fail at once; ``asyncio.timeout`` bounds the rest.
    * ``guard``: ``client.guard``, the client, or a callable returning either. When given and
      not available (:func:`unavailable_reason`), ``call`` is skipped.
    * ``errors``: which exceptions mean "fall back" (:data:`FALLBACK_ERRORS`); others propagate.
    * ``on_fallback(reason)``: called before falling back, with the error (``None`` when the
      guard was unavailable); its failures propagate.

    Cancellation of the caller propagates unchanged.

    :raises TypeError: ``call`` is not callable (e.g. the coroutine itself: pass
        ``lambda: client.get_me()``, not ``client.get_me()``).
    """
    _check_call(call)
    _check_timeout(timeout)
    state = _resolve_guard(guard)
    if state is not None and not is_available(state):
        if on_fallback is not None:
            on_fallback(None)
        return cast(T, await _value_of(fallback))
    try:
        with deadline_scope(timeout, guard=state):
            return await asyncio.wait_for(call(), timeout)
    except errors as exc:
        if on_fallback is not None:
            on_fallback(exc)
        return cast(T, await _value_of(fallback))


def fallback(
    default: Any,
    *,
    timeout: float,
    guard: Any = None,
    errors: tuple[type[BaseException], ...] = FALLBACK_ERRORS,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorator form of :func:`with_fallback` for ``async def`` functions::

        @fallback(lambda: cache.load(), timeout=2.0, guard=lambda: client)
        async def channels() -> list[dict]: ...

    ``default`` is a value or a zero-argument callable (sync or async); ``guard`` may be a
    callable resolved at each call (the client may be built after the decorator runs).
    Raises ``ValueError`` for a bad ``timeout`` at decoration time.
    """
    _check_timeout(timeout)

    def decorate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            return await with_fallback(lambda: fn(*args, **kwargs), default, timeout=timeout,
                                       guard=guard, errors=errors)

        return wrapper

    return decorate


__all__ = [
    "FALLBACK_ERRORS",
    "current_deadline",
    "deadline_scope",
    "fallback",
    "is_available",
    "unavailable_reason",
    "wait_available",
    "with_fallback",
]
