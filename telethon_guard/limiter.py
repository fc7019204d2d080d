"""Rate limiter: sliding windows, atomic reservations, FIFO waiters, give-back on cancel.

A call's limits are a list of :class:`~telethon_guard.storage.LimitSpec` (key + windows): the
account-wide ``rate_limits``, the per (account, DC, method) ``method_limits``, the account's
``send_limits``, the per (account, peer) send limits and the adaptive pace learned after a
FLOOD_WAIT (:mod:`telethon_guard.flood`). One storage call reserves the earliest slot free in
*all* of them and commits it in the same step, so two coroutines can never both see "room" and
both go (no check-then-sleep race). Slots are handed out in arrival order (FIFO). A waiter that is
cancelled or cannot make its deadline gives its slot back, and the waiters queued behind it on
the same keys move up: at once with local storage; on shared storage (Redis) in every process
within ``limiter_moveup.MOVE_UP_INTERVAL`` (0.1 s) plus one round trip
(:mod:`telethon_guard.limiter_moveup`).

Why sliding windows rather than a GCRA with a burst: "10 per second" must mean at most 10 in *any*
second (issue 5 measures exactly that); a GCRA / token bucket with burst ``N`` lets up to
``2N - 1`` through in some one-second interval. The reservation log costs ``O(count)`` memory
per key (trimmed to the key's longest period once it outgrows twice its largest count); per-peer
keys are capped (LRU).

Fast path: with local storage and room in every window, :meth:`RateLimiter.decide` is a plain
synchronous call (no coroutine, no await, no event or log line); :class:`LimitKeys` hands the
same cached spec tuple to every call of one (account, DC, method), and the storage's decider
specialises one key with one or two windows. ``benchmarks/limiter_cost.py`` measures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .call import CallInfo
from .clock import Clock, TimerHandle
from .config import GuardConfig, Windows
from .errors import DeadlineExceeded, FloodWaitBlocked
from .events import (
    EVENT_ROUTE,
    EventBus,
    FloodBlocked,
    ObservedDelay,
    RequestLimited,
    redact_peer,
)
from .flood_scope import is_chat_write
from .keys import (
    account_key,
    chat_flood_key,
    is_private_peer,
    is_send,
    method_flood_key,
    method_limit_key,
    pace_key,
    peer_limit_key,
    sends_key,
    transfers_key,
)
from .limiter_moveup import MoveUpStorage, SharedMoveUp
from .network_budget import network_budget
from .storage import GuardStorage, LimitSpec, local_of

log = logging.getLogger("telethon_guard.limiter")
Next = Callable[[CallInfo], Awaitable[Any]]

def with_margin(windows: Windows, margin: float) -> Windows:
    """``windows`` with ``margin`` seconds added to every period (``GuardConfig.rate_margin``)."""
    if not margin:
        return windows
    return tuple((n, p + margin) for n, p in windows)


class _Waiter:
    __slots__ = ("fut", "keys", "route", "specs", "timer", "token", "wake_at")

    def __init__(self, specs: Sequence[LimitSpec], token: Any, wake_at: float,
                 fut: asyncio.Future[None]) -> None:
        self.specs = specs
        self.keys = frozenset(s.key for s in specs)
        self.token = token
        self.wake_at = wake_at
        self.fut = fut
        self.timer: TimerHandle | None = None
        # The waiting client's event bus when the limiter is shared (EVENT_ROUTE, else None):
        # its stats count its own waiters (RateLimiter.queue_length_of).
        self.route: Any = EVENT_ROUTE.get()


class RateLimiter:
    """Reserves slots in ``storage`` and waits for them on ``clock``.

    ``observe=True``: never waits; reports the delay it would have imposed as
    :class:`~telethon_guard.events.ObservedDelay`.

    ``decide(specs) -> (delay, token)`` is the synchronous decision (local storage only; raises
    ``TypeError`` otherwise): it reserves and commits the earliest slot; ``delay <= 0`` means
    "go now" (the slot is already consumed), else the caller must wait ``delay`` seconds (or
    use :meth:`acquire`, which does). It is the storage's own decision function
    (``MemoryStorage.decider()``, else its ``reserve_fast`` / ``reserve_sync``) bound at
    construction, so the decision costs one call. Nothing is logged or emitted on that path.
    """

    __slots__ = ("_clock", "_events", "_local", "_storage", "_tasks", "_waiters", "decide",
                 "decide_local", "mover", "observe", "redact")

    def __init__(self, storage: GuardStorage, clock: Clock, events: EventBus | None = None, *,
                 observe: bool = False, redact: bool = True) -> None:
        self._storage = storage
        local = self._local = local_of(storage)  # the local/shared choice, once
        self._clock = clock
        self._events = events
        self._waiters: dict[_Waiter, None] = {}  # insertion order == reservation order
        self._tasks: set[asyncio.Task[Any]] | None = None  # made on the first task (216 B)
        self.observe = observe
        self.redact = redact
        # ``decide_local(specs)``: the synchronous decision (local storage), else ``None``.
        self.decide_local: Callable[[Sequence[LimitSpec]], tuple[float, Any]] | None
        if local is None:
            self.decide_local = None
        elif observe:
            self.decide_local = functools.partial(local.reserve_sync, observe=True)
        else:
            self.decide_local = local.decider()
        self.decide: Callable[[Sequence[LimitSpec]], tuple[float, Any]] = (
            self.decide_local if self.decide_local is not None else self._no_local_decide)
        # Shared storage: waiters move up to slots given back by any process.
        self.mover: SharedMoveUp | None = (
            SharedMoveUp(storage, clock, self._waiters, self._arm)
            if local is None and not observe and isinstance(storage, MoveUpStorage) else None)

    @property
    def storage(self) -> GuardStorage:
        """The storage the limiter reserves in."""
        return self._storage

    @property
    def clock(self) -> Clock:
        """The guard clock the limiter waits on."""
        return self._clock

    @property
    def queue_length(self) -> int:
        """Number of calls waiting for a slot (this process)."""
        return len(self._waiters)

    def queue_length_of(self, route: Any) -> int:
        """Calls waiting for a slot that were made under the event route ``route`` (one
        client's bus, when several clients share this limiter: ``EVENT_ROUTE``)."""
        return sum(1 for w in self._waiters if w.route is route)

    def _no_local_decide(self, specs: Sequence[LimitSpec], observe: bool = False,
                         ) -> tuple[float, Any]:
        raise TypeError("decide() needs a local storage; use acquire()")

    async def acquire(self, specs: Sequence[LimitSpec], *, deadline_at: float | None = None,
                      method: str = "", account: str | None = None,
                      budget: float | None = None) -> float:
        """Wait for a slot in every window of ``specs``; return the seconds waited.

        Raises :class:`~telethon_guard.errors.DeadlineExceeded` at once (slot given back) when
        the slot lies beyond ``deadline_at`` (absolute clock time). Cancellation gives the slot
        back and lets the waiters behind move up, then propagates unchanged.
        """
        if not specs:
            return 0.0
        decide = self.decide_local
        res: tuple[float, Any]
        if decide is not None:
            res = decide(specs)
        else:
            res = await self.reserve(specs)
        if res[0] <= 0:
            return 0.0
        return await self.wait(specs, res, deadline_at, method, account, budget)

    async def reserve(self, specs: Sequence[LimitSpec]) -> tuple[float, Any]:
        """Reserve the earliest slot of ``specs`` (any storage): ``(delay, token)``."""
        decide = self.decide_local
        if decide is not None:
            return decide(specs)
        return await self._storage.reserve(specs, observe=self.observe)

    def _key_name(self, specs: Sequence[LimitSpec]) -> str:
        name = ",".join(s.key for s in specs)
        return redact_peer(name) if self.redact else name

    async def wait(self, specs: Sequence[LimitSpec], res: tuple[float, Any],
                    deadline_at: float | None, method: str, account: str | None,
                    budget: float | None) -> float:
        """Wait for the reservation ``res`` (``(delay, token)`` from :meth:`reserve`); return
        the seconds waited. Raises ``DeadlineExceeded`` at once (slot given back) when the slot
        lies beyond ``deadline_at``; cancellation gives the slot back and lets the waiters
        behind move up."""
        clock = self._clock
        delay, token = res
        if self.observe:
            if self._events is not None:
                self._events.emit(ObservedDelay("limiter", self._key_name(specs), delay,
                                                False, method, account))
            return 0.0
        start = clock.now()
        wake_at = start + delay
        if deadline_at is not None and wake_at > deadline_at:
            await self._give_back(specs, token)
            raise DeadlineExceeded(method, budget if budget is not None else
                                   max(0.0, deadline_at - start))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        w = _Waiter(specs, token, wake_at, fut)
        self._waiters[w] = None
        self._arm(w)
        if self.mover is not None:
            self.mover.watch(w)
        try:
            await fut
        except asyncio.CancelledError:
            self._waiters.pop(w, None)
            if w.timer is not None:
                w.timer.cancel()
            await self._give_back(specs, w.token, w)
            raise
        finally:
            self._waiters.pop(w, None)
        waited = clock.now() - start
        if self._events is not None:
            self._events.emit(RequestLimited(self._key_name(specs), waited, method, account))
        return waited

    async def release_now(self, specs: Sequence[LimitSpec], token: Any) -> None:
        """Give a reservation back and wait until it is gone (no waiter moves up)."""
        await self._storage.release(specs, token)

    async def delay_of(self, specs: Sequence[LimitSpec]) -> float:
        """Seconds until every window of ``specs`` has a free slot (0.0: now), reserving
        nothing: a read-only query (the limiter's pace check and the client pool's worker
        routing ask it)."""
        local = self._local
        if local is not None:
            return local.delay_sync(specs)
        res = await self._storage.reserve(specs)
        await self._storage.release(specs, res[1])
        return max(0.0, res[0])

    def pace_blocked(self, call: CallInfo, seconds: float) -> FloodWaitBlocked:
        """The error (and :class:`FloodBlocked` event) for a learned pace's wait that does not
        fit: the scope is the method's FLOOD_WAIT scope ``acct:<a>/method:<m>``."""
        scope = method_flood_key(call.account, call.method)
        if self.redact:
            scope = redact_peer(scope)
        if self._events is not None:
            self._events.emit(FloodBlocked(call.method, scope, seconds, False, call.account))
        err = FloodWaitBlocked(call.request, seconds, method=call.method, scope=scope,
                               from_server=False)
        err.may_have_run = call.may_have_run()
        return err

    def _arm(self, w: _Waiter) -> None:
        fut = w.fut

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        if w.timer is not None:
            w.timer.cancel()
        w.timer = self._clock.call_at(w.wake_at, wake)

    async def _give_back(self, specs: Sequence[LimitSpec], token: Any,
                         gone: _Waiter | None = None) -> None:
        local = self._local
        if local is None:
            # Shared storage: release in the background (bounded by the storage's own
            # timeouts) so cancellation is not delayed by a network round trip; then this
            # process's waiters move up (other processes' at their next move-up round).
            self._background(self._release_shared(specs, token))
            return
        local.release_sync(specs, token)
        if gone is not None:
            self._move_up(gone)

    def interrupt(self, key: str, until: float) -> int:
        """Wake now the waiters (local storage) whose slot on ``key`` lies before clock time
        ``until`` and give their slots back: a FLOOD_WAIT recorded meanwhile blocks the key's
        method until then, so none of them could go at its slot; they return from
        :meth:`wait` at once and the layer sends them back to the flood ledger, which waits
        out the block or refuses them now. Returns how many were woken."""
        local = self._local
        if local is None:
            return 0
        woken = [w for w in self._waiters
                 if key in w.keys and w.wake_at < until and not w.fut.done()]
        for w in woken:
            if w.timer is not None:
                w.timer.cancel()
            local.release_sync(w.specs, w.token)
            w.fut.set_result(None)
        return len(woken)

    async def _release_shared(self, specs: Sequence[LimitSpec], token: Any) -> None:
        await self._storage.release(specs, token)
        if self.mover is not None:
            await self.mover.kick()

    def _move_up(self, gone: _Waiter) -> None:
        """Re-reserve, in FIFO order, the waiters queued behind ``gone`` on shared keys.

        A waiter whose future is already resolved (woken for its slot, or cancelled, but its
        task has not run yet) is left alone: it goes (or gives back) with the slot it holds.
        """
        local = self._local
        assert local is not None
        keys = set(gone.keys)
        later: list[_Waiter] = []
        for w in self._waiters:
            if w.keys & keys and not w.fut.done():
                later.append(w)
                keys |= w.keys
        if not later:
            return
        for w in later:
            local.release_sync(w.specs, w.token)
        now = self._clock.now()
        for w in later:
            delay, w.token = local.reserve_sync(w.specs, False)
            w.wake_at = now + max(0.0, delay)
            self._arm(w)

    def _background(self, aw: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await aw
            except Exception:  # the storage reports outages itself (StorageFallback events)
                log.warning("rate limiter: giving a slot back in the background failed",
                            exc_info=True)

        task = asyncio.get_running_loop().create_task(run())
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = set()
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class LimitKeys:
    """Builds the :class:`LimitSpec` tuple of a call from :class:`GuardConfig`.

    Configured windows get ``GuardConfig.rate_margin`` seconds added to each period.
    Keys: ``acct:<a>`` (rate_limits), ``acct:<a>/dc:<d>/method:<m>`` (method_limits),
    ``acct:<a>/sends`` (send_limits), ``acct:<a>/peer:<id>`` (per-peer, bounded) and
    ``acct:<a>/pace:<m>`` (adaptive pace from ``pace_of(account, method)``, always last).

    The specs that depend only on (account, DC, method) are built once and cached (at most
    ``max_cached`` entries; the cache is cleared when full), so a call with no per-peer limit
    and no learned pace costs one dict lookup and builds no spec or key string; every such call
    gets the same tuple object (which the storage's decider recognises).
    """

    __slots__ = ("_base", "_cfg", "_method", "_no_base", "_pace_of", "_peer_group",
                 "_peer_private", "_rate", "_send", "_sends", "max_cached", "pace_changes_at",
                 "pace_drain", "pace_expedite", "pace_source")

    def __init__(self, config: GuardConfig,
                 pace_of: Callable[[str, str], Windows | None] | None = None, *,
                 pace_changes_at: Callable[[str, str], float | None] | None = None,
                 max_cached: int = 8192) -> None:
        self._cfg = config
        self._pace_of = pace_of
        if pace_changes_at is None:
            # pace_of is usually AdaptivePacer.window: its pacer also knows when a pace's
            # window next changes (AdaptivePacer.changes_at).
            pace_changes_at = getattr(getattr(pace_of, "__self__", None), "changes_at", None)
        self.pace_changes_at = pace_changes_at
        # ... and how long a queue of calls takes to pass under its schedule (drain).
        self.pace_drain: Callable[[str, str, float], float | None] | None = getattr(
            getattr(pace_of, "__self__", None), "drain", None)
        self.pace_source: Any = getattr(pace_of, "__self__", None)
        self.pace_expedite: Callable[[str, str, float], float | None] | None = getattr(
            self.pace_source, "expedite", None)
        """The object whose method ``pace_of`` is (the :class:`~telethon_guard.pacing.
        AdaptivePacer`), or ``None``."""
        self._sends = bool(config.send_limits or config.peer_limits_private
                           or config.peer_limits_group)
        # Configured windows with ``rate_margin`` added to each period (see GuardConfig): the
        # windows every storage (memory and Redis alike) is given.
        m = config.rate_margin
        self._rate = with_margin(config.rate_limits, m)
        self._method = {k: with_margin(v, m) for k, v in config.method_limits.items()}
        self._send = with_margin(config.send_limits, m)
        self._peer_private = with_margin(config.peer_limits_private, m)
        self._peer_group = with_margin(config.peer_limits_group, m)
        self._base: dict[tuple[Any, Any, str], tuple[LimitSpec, ...]] = {}
        # No account-wide or per-method window configured (e.g. adaptive pacing alone): every
        # base spec tuple is (), so none is cached (a cache entry per (account, DC, method)
        # was ~0.5 KiB per client for nothing).
        self._no_base = not self._rate and not self._method
        self.max_cached = max_cached

    @property
    def config(self) -> GuardConfig:
        return self._cfg

    def _build(self, account: Any, dc_id: Any, method: str) -> tuple[LimitSpec, ...]:
        out: list[LimitSpec] = []
        if self._rate:
            out.append(LimitSpec(account_key(account), self._rate))
        mw = self._method.get(method)
        if mw:
            out.append(LimitSpec(method_limit_key(account, dc_id, method), mw))
        base = tuple(out)
        cache = self._base
        if len(cache) >= self.max_cached:
            cache.clear()
        cache[(account, dc_id, method)] = base
        return base

    def base_specs(self, account: str, dc_id: int, method: str) -> tuple[LimitSpec, ...]:
        """The cached spec tuple of ``(account, DC, method)`` without per-peer limits or a
        learned pace (what :meth:`specs` starts from)."""
        if self._no_base:
            return ()
        base = self._base.get((account, dc_id, method))
        return base if base is not None else self._build(account, dc_id, method)

    def specs(self, call: CallInfo) -> tuple[LimitSpec, ...]:
        """The call's limits; an adaptive pace, when learned, is the last one."""
        a = call.account
        m = call.method
        if self._no_base:
            base: tuple[LimitSpec, ...] = ()
        else:
            cached = self._base.get((a, call.dc_id, m))
            base = cached if cached is not None else self._build(a, call.dc_id, m)
        if self._sends and call.peer is not None and is_send(call):
            extra: list[LimitSpec] = []
            if self._send:
                extra.append(LimitSpec(sends_key(a), self._send))
            peer = call.peer
            pw = self._peer_private if is_private_peer(peer) else self._peer_group
            if pw:
                extra.append(LimitSpec(peer_limit_key(a, peer), pw, True))
            if extra:
                base = base + tuple(extra)
        pace_of = self._pace_of
        if pace_of is not None:
            pace = pace_of(a, m)
            if pace:
                base = (*base, LimitSpec(pace_key(a, m), pace))
        return base

    def pace_spec(self, call: CallInfo, specs: Sequence[LimitSpec]) -> LimitSpec | None:
        """The adaptive-pace spec among ``specs`` (built by :meth:`specs`), or ``None``."""
        if self._pace_of is None or not specs:
            return None
        last = specs[-1]
        return last if last.key == pace_key(call.account, call.method) else None


class LedgerBlockedWhileQueued(Exception):
    """Internal: raised by :class:`RateLimitLayer` when a FLOOD_WAIT on the call's method was
    recorded while the call waited for its slot; :class:`~telethon_guard.flood.FloodLedger`
    (the layer above) catches it and checks the ledger again. Never reaches a caller."""


class _PaceGate:
    """Calls held until a learned pace's next change (one gate per (account, method)), in
    arrival order: released together by one timer, in that order, so the call that waited
    longest decides first under the new window (separate sleeps ending at the same instant
    wake in no guaranteed order on an asyncio loop)."""

    __slots__ = ("at", "held", "timer")

    def __init__(self) -> None:
        self.held: deque[asyncio.Future[None]] = deque()
        self.timer: TimerHandle | None = None
        self.at = 0.0


class RateLimitLayer:
    """Pipeline layer: wait for the call's slot (within its deadline), then ``call_next``.

    The decision is synchronous on local storage: a call whose slot is free now (the common
    case) goes straight to ``call_next`` with no coroutine frame of the limiter's own.

    A wait imposed by a *learned* pace (adaptive pacing after a FLOOD_WAIT) is a flood wait
    in the caller's terms, bounded like one by ``min(max_flood_wait, time left until the
    deadline)``. A first flood's pace (a hypothesis) holds its window only until it next
    changes (``AdaptivePacer.changes_at``: the end of the server's wait, a ramp step, the
    drop): a call whose slot lies beyond that change gives the slot back, waits until the
    change and decides again; its expected wait is the time the calls ahead of it take to
    pass under the pace's schedule (``AdaptivePacer.drain``). The call fails at once with
    :class:`~telethon_guard.errors.FloodWaitBlocked` (``from_server=False``, ``seconds`` = the
    pace's expected wait, scope ``acct:<a>/method:<m>``), like a FLOOD_WAIT recorded in the
    ledger, only when the guard knows it cannot make it: that wait does not fit the deadline
    (or ``max_flood_wait``); only that call: the next one decides afresh. A wait imposed by
    configured limits that cannot fit the deadline raises ``DeadlineExceeded`` at once.
    Either way nothing is waited and the reserved slot is given back.

    After a wait, a FLOOD_WAIT recorded on the method meanwhile raises
    :class:`LedgerBlockedWhileQueued` for the flood ledger above (never sent into the block).
    """

    __slots__ = ("_attempt_timeout", "_decide", "_gates", "_specs", "_storage", "keys",
                 "limiter")

    def __init__(self, limiter: RateLimiter, keys: LimitKeys) -> None:
        self.limiter = limiter
        self.keys = keys
        self._specs = keys.specs
        self._attempt_timeout: float | None = keys.config.attempt_timeout
        self._decide = limiter.decide_local  # None: shared storage (awaited)
        self._storage = limiter.storage
        self._gates: dict[tuple[str, str], _PaceGate] = {}
        # A FLOOD_WAIT that changes a pace opens its gate at once (AdaptivePacer.listeners).
        listeners = getattr(keys.pace_source, "listeners", None)
        if isinstance(listeners, list):
            listeners.append(self.pace_changed)

    def pace_changed(self, account: str, method: str) -> None:
        """The pace of ``method`` changed outside its schedule (a FLOOD_WAIT): the calls held
        for it decide again now, and so do those waiting for a slot that the FLOOD_WAIT's block
        covers (local storage: :meth:`RateLimiter.interrupt`); each goes back to the flood
        ledger, which waits the block out or refuses it at once."""
        self._open((account, method))
        local = local_of(self._storage)
        if local is not None:
            left = local.flood_left_sync(method_flood_key(account, method))
            if left > 0:
                self.limiter.interrupt(pace_key(account, method),
                                       self.limiter.clock.now() + left)

    def _open(self, key: tuple[str, str]) -> None:
        gate = self._gates.pop(key, None)
        if gate is None:
            return
        if gate.timer is not None:
            gate.timer.cancel()
        for fut in gate.held:  # in arrival order: their tasks resume in this order
            if not fut.done():
                fut.set_result(None)

    async def _hold(self, call: CallInfo, until: float) -> None:
        """Wait, behind the calls held before it, until the pace's change at clock time
        ``until`` (or until a FLOOD_WAIT changes the pace)."""
        key = (call.account, call.method)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _PaceGate()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.held.append(fut)
        if gate.timer is None or until < gate.at:
            if gate.timer is not None:
                gate.timer.cancel()
            gate.at = until
            gate.timer = self.limiter.clock.call_at(until, functools.partial(self._open, key))
        try:
            await fut
        finally:
            if not fut.done() or fut.cancelled():
                with contextlib.suppress(ValueError):
                    gate.held.remove(fut)
                if not gate.held and self._gates.get(key) is gate:
                    self._open(key)

    def held_ahead(self, call: CallInfo) -> int:
        """Calls of ``call``'s (account, method) held for its pace's next change."""
        gate = self._gates.get((call.account, call.method))
        return len(gate.held) if gate is not None else 0

    def handle(self, call: CallInfo, call_next: Next) -> Awaitable[Any]:
        """Wait for the call's slot, then run ``call_next``. Raises ``FloodWaitBlocked`` at
        once when a learned pace's wait does not fit ``max_flood_wait`` or the deadline,
        ``DeadlineExceeded`` at once when the slot lies beyond ``call.deadline_at``;
        cancellation gives the slot back. :meth:`enter`, then ``call_next(call)`` when the
        slot was free now."""
        slow = self.enter(call, call_next)
        return call_next(call) if slow is None else slow

    def enter(self, call: CallInfo, call_next: Next) -> Awaitable[Any] | None:
        """The synchronous decision (:meth:`Pipeline.invoke`'s fast path calls it): ``None``
        when no window applies or the call's slot is free now (reserved and consumed); else
        the awaitable that waits for the slot (or fails) and then runs ``call_next``."""
        specs = self._specs(call)
        if not specs:
            return None
        decide = self._decide
        if decide is None:
            adm = call.admitted  # shared_admit.py: the slot reserved at admission
            res = adm.take_reservation() if adm is not None else None
            if res is None:
                return self._wait_then(call, specs, None, call_next)
            if res[0] <= 0:
                return None  # slot free now: reserved and consumed
            return self._wait_then(call, adm.specs, res, call_next)
        res = decide(specs)
        if res[0] <= 0:
            return None  # slot free now: reserved and consumed
        return self._wait_then(call, specs, res, call_next)

    async def _wait_then(self, call: CallInfo, specs: Sequence[LimitSpec],
                         res: tuple[float, Any] | None, call_next: Next) -> Any:
        lim = self.limiter
        while True:
            if res is None:
                res = await lim.reserve(specs)
            if res[0] <= 0:
                break
            call.stage = "limiter"
            if not lim.observe:
                slot, until = await self._check_pace(call, specs, res)
                if slot is None:
                    # The pace changes before this call's slot: its wait is not known yet.
                    # No slot is held while waiting for the change (behind the calls held
                    # before it); then decide again.
                    await self._hold(call, until or lim.clock.now())
                    if await self._flood_left(call) > 0:
                        raise LedgerBlockedWhileQueued(call.method)
                    specs = self._specs(call)
                    if not specs:
                        break
                    res = None
                    continue
                res = slot
            dl = call.deadline_at
            if dl is not None:
                # A slot that leaves the attempt less than its network budget fails now.
                dl -= network_budget(call.budget or 0.0, self._attempt_timeout)
            await lim.wait(specs, res, dl, call.method, call.account, call.budget)
            if not lim.observe and await self._flood_left(call) > 0:
                # A FLOOD_WAIT was recorded while this call waited for its slot: never send
                # into it. The slot is spent; the ledger layer above waits (or raises) and
                # sends the call through the limiter again.
                raise LedgerBlockedWhileQueued(call.method)
            break
        return await call_next(call)

    async def _flood_left(self, call: CallInfo) -> float:
        """Seconds left of a FLOOD_WAIT recorded on the call's method scope (the flood
        ledger's ``acct:<a>/method:<m>``) or, for a write to a chat, that chat's writes
        (``acct:<a>/writes:peer:<id>``) or, for a file transfer, its DC's transfers
        (``acct:<a>/dc:<d>/transfers``: a FLOOD_PREMIUM_WAIT, which also teaches the method's
        pace, so transfers wait here for it); slow mode is checked by the ledger before the
        limiter."""
        left = await self._storage.flood_left(method_flood_key(call.account, call.method))
        if call.transfer:  # FLOOD_PREMIUM_WAIT recorded while the call waited for its slot
            left = max(left, await self._storage.flood_left(
                transfers_key(call.account, call.dc_id)))
        if call.peer is not None and is_chat_write(call):  # a chat's write flood (flood_scope)
            left = max(left, await self._storage.flood_left(
                chat_flood_key(call.account, call.peer)))
        return left

    async def _check_pace(self, call: CallInfo, specs: Sequence[LimitSpec],
                          res: tuple[float, Any],
                          ) -> tuple[tuple[float, Any] | None, float | None]:
        """Slow path (the call must wait). Returns ``(reservation, None)`` to wait for, or
        ``(None, at)``: the reservation was given back because the learned pace changes at
        clock time ``at``, before the call's slot; the call waits until then and decides
        again. Raises ``FloodWaitBlocked`` when the pace's wait does not fit
        ``min(max_flood_wait, the deadline)`` and the pace does not change before that."""
        delay = res[0]
        keys = self.keys
        pace = keys.pace_spec(call, specs)
        if pace is None:
            return res, None
        lim = self.limiter
        cap = call.max_flood_wait
        if cap is None:
            cap = keys.config.max_flood_wait
        changes_at = keys.pace_changes_at
        change = changes_at(call.account, call.method) if changes_at is not None else None
        dl = call.deadline_at
        now = lim.clock.now()
        if change is not None and change <= now:
            change = None  # never "wait until now": no zero-time loop
        if (delay <= cap and (dl is None or now + delay < dl)
                and (change is None or now + delay <= change)):
            return res, None  # the whole wait fits and the pace holds until the slot
        # Give the slot back, then measure the pace's own wait (nothing else is committed).
        await lim.release_now(specs, res[1])
        own = delay if len(specs) == 1 else await lim.delay_of((pace,))
        now = lim.clock.now()
        # Held for a change, the call must still leave its attempt the network budget (as a
        # slot must, RateLimiter.wait); a slot that does not is refused there.
        dl_net = (None if dl is None else
                  dl - network_budget(call.budget or 0.0, self._attempt_timeout))
        expedite = keys.pace_expedite
        while True:
            if change is not None and now + own > change:
                # The slot lies beyond the pace's next change (a ramp or relax step, its
                # drop): estimate the wait under the pace's schedule (the calls ahead of this
                # one leave at each step's spacing; none once it is dropped). If even that
                # does not fit, the call cannot make it: refuse now; else hold it until the
                # change and decide again (the estimate assumes no new FLOOD_WAIT).
                expect = own
                drain = keys.pace_drain
                spacing = pace.windows[0][1] / pace.windows[0][0]
                if drain is not None and spacing > 0:
                    # The calls in the window, then those held for the change, then this one.
                    est = drain(call.account, call.method,
                                own / spacing + self.held_ahead(call))
                    if est is not None:
                        expect = est
                if not (expect > cap or (dl_net is not None and now + expect >= dl_net)):
                    return None, change
            else:
                expect = own
                if not (own > cap or (dl is not None and now + own >= dl)):
                    break
            # It does not fit. If a held pace's probe schedule would serve this call in time,
            # the pace probes sooner (AdaptivePacer.expedite); then estimate again, once.
            source = keys.pace_source
            spacing = pace.windows[0][1] / pace.windows[0][0]
            probe = (None if expedite is None or spacing <= 0 else
                     expedite(call.account, call.method, own / spacing + self.held_ahead(call)))
            if (probe is None or probe > cap or (dl_net is not None and now + probe >= dl_net)
                    or not source.commit_expedite(call.account, call.method)):
                raise lim.pace_blocked(call, expect)
            expedite = None
            change = changes_at(call.account, call.method) if changes_at is not None else None
            if change is not None and change <= now:
                change = None
        # The configured limits, not the pace, make the call wait: reserve again (local
        # storage hands out the same slot: nothing ran in between) and wait or fail as usual.
        return await lim.reserve(specs), None


__all__ = [
    "LedgerBlockedWhileQueued",
    "LimitKeys",
    "RateLimitLayer",
    "RateLimiter",
    "with_margin",
]
