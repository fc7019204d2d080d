"""Circuit breaker per (account, DC): CLOSED -> OPEN -> HALF_OPEN -> CLOSED.

* CLOSED: calls pass. ``breaker_failure_threshold`` consecutive failures open it. Failures are
  transport errors and disconnects, timeouts (attempt timeout, -503, a deadline hit during the
  network attempt) and 5xx; never FLOOD_WAIT, ``RANDOM_ID_DUPLICATE`` or ordinary 4xx (Telegram
  answered: the connection works, so those count as successes and reset the count).
* OPEN for ``breaker_open_seconds``: :meth:`CircuitBreaker.handle` raises
  :class:`~telethon_guard.errors.CircuitOpenError` (``key``, ``retry_after``) at once, without
  any await on local storage.
* HALF_OPEN: exactly one call (the probe) goes through; every other call fails fast. A probe
  success closes the breaker; a probe failure re-opens it for ``open_seconds * growth**k``
  (capped at ``breaker_max_open_seconds``). A probe that ends without a verdict (cancelled,
  blocked locally) frees the probe slot for the next caller.

Re-entrant per task: calls nested on the probing task (Telethon resolving an entity or exporting
an authorization inside the request) pass without taking a second probe, so they never deadlock
or fail against their own probe. State lives in the storage (shared across processes with
Redis); every transition emits :class:`~telethon_guard.events.BreakerStateChanged`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import keys
from .call import CallInfo
from .clock import Clock
from .config import GuardConfig
from .errors import CircuitOpenError
from .events import BreakerStateChanged, EventBus, ObservedDelay
from .storage import OPEN, BreakerDecision, BreakerPolicy, GuardStorage

if TYPE_CHECKING:
    from .pipeline import CallContext


def breaker_key(call: CallInfo) -> str:
    """The breaker key of ``call`` (:func:`telethon_guard.keys.breaker_key`)."""
    return keys.breaker_key(call.account, call.dc_id)


class CircuitBreaker:
    """Pipeline layer and attempt observer for the per (account, DC) breakers."""

    __slots__ = ("_events", "_local", "_observe", "_probe_owner", "_storage", "lease", "policy")

    def __init__(self, config: GuardConfig, storage: GuardStorage, clock: Clock,
                 events: EventBus | None = None) -> None:
        self._storage = storage
        self._local: Any = storage if getattr(storage, "is_local", False) else None
        self._events = events
        self._observe = config.observe_only
        self.policy = BreakerPolicy(config.breaker_failure_threshold, config.breaker_open_seconds,
                                    config.breaker_open_growth, config.breaker_max_open_seconds)
        # A probe lease longer than any call: a crashed prober frees it eventually.
        self.lease = max(config.deadline or 60.0, config.breaker_max_open_seconds)
        self._probe_owner: dict[str, asyncio.Task[Any]] = {}

    def _emit(self, key: str, d: BreakerDecision, account: str | None) -> None:
        if d.old != d.state and self._events is not None:
            self._events.emit(BreakerStateChanged(
                key, d.old, d.state, d.retry_after if d.state == OPEN else None, account))

    async def state(self, key: str) -> BreakerDecision:
        """Current state of breaker ``key`` (no transition)."""
        if self._local is not None:
            d: BreakerDecision = self._local.breaker_state_sync(key)
            return d
        return await self._storage.breaker_state(key)

    async def _acquire(self, key: str) -> BreakerDecision:
        if self._local is not None:
            d: BreakerDecision = self._local.breaker_acquire_sync(key, self.lease)
            return d
        return await self._storage.breaker_acquire(key, self.lease)

    async def handle(self, ctx: CallContext, call_next: Callable[[CallContext], Awaitable[Any]],
                     ) -> Any:
        """Fail fast with ``CircuitOpenError`` while OPEN (or HALF_OPEN with the probe taken);
        otherwise run ``call_next``, as the probe when HALF_OPEN (freed if no verdict)."""
        call = ctx.call
        key = breaker_key(call)
        ctx.breaker_key = key
        task = asyncio.current_task()
        ctx.task = task
        if task is not None and self._probe_owner.get(key) is task:
            return await call_next(ctx)  # nested call on the probing task
        d = await self._acquire(key)
        if d.decision == "allow" and d.old == d.state:
            return await call_next(ctx)
        return await self.decided(ctx, d, call_next)

    def enter_local(self, ctx: CallContext) -> BreakerDecision | None:
        """The synchronous start of :meth:`handle` on local storage when no probe is held
        (so no nested call on a probing task is possible): sets ``ctx.breaker_key`` and
        returns the acquire decision. ``decision == "allow"`` without a state change: run
        the call; otherwise continue with :meth:`decided`. ``None``: not applicable (shared
        storage or a probe held): use :meth:`handle`, nothing was acquired."""
        local = self._local
        if local is None or self._probe_owner:
            return None
        call = ctx.call
        key = ctx.breaker_key = keys.breaker_key(call.account, call.dc_id)
        d: BreakerDecision = local.breaker_acquire_sync(key, self.lease)
        return d

    async def decided(self, ctx: CallContext, d: BreakerDecision,
                      call_next: Callable[[CallContext], Awaitable[Any]]) -> Any:
        """The rest of :meth:`handle` once the acquire decision ``d`` for ``ctx.breaker_key``
        is known: report a transition, fail fast (``CircuitOpenError``) or run ``call_next``,
        as the probe when ``d`` says so."""
        call = ctx.call
        key = ctx.breaker_key
        assert key is not None
        self._emit(key, d, call.account)
        if d.decision == "reject":
            if not self._observe:
                retry_after = d.retry_after
                if d.state != OPEN:  # HALF_OPEN, probe in flight: its verdict comes sooner
                    retry_after = min(retry_after, self.policy.open_seconds)
                raise CircuitOpenError(key, retry_after)
            if self._events is not None:
                self._events.emit(ObservedDelay("breaker", key, d.retry_after, True,
                                                call.method, call.account))
            return await call_next(ctx)
        if d.decision != "probe":
            return await call_next(ctx)
        ctx.probe = True
        task = ctx.task
        if task is None:
            task = ctx.task = asyncio.current_task()
        if task is not None:
            self._probe_owner[key] = task
        try:
            return await call_next(ctx)
        finally:
            if task is not None and self._probe_owner.get(key) is task:
                del self._probe_owner[key]
            if ctx.probe:  # no verdict was recorded: let the next caller probe
                ctx.probe = False
                if self._local is not None:
                    self._local.breaker_release_probe_sync(key)
                else:
                    await self._storage.breaker_release_probe(key)

    def record_sync(self, ctx: CallContext, failure: bool) -> bool:
        """:meth:`record` without awaiting, for local storage; ``False`` (nothing recorded)
        when the storage is shared and :meth:`record` must be awaited instead."""
        local = self._local
        if local is None:
            return ctx.breaker_key is None
        key = ctx.breaker_key
        if key is None:
            return True
        if failure:
            d: BreakerDecision = local.breaker_failure_sync(key, self.policy)
        else:
            d = local.breaker_success_sync(key)
        ctx.probe = False
        if d.old != d.state:
            self._emit(key, d, ctx.call.account)
        return True

    async def record(self, ctx: CallContext, failure: bool) -> None:
        """Record the outcome of one network attempt of ``ctx`` (``failure``: counts toward
        opening)."""
        key = ctx.breaker_key
        if key is None:
            return
        if failure:
            if self._local is not None:
                d: BreakerDecision = self._local.breaker_failure_sync(key, self.policy)
            else:
                d = await self._storage.breaker_failure(key, self.policy)
        else:
            if self._local is not None:
                d = self._local.breaker_success_sync(key)
            else:
                d = await self._storage.breaker_success(key)
        ctx.probe = False
        self._emit(key, d, ctx.call.account)

    async def is_open(self, ctx: CallContext) -> bool:
        """``True`` when the call's breaker is OPEN now (the retry layer stops retrying)."""
        key = ctx.breaker_key
        if key is None or self._observe:
            return False
        d = await self.state(key)
        return d.state == OPEN


__all__ = ["CircuitBreaker", "breaker_key"]
