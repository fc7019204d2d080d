"""In-process guard storage (the default): sliding-window reservations, flood ledger, breakers.

Everything is a plain dict / deque on one event loop, so every operation is atomic by
construction (no await inside). The synchronous ``*_sync`` methods are the fast path the layers
use; the async methods wrap them for the :class:`~telethon_guard.storage.GuardStorage` protocol.

Memory is bounded: per-peer limiter keys (``LimitSpec.bounded``) live in an LRU of at most
``max_peer_keys`` entries; every log is trimmed to the longest period of its key; flood entries
are dropped once expired (swept when the table grows).
"""

from __future__ import annotations

import time
from bisect import insort
from collections import OrderedDict, deque
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


class _KeyLog:
    """Granted slots (absolute times, ascending) of one limiter key, trimmed to ``pmax``."""

    __slots__ = ("log", "pmax", "windows")

    def __init__(self, windows: Windows) -> None:
        self.log: deque[float] = deque()
        self.windows = windows
        self.pmax = max((p for _, p in windows), default=0.0)


class _Breaker:
    __slots__ = ("failures", "open_for", "open_until", "probe_until", "state")

    def __init__(self) -> None:
        self.state = CLOSED
        self.failures = 0
        self.open_until = 0.0
        self.open_for = 0.0
        self.probe_until = 0.0


class MemoryStorage:
    """Default in-memory :class:`~telethon_guard.storage.GuardStorage` (``is_local = True``).

    ``clock``: an object with ``now()`` in monotonic seconds (the pipeline's clock, so tests
    with a fake clock see consistent time) or ``None`` for ``time.monotonic``.
    ``max_peer_keys``: cap of bounded (per-peer) limiter keys, least recently used dropped.
    """

    __slots__ = ("_breakers", "_flood", "_keys", "_now", "_peers", "max_peer_keys",
                 "peer_evictions")

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
            kl.windows = windows
            kl.pmax = max((p for _, p in windows), default=0.0)
        return kl

    def reserve_sync(self, specs: Sequence[LimitSpec], observe: bool = False) -> Reservation:
        """Sync :meth:`reserve`: the earliest slot free in every window, committed at once."""
        return _new_tuple(Reservation, self.reserve_fast(specs, observe))

    def reserve_fast(self, specs: Sequence[LimitSpec], observe: bool = False,
                     ) -> tuple[float, Any]:
        """:meth:`reserve_sync` returning a plain ``(delay, token)`` tuple: the limiter's hot
        path (building a NamedTuple costs more than the decision's arithmetic)."""
        now = self._now()
        if len(specs) == 1:
            # Fast path (one key, the common case): no helper calls, no temporary list.
            key, windows, bounded = specs[0]
            kl = None if bounded else self._keys.get(key)
            if kl is None or kl.windows is not windows:
                kl = self._keylog(specs[0])
            log = kl.log
            horizon = now - kl.pmax
            while log and log[0] <= horizon:
                log.popleft()
            t = now
            n_log = len(log)
            for n, p in windows:
                if n_log >= n:
                    s = log[-n] + p
                    if s > t:
                        t = s
            slot = now if observe else t
            if not log or log[-1] <= slot:
                log.append(slot)
            else:
                insort(log, slot)
            return (t - now, slot)
        t = now
        logs = []
        for spec in specs:
            kl = self._keylog(spec)
            log = kl.log
            horizon = now - kl.pmax
            while log and log[0] <= horizon:
                log.popleft()
            n_log = len(log)
            for n, p in kl.windows:
                if n_log >= n:
                    s = log[-n] + p
                    if s > t:
                        t = s
            logs.append(log)
        slot = now if observe else t
        for log in logs:
            if not log or log[-1] <= slot:
                log.append(slot)
            else:
                insort(log, slot)
        return (t - now, slot)

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
        """Recorded slots of ``key`` (absolute clock times), for stats and tests."""
        kl = self._keys.get(key) or self._peers.get(key)
        return list(kl.log) if kl is not None else []

    # ------------------------------------------------------------------ flood ledger
    def flood_block_sync(self, scope: str, seconds: float) -> float:
        now = self._now()
        until = now + seconds
        old = self._flood.get(scope, 0.0)
        if old > until:
            until = old
        self._flood[scope] = until
        if len(self._flood) > 1024:
            self._sweep(now)
        return until - now

    def flood_left_sync(self, scope: str) -> float:
        until = self._flood.get(scope)
        if until is None:
            return 0.0
        left = until - self._now()
        if left <= 0:
            del self._flood[scope]
            return 0.0
        return left

    def flood_clear_sync(self, scope: str) -> None:
        self._flood.pop(scope, None)

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
        if b is None or b.state == CLOSED:
            return BreakerDecision("allow", CLOSED, CLOSED, 0.0, b.failures if b else 0)
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
        return BreakerDecision("", OPEN, old, b.open_for, b.failures)

    def breaker_success_sync(self, key: str) -> BreakerDecision:
        b = self._breakers.get(key)
        if b is None:
            return BreakerDecision("", CLOSED, CLOSED, 0.0, 0)
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
        return BreakerDecision("", CLOSED, old, 0.0, 0)

    def breaker_release_probe_sync(self, key: str) -> None:
        b = self._breakers.get(key)
        if b is not None and b.state == HALF_OPEN:
            b.probe_until = 0.0

    def breaker_state_sync(self, key: str) -> BreakerDecision:
        b = self._breakers.get(key)
        if b is None:
            return BreakerDecision("", CLOSED, CLOSED, 0.0, 0)
        left = max(0.0, b.open_until - self._now()) if b.state == OPEN else 0.0
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

    async def breaker_state(self, key: str) -> BreakerDecision:
        return self.breaker_state_sync(key)

    async def aclose(self) -> None:
        return None


__all__ = ["MemoryStorage"]
