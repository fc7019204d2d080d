"""In-process guard storage (the default): sliding-window reservations, flood ledger, breakers.

Everything is a plain dict / list on one event loop, so every operation is atomic by
construction (no await inside). The synchronous ``*_sync`` methods are the fast path the layers
use; the async methods wrap them for the :class:`~telethon_guard.storage.GuardStorage` protocol.

Memory is bounded: per-peer limiter keys (``LimitSpec.bounded``) live in an LRU of at most
``max_peer_keys`` entries; every log is trimmed to the longest period of its key; flood entries
are dropped once expired (swept when the table grows).
"""

from __future__ import annotations

import time
from bisect import bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ..config import Windows
from . import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerDecision,
    BreakerPolicy,
    LimitSpec,
    Reservation,
)

_new_tuple = tuple.__new__  # builds a NamedTuple without its Python-level __new__ (fast path)

_TRIM_SLACK = 64
"""Stale slots a key's log may hold beyond twice its largest count before it is trimmed."""
_TRIM_COUNT = 512
"""Largest count the trim threshold follows: a key whose largest count is bigger (e.g.
``rate_limits=((10**9, 1.0),)``, "effectively unlimited") is trimmed by age once its log
holds ``2 * _TRIM_COUNT + _TRIM_SLACK`` slots, or twice its live slots if more: without it
the log kept one slot per call for ever (the threshold was ``2 * count + 64``)."""


def _base_cap(windows: Windows) -> int:
    """The trim threshold of a log with ``windows`` (see :class:`_KeyLog`)."""
    return 2 * min(max((n for n, _ in windows), default=0), _TRIM_COUNT) + _TRIM_SLACK


class _KeyLog:
    """Granted slots (absolute times, ascending) of one limiter key.

    The log is a plain list trimmed lazily: only once it holds more than ``cap`` entries
    (``2 * min(largest count, _TRIM_COUNT) + _TRIM_SLACK``, or twice the live slots at the
    last trim if more) are the slots older than ``now - pmax`` cut off, in one slice: memory
    is bounded by the window's age, whatever the count, at amortized O(1) per slot. A stale
    slot ``x <= now - pmax`` can never delay a reservation (``x + period <= now`` for every
    window), so keeping a few does not change any decision; it saves a trim step per
    reservation. ``w1`` / ``w2`` hold the windows of a 1- or 2-window key ordered by count
    (the fast path's unrolled checks). ``room``: ``min(smallest count, cap + 1)``: a log
    shorter than that needs no trim and has room in every window now (a window of ``n`` calls
    can only be full with ``n`` slots logged), so the slot is ``now`` (or the newest slot's
    time if that is later): the decider's first test.
    """

    __slots__ = ("cap", "log", "pmax", "room", "w1", "w2", "windows")

    def __init__(self, windows: Windows) -> None:
        self.log: list[float] = []
        self.set_windows(windows)

    def set_windows(self, windows: Windows) -> None:
        self.windows = windows
        self.pmax = max((p for _, p in windows), default=0.0)
        self.cap = cap = _base_cap(windows)
        self.room = min(min((n for n, _ in windows), default=cap + 1), cap + 1)
        by_count = sorted(windows)
        self.w1: tuple[int, float] | None = by_count[0] if len(by_count) == 1 else None
        self.w2: tuple[tuple[int, float], tuple[int, float]] | None = (
            (by_count[0], by_count[1]) if len(by_count) == 2 else None)

    def trim(self, now: float) -> int:
        """Drop the slots at or before ``now - pmax``; return the new length."""
        log = self.log
        del log[:bisect_right(log, now - self.pmax)]
        n = len(log)
        # Live slots above the base cap (observe mode records every real send; a huge count):
        # the next trim comes after as many new slots again, so trimming stays amortized O(1);
        # memory stays bounded by twice the live slots (back to the base once the burst ages).
        windows = self.windows
        base = _base_cap(windows)
        self.cap = cap = n * 2 if n * 2 > base else base
        self.room = min(min((c for c, _ in windows), default=cap + 1), cap + 1)
        return n

    def earliest(self, t: float) -> float:
        """The earliest time ``>= t`` at which every window has room (any number of windows)."""
        log = self.log
        n_log = len(log)
        for n, p in self.windows:
            if n_log >= n:
                s = log[-n] + p
                if s > t:
                    t = s
        return t


class _Breaker:
    __slots__ = ("failures", "open_for", "open_until", "probe_until", "state")

    def __init__(self) -> None:
        self.state = CLOSED
        self.failures = 0
        self.open_until = 0.0
        self.open_for = 0.0
        self.probe_until = 0.0


_ALLOW_CLOSED = BreakerDecision("allow", CLOSED, CLOSED, 0.0, 0)
_STAY_CLOSED = BreakerDecision("", CLOSED, CLOSED, 0.0, 0)
# Shared answers (immutable NamedTuples) for the hot path: no breaker, or CLOSED with no failures.


class MemoryStorage:
    """Default in-memory :class:`~telethon_guard.storage.GuardStorage` (``is_local = True``).

    ``clock``: an object with ``now()`` in monotonic seconds (the pipeline's clock, so tests
    with a fake clock see consistent time) or ``None`` for ``time.monotonic``.
    ``max_peer_keys``: cap of bounded (per-peer) limiter keys, least recently used dropped.
    """

    __slots__ = ("_breakers", "_decide", "_flood", "_keys", "_now", "_peers", "max_peer_keys",
                 "peer_evictions", "persist")

    is_local = True
    name = "memory"

    def __init__(self, clock: Any = None, *, max_peer_keys: int = 10_000) -> None:
        self._now: Callable[[], float] = clock.now if clock is not None else time.monotonic
        self._keys: dict[str, _KeyLog] = {}
        self._peers: OrderedDict[str, _KeyLog] = OrderedDict()
        self._flood: dict[str, float] = {}
        self._breakers: dict[str, _Breaker] = {}
        self.max_peer_keys = max_peer_keys
        self.peer_evictions = 0
        self.persist: Any = None
        """Write-through hook (``None``: memory only), e.g. a
        :class:`~telethon_guard.storage.sqlite.SQLiteStore`: told of every flood block recorded
        or cleared and every breaker opening or closing (never on the per-call fast paths)."""
        # Made on the first reserve_fast: each RateLimiter has its own decider, so this one
        # serves only direct reserve_sync / reserve_fast callers (a closure: ~0.8 KiB).
        self._decide: Callable[[Sequence[LimitSpec]], tuple[float, Any]] | None = None

    # ------------------------------------------------------------------ limiter
    def _keylog(self, spec: LimitSpec) -> _KeyLog:
        key, windows, bounded = spec
        if bounded:
            peers = self._peers
            kl = peers.get(key)
            if kl is None:
                kl = peers[key] = _KeyLog(windows)
                if len(peers) > self.max_peer_keys:
                    peers.popitem(last=False)
                    self.peer_evictions += 1
            else:
                peers.move_to_end(key)
        else:
            kl = self._keys.get(key)
            if kl is None:
                kl = self._keys[key] = _KeyLog(windows)
        if kl.windows is not windows:
            kl.set_windows(windows)
        return kl

    def reserve_sync(self, specs: Sequence[LimitSpec], observe: bool = False) -> Reservation:
        """Sync :meth:`reserve`: the earliest slot free in every window, committed at once."""
        return _new_tuple(Reservation, self.reserve_fast(specs, observe))

    def reserve_fast(self, specs: Sequence[LimitSpec], observe: bool = False,
                     ) -> tuple[float, Any]:
        """:meth:`reserve_sync` returning a plain ``(delay, token)`` tuple: the limiter's hot
        path (building a NamedTuple costs more than the decision's arithmetic)."""
        if observe:
            return self._reserve_many(specs, True)
        decide = self._decide
        if decide is None:
            decide = self._decide = self.decider()
        return decide(specs)

    def decider(self) -> Callable[[Sequence[LimitSpec]], tuple[float, Any]]:
        """A new ``decide(specs) -> (delay, token)`` function: :meth:`reserve_fast` without
        ``observe``, specialised for the common case (one key, one or two windows).

        It is a closure over this storage's tables (no attribute look-ups on ``self``) that
        remembers the last spec *tuple* it saw together with that key's log: the pipeline
        passes the same cached tuple for every call of one (account, DC, method), so a run of
        such calls skips the key look-up. Windows are re-checked on every hit (a learned pace
        changes them), per-peer keys (LRU) and several keys take the general path. Each
        :class:`~telethon_guard.limiter.RateLimiter` gets its own decider.
        """
        keys = self._keys
        now_fn = self._now
        keylog = self._keylog
        many = self._reserve_many
        last_specs: object = None
        last_kl = _KeyLog(())
        last_windows: Windows = ()

        def decide(specs: Sequence[LimitSpec]) -> tuple[float, Any]:
            nonlocal last_specs, last_kl, last_windows
            kl = last_kl
            if specs is not last_specs or kl.windows is not last_windows:
                if len(specs) != 1 or (spec := specs[0])[2]:
                    return many(specs, False)
                key, windows, _ = spec
                kl_ = keys.get(key)
                if kl_ is None:
                    kl_ = keylog(spec)
                elif kl_.windows is not windows:  # a learned pace changes its windows
                    kl_.set_windows(windows)
                kl = kl_
                if type(specs) is tuple:  # immutable: identity implies the same specs
                    last_specs = specs
                    last_kl = kl
                    last_windows = windows
            now = now_fn()
            log = kl.log
            n_log = len(log)
            if n_log < kl.room and (not n_log or log[-1] <= now):
                # Far from full (room in every window, no trim due): the slot is now.
                log.append(now)
                return (0.0, now)
            if n_log > kl.cap:
                n_log = kl.trim(now)
            if not n_log:
                log.append(now)
                return (0.0, now)
            t = now
            w2 = kl.w2
            if w2 is not None:
                (n, p), (n2, p2) = w2  # n <= n2: no room check for n2 without one for n
                if n_log >= n:
                    s = log[-n] + p
                    if s > t:
                        t = s
                    if n_log >= n2:
                        s = log[-n2] + p2
                        if s > t:
                            t = s
            else:
                w1 = kl.w1
                if w1 is not None:
                    n, p = w1
                    if n_log >= n:
                        s = log[-n] + p
                        if s > t:
                            t = s
                else:
                    t = kl.earliest(t)
            if log[-1] > t:
                insort(log, t)
            else:
                log.append(t)
            return (t - now, t)

        return decide

    def _reserve_many(self, specs: Sequence[LimitSpec], observe: bool) -> tuple[float, Any]:
        """The general reservation: any number of keys, per-peer keys, observe mode."""
        now = self._now()
        t = now
        kls = []
        for spec in specs:
            kl = self._keylog(spec)
            if len(kl.log) > kl.cap:
                kl.trim(now)
            t = kl.earliest(t)
            kls.append(kl)
        slot = now if observe else t
        for kl in kls:
            log = kl.log
            if not log or log[-1] <= slot:
                log.append(slot)
            else:
                insort(log, slot)
        return (t - now, slot)

    def release_sync(self, specs: Sequence[LimitSpec], token: Any) -> None:
        """Sync :meth:`release`: remove the slot ``token`` from every key's log."""
        for key, _windows, bounded in specs:
            kl = (self._peers if bounded else self._keys).get(key)
            if kl is None:
                continue
            log = kl.log
            # Newest slots sit at the right end; search from there.
            for i in range(len(log) - 1, -1, -1):
                if log[i] == token:
                    del log[i]
                    break
                if log[i] < token:
                    break

    def seed_sync(self, spec: LimitSpec, ages: Sequence[float]) -> None:
        """Sync :meth:`seed`: insert past slots ``now - age`` (kept sorted, trimmed)."""
        now = self._now()
        kl = self._keylog(spec)
        log = kl.log
        for age in ages:
            t = now - age
            if t > now - kl.pmax:
                insort(log, t)

    def key_count(self) -> tuple[int, int]:
        """(unbounded keys, bounded per-peer keys) currently held."""
        return len(self._keys), len(self._peers)

    def slots(self, key: str) -> list[float]:
        """Live slots of ``key`` (absolute clock times within its longest period; stale ones
        not trimmed yet are left out), for stats and tests."""
        kl = self._keys.get(key) or self._peers.get(key)
        if kl is None:
            return []
        horizon = self._now() - kl.pmax
        return [x for x in kl.log if x > horizon]

    def delay_sync(self, specs: Sequence[LimitSpec]) -> float:
        """Seconds until a slot is free in every window of ``specs`` (0.0: now), reserving
        nothing and creating no key (a peek; the limiter uses it on its slow path only)."""
        now = self._now()
        t = now
        for key, windows, bounded in specs:
            kl = (self._peers if bounded else self._keys).get(key)
            if kl is None:
                continue
            log = kl.log
            horizon = now - max((p for _, p in windows), default=0.0)
            live = [x for x in log if x > horizon]
            for n, p in windows:
                if len(live) >= n:
                    s = live[-n] + p
                    if s > t:
                        t = s
        return t - now

    # ------------------------------------------------------------------ flood ledger
    def flood_block_sync(self, scope: str, seconds: float) -> float:
        now = self._now()
        until = now + seconds
        # Exactly ``seconds`` when this block wins: ``(now + seconds) - now`` can be off by an
        # ulp (FLOOD_WAIT_1658 came back as 1658.0000000000005, i.e. ``seconds`` 1659).
        left = float(seconds)
        old = self._flood.get(scope, 0.0)
        if old > until:
            until = old
            left = until - now
        self._flood[scope] = until
        if len(self._flood) > 1024:
            self._sweep(now)
        if self.persist is not None:
            self.persist.flood_saved(scope, left)
        return left

    def restore_flood(self, scope: str, seconds: float) -> None:
        """Merge a block of ``seconds`` from now loaded from durable storage (keeps a later
        end; not written back through :attr:`persist`)."""
        until = self._now() + seconds
        if self._flood.get(scope, 0.0) < until:
            self._flood[scope] = until

    def flood_left_sync(self, scope: str) -> float:
        until = self._flood.get(scope)
        if until is None:
            return 0.0
        left = until - self._now()
        if left <= 0:
            del self._flood[scope]
            return 0.0
        return left

    def flood_table(self) -> dict[str, float]:
        """The live flood table ``{scope: clock time the block ends}`` (read only; may hold
        expired entries). Empty: nothing is blocked (the ledger's fast path)."""
        return self._flood

    def breaker_table(self) -> dict[str, Any]:
        """The live breaker table ``{key: breaker}`` (read only). A key that is absent, or
        whose breaker's ``state`` is ``CLOSED`` with ``failures == 0``, lets every call
        through and a success does not change it (the straight lane's check,
        :mod:`telethon_guard.lane`)."""
        return self._breakers

    def flood_clear_sync(self, scope: str) -> None:
        self._flood.pop(scope, None)
        if self.persist is not None:
            self.persist.flood_cleared(scope)

    def flood_scopes(self) -> dict[str, float]:
        """Blocked scopes with seconds left (for stats)."""
        now = self._now()
        return {s: u - now for s, u in self._flood.items() if u > now}

    def _sweep(self, now: float) -> None:
        for scope in [s for s, u in self._flood.items() if u <= now]:
            del self._flood[scope]

    # ------------------------------------------------------------------ breaker
    def _breaker(self, key: str) -> _Breaker:
        b = self._breakers.get(key)
        if b is None:
            b = self._breakers[key] = _Breaker()
        return b

    def breaker_acquire_sync(self, key: str, lease: float) -> BreakerDecision:
        b = self._breakers.get(key)
        if b is None:
            return _ALLOW_CLOSED
        if b.state == CLOSED:
            return (_ALLOW_CLOSED if not b.failures
                    else BreakerDecision("allow", CLOSED, CLOSED, 0.0, b.failures))
        now = self._now()
        old = b.state
        if old == OPEN:
            if now < b.open_until:
                return BreakerDecision("reject", OPEN, OPEN, b.open_until - now, b.failures)
            b.state = HALF_OPEN
            b.probe_until = now + lease
            return BreakerDecision("probe", HALF_OPEN, OPEN, 0.0, b.failures)
        # HALF_OPEN
        if b.probe_until > now:
            return BreakerDecision("reject", HALF_OPEN, HALF_OPEN, b.probe_until - now,
                                   b.failures)
        b.probe_until = now + lease
        return BreakerDecision("probe", HALF_OPEN, HALF_OPEN, 0.0, b.failures)

    def breaker_failure_sync(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        b = self._breaker(key)
        now = self._now()
        old = b.state
        if old == OPEN:
            b.failures += 1
            return BreakerDecision("", OPEN, OPEN, max(0.0, b.open_until - now), b.failures)
        b.failures += 1
        if old == HALF_OPEN:
            b.open_for = min(policy.max_open, max(policy.open_seconds, b.open_for)
                             * policy.growth)
        elif b.failures >= policy.threshold:
            b.open_for = policy.open_seconds
        else:
            return BreakerDecision("", CLOSED, CLOSED, 0.0, b.failures)
        b.state = OPEN
        b.open_until = now + b.open_for
        b.probe_until = 0.0
        if self.persist is not None:
            self.persist.breaker_saved(key, OPEN, b.failures, b.open_for, b.open_for)
        return BreakerDecision("", OPEN, old, b.open_for, b.failures)

    def restore_breaker(self, key: str, failures: int, open_left: float,
                        open_for: float) -> None:
        """Merge an OPEN breaker loaded from durable storage: OPEN for ``open_left`` more
        seconds (0: the next call is the HALF_OPEN probe), ``open_for`` the current open time
        (probe failures grow it). A breaker already OPEN longer is kept; not written back."""
        b = self._breaker(key)
        until = self._now() + open_left
        if b.state == OPEN and b.open_until >= until:
            return
        if b.state == HALF_OPEN and open_left <= 0:
            return
        b.state = OPEN
        b.open_until = until
        b.open_for = max(b.open_for, open_for)
        b.failures = max(b.failures, failures)
        b.probe_until = 0.0

    def breaker_success_sync(self, key: str) -> BreakerDecision:
        b = self._breakers.get(key)
        if b is None:
            return _STAY_CLOSED
        old = b.state
        if old == OPEN:
            # An answer from a call started before the breaker opened: keep OPEN, the probe
            # decides.
            return BreakerDecision("", OPEN, OPEN, max(0.0, b.open_until - self._now()),
                                   b.failures)
        b.failures = 0
        if old == HALF_OPEN:
            b.state = CLOSED
            b.open_for = 0.0
            b.probe_until = 0.0
            if self.persist is not None:
                self.persist.breaker_saved(key, CLOSED, 0, 0.0, 0.0)
            return BreakerDecision("", CLOSED, old, 0.0, 0)
        return _STAY_CLOSED

    def breaker_release_probe_sync(self, key: str) -> None:
        b = self._breakers.get(key)
        if b is not None and b.state == HALF_OPEN:
            b.probe_until = 0.0

    def breaker_reconnected_sync(self, key: str) -> BreakerDecision:
        b = self._breakers.get(key)
        if b is None:
            return _STAY_CLOSED
        if b.state != OPEN:
            return self.breaker_state_sync(key)
        b.state = HALF_OPEN
        b.probe_until = 0.0  # no probe out: the next call is the probe
        if self.persist is not None:
            self.persist.breaker_saved(key, HALF_OPEN, b.failures, 0.0, b.open_for)
        return BreakerDecision("", HALF_OPEN, OPEN, 0.0, b.failures)

    def breaker_state_sync(self, key: str) -> BreakerDecision:
        b = self._breakers.get(key)
        if b is None:
            return BreakerDecision("", CLOSED, CLOSED, 0.0, 0)
        # OPEN: seconds until a probe may be sent; HALF_OPEN: seconds left on the probe
        # lease (0: no probe out, the next call is the probe).
        if b.state == OPEN:
            left = max(0.0, b.open_until - self._now())
        elif b.state == HALF_OPEN:
            left = max(0.0, b.probe_until - self._now())
        else:
            left = 0.0
        return BreakerDecision("", b.state, b.state, left, b.failures)

    def breaker_keys(self) -> list[str]:
        return list(self._breakers)

    # ------------------------------------------------------------------ async protocol
    async def reserve(self, specs: Sequence[LimitSpec], *, observe: bool = False,
                      ) -> Reservation:
        return self.reserve_sync(specs, observe)

    async def release(self, specs: Sequence[LimitSpec], token: Any) -> None:
        self.release_sync(specs, token)

    async def seed(self, spec: LimitSpec, ages: Sequence[float]) -> None:
        self.seed_sync(spec, ages)

    async def flood_block(self, scope: str, seconds: float) -> float:
        return self.flood_block_sync(scope, seconds)

    async def flood_left(self, scope: str) -> float:
        return self.flood_left_sync(scope)

    async def flood_clear(self, scope: str) -> None:
        self.flood_clear_sync(scope)

    async def breaker_acquire(self, key: str, lease: float) -> BreakerDecision:
        return self.breaker_acquire_sync(key, lease)

    async def breaker_failure(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        return self.breaker_failure_sync(key, policy)

    async def breaker_success(self, key: str) -> BreakerDecision:
        return self.breaker_success_sync(key)

    async def breaker_release_probe(self, key: str) -> None:
        self.breaker_release_probe_sync(key)

    async def breaker_reconnected(self, key: str) -> BreakerDecision:
        return self.breaker_reconnected_sync(key)

    async def breaker_state(self, key: str) -> BreakerDecision:
        return self.breaker_state_sync(key)

    async def aclose(self) -> None:
        return None


__all__ = ["MemoryStorage"]
