"""Circuit breaker per (account, DC): CLOSED -> OPEN -> HALF_OPEN -> CLOSED.

* CLOSED: calls pass. ``breaker_failure_threshold`` consecutive failures open it. Failures are
  transport errors and disconnects, timeouts (attempt timeout, -503, a deadline hit during the
  network attempt) and 5xx; never FLOOD_WAIT, ``RANDOM_ID_DUPLICATE`` or ordinary 4xx (Telegram
  answered: the connection works, so those count as successes and reset the count).
* OPEN for ``breaker_open_seconds``: :meth:`CircuitBreaker.handle` raises
  :class:`~telethon_guard.errors.CircuitOpenError` (``key``, ``retry_after``) at once, without
  any await on local storage (the check is synchronous: a call allowed through goes straight to
  the next layer, with no coroutine frame of the breaker's own).
* HALF_OPEN: exactly one call (the probe) goes through; every other call fails fast. A probe
  success closes the breaker; a probe failure re-opens it for ``open_seconds * growth**k``
  (capped at ``breaker_max_open_seconds``). A probe that ends without a verdict (cancelled,
  blocked locally, a deadline before send) frees the probe slot for the next caller, and
  health then reports the breaker available (the next call is the probe). The slot is a lease
  in storage (:attr:`CircuitBreaker.lease`: ``deadline`` + 1 s, 60 s without a deadline), so
  a release that never comes (a process crashed holding it on shared storage) ends with it.
* Reconnected: when the guarded sender's connection to the DC is re-established and the server
  answered on it (:class:`~telethon_guard.events.ReconnectSucceeded`; the sender pings a new
  connection with nothing to re-send, so no call need be let through first), an OPEN breaker
  of that (account, DC) becomes HALF_OPEN at once (:meth:`CircuitBreaker.reconnected`, storage
  ``breaker_reconnected``): the failures it opened on came from the outage, which is over, so
  the next call is the probe instead of every call being refused for the rest of the open
  time. While the outage lasts (no reconnect answered) the breaker stays OPEN and fails fast.

Re-entrant per task: calls nested on the probing task (Telethon resolving an entity or exporting
an authorization inside the request) pass without taking a second probe, so they never deadlock
or fail against their own probe. State lives in the storage (shared across processes with
Redis); every transition emits :class:`~telethon_guard.events.BreakerStateChanged`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from telethon.errors import RPCError

from . import keys
from .call import CallInfo
from .clock import Clock
from .config import GuardConfig
from .errors import CircuitOpenError
from .events import BreakerStateChanged, EventBus, ObservedDelay
from .storage import OPEN, BreakerDecision, BreakerPolicy, GuardStorage, LocalGuardStorage, local_of

Next = Callable[[CallInfo], Awaitable[Any]]


def breaker_key(call: CallInfo) -> str:
    """The breaker key of ``call`` (:func:`telethon_guard.keys.breaker_key`)."""
    return keys.breaker_key(call.account, call.dc_id)


class CircuitBreaker:
    """Pipeline layer (:meth:`handle`) and attempt observer (:meth:`record`) for the per
    (account, DC) breakers. The two per-call operations (acquire, record) use local storage
    (:class:`~telethon_guard.storage.LocalGuardStorage`) synchronously, chosen once here at
    construction; everything else awaits the storage's async API, whichever it is."""

    __slots__ = ("_events", "_keys", "_local", "_observe", "_probe_owner", "_storage", "lease",
                 "policy")

    def __init__(self, config: GuardConfig, storage: GuardStorage, clock: Clock,
                 events: EventBus | None = None) -> None:
        self._storage = storage
        self._local: LocalGuardStorage | None = local_of(storage)
        self._events = events
        self._observe = config.observe_only
        self.policy = BreakerPolicy(config.breaker_failure_threshold, config.breaker_open_seconds,
                                    config.breaker_open_growth, config.breaker_max_open_seconds)
        # The probe lease (seconds): a probe that ends without a verdict frees it at once
        # (``_decided``); a lost release (a crashed process on shared storage) frees it when
        # the lease ends. No call outlives its deadline, so deadline + 1 s (60 s without one).
        self.lease = (config.deadline or 59.0) + 1.0
        self._probe_owner: dict[str, asyncio.Task[Any]] = {}
        self._keys: dict[tuple[str, int], str] = {}  # (account, DC) -> breaker key, bounded

    def _emit(self, key: str, d: BreakerDecision, account: str | None) -> None:
        if d.old != d.state and self._events is not None:
            self._events.emit(BreakerStateChanged(
                key, d.old, d.state, d.retry_after if d.state == OPEN else None, account))

    def probing(self, key: str) -> bool:
        """``True`` while a task of this process holds the HALF_OPEN probe of ``key``
        (synchronous, no I/O: health reads it)."""
        return key in self._probe_owner

    def probing_table(self) -> dict[str, asyncio.Task[Any]]:
        """The live table of HALF_OPEN probes held by this process's tasks ``{key: task}``
        (read only; empty: no probe in flight, the straight lane's check)."""
        return self._probe_owner

    def key_of(self, call: CallInfo) -> str:
        """The breaker key of ``call`` (cached per (account, DC), as :meth:`enter` uses)."""
        key = self._keys.get((call.account, call.dc_id))
        return key if key is not None else self._key(call)

    def succeeded(self, key: str, account: str | None) -> None:
        """:meth:`record` of a success for breaker ``key`` on local storage, for a call that
        has no :class:`CallInfo` (the straight lane, which calls it only when the breaker
        has something to change: failures counted, or not CLOSED)."""
        local = self._local
        assert local is not None
        d = local.breaker_success_sync(key)
        if d.old != d.state:
            self._emit(key, d, account)

    def reconnected(self, account: str | None, dc_id: int | None) -> Awaitable[None] | None:
        """The connection to DC ``dc_id`` of ``account`` was re-established (the server
        answered on it, :class:`~telethon_guard.events.ReconnectSucceeded`): an OPEN breaker
        of that (account, DC) becomes HALF_OPEN at once, the next call its probe (the
        failures it opened on were the outage's, which is over). Done at once on local
        storage (returns ``None``); on shared storage returns the awaitable that does it.
        Emits :class:`~telethon_guard.events.BreakerStateChanged` on a transition."""
        if account is None or dc_id is None:
            return None
        key = keys.breaker_key(account, dc_id)
        local = self._local
        if local is None:
            return self._reconnected_shared(key, account)
        self._emit(key, local.breaker_reconnected_sync(key), account)
        return None

    async def _reconnected_shared(self, key: str, account: str) -> None:
        self._emit(key, await self._storage.breaker_reconnected(key), account)

    async def state(self, key: str) -> BreakerDecision:
        """Current state of breaker ``key`` (no transition)."""
        return await self._storage.breaker_state(key)

    def handle(self, call: CallInfo, call_next: Next) -> Awaitable[Any]:
        """Fail fast with ``CircuitOpenError`` while OPEN (or HALF_OPEN with the probe taken);
        otherwise run ``call_next``, as the probe when HALF_OPEN (freed if no verdict).

        :meth:`enter`; an allowed call returns ``call_next(call)`` directly (no coroutine
        frame of the breaker's own)."""
        slow = self.enter(call, call_next)
        return call_next(call) if slow is None else slow

    def enter(self, call: CallInfo, call_next: Next) -> Awaitable[Any] | None:
        """The synchronous check (:meth:`Pipeline.invoke`'s fast path calls it): ``None``
        when the call is allowed now with no transition (local storage, no probe held
        anywhere, so the call cannot be nested on a probing task); else the awaitable of the
        rest of :meth:`handle` around ``call_next`` (fail fast, the probe, shared storage)."""
        key = self._keys.get((call.account, call.dc_id))
        if key is None:
            key = self._key(call)
        call.breaker_key = key
        local = self._local
        if local is None or self._probe_owner:
            return self._handle_slow(call, key, call_next)
        d = local.breaker_acquire_sync(key, self.lease)
        if d.decision == "allow" and d.old == d.state:
            return None
        return self._decided(call, key, d, call_next)

    def _key(self, call: CallInfo) -> str:
        cache = self._keys
        if len(cache) >= 4096:
            cache.clear()
        key = cache[(call.account, call.dc_id)] = keys.breaker_key(call.account, call.dc_id)
        return key

    async def _handle_slow(self, call: CallInfo, key: str, call_next: Next) -> Any:
        task = asyncio.current_task()
        call.task = task
        if task is not None and self._probe_owner.get(key) is task:
            return await call_next(call)  # nested call on the probing task
        adm = call.admitted  # shared_admit.py: decided with the ledger and limiter at once
        if adm is not None:
            d = adm.decision
        else:
            d = await self._storage.breaker_acquire(key, self.lease)
        if d.decision == "allow" and d.old == d.state:
            return await call_next(call)
        return await self._decided(call, key, d, call_next)

    async def _decided(self, call: CallInfo, key: str, d: BreakerDecision,
                       call_next: Next) -> Any:
        """The rest of :meth:`handle` once the acquire decision ``d`` is known: report a
        transition, fail fast (``CircuitOpenError``) or run ``call_next``, as the probe when
        ``d`` says so."""
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
            return await call_next(call)
        if d.decision != "probe":
            return await call_next(call)
        call.probe = True
        task = call.task
        if task is None:
            task = call.task = asyncio.current_task()
        if task is not None:
            self._probe_owner[key] = task
        try:
            return await call_next(call)
        finally:
            if task is not None and self._probe_owner.get(key) is task:
                del self._probe_owner[key]
            if call.probe:  # no verdict was recorded: let the next caller probe
                call.probe = False
                await self._storage.breaker_release_probe(key)

    def record(self, call: CallInfo, failure: bool) -> Awaitable[None] | None:
        """Record the outcome of one network attempt of ``call`` (``failure``: counts toward
        opening). Done at once on local storage (returns ``None``); on shared storage returns
        the awaitable that records it."""
        key = call.breaker_key
        if key is None:
            return None
        local = self._local
        if local is None:
            adm = call.admitted
            if adm is not None:
                if failure:
                    adm.clean = False
                elif adm.clean:  # CLOSED without failures at admission: nothing changes
                    call.probe = False
                    return None
            return self._record_shared(call, key, failure)
        if failure:
            d = local.breaker_failure_sync(key, self.policy)
        else:
            d = local.breaker_success_sync(key)
        call.probe = False
        if d.old != d.state:
            self._emit(key, d, call.account)
        return None

    async def _record_shared(self, call: CallInfo, key: str, failure: bool) -> None:
        if failure:
            d = await self._storage.breaker_failure(key, self.policy)
        else:
            d = await self._storage.breaker_success(key)
        call.probe = False
        self._emit(key, d, call.account)

    async def refusal(self, call: CallInfo, last: BaseException) -> CircuitOpenError | None:
        """The :class:`CircuitOpenError` refusing the retry of ``call`` whose last attempt
        raised ``last`` when the call's breaker is OPEN now (``None``: not OPEN, or observe
        only). ``may_have_run``: that attempt reached the network with no answer (a timeout
        or a broken connection, :class:`~telethon_guard.classify.Action` ``TRANSIENT`` /
        ``DISCONNECT`` without a Telegram error code). The caller chains it ``from last``."""
        key = call.breaker_key
        if key is None or self._observe:
            return None
        d = await self.state(key)
        if d.state != OPEN:
            return None
        answered = isinstance(last, RPCError)  # Telegram answered (500, -503...): not run
        return CircuitOpenError(key, d.retry_after,
                                refused_retry=f"{call.method} after {type(last).__name__}",
                                may_have_run=not answered)

    async def is_open(self, call: CallInfo) -> bool:
        """``True`` when the call's breaker is OPEN now (the retry layer stops retrying)."""
        key = call.breaker_key
        if key is None or self._observe:
            return False
        d = await self.state(key)
        return d.state == OPEN


__all__ = ["CircuitBreaker", "breaker_key"]
