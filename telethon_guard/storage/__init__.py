"""The storage interface: guard state several processes must agree on.

Held here: rate-limiter reservations, flood-ledger entries (FLOOD_WAIT, SLOWMODE, FLOOD_PREMIUM
scopes) and circuit-breaker state. The layers call the storage with plain values (strings,
floats, tuples) and **relative** durations in seconds; absolute times never cross the
interface, so a backend may keep time on its own clock (Redis: ``TIME`` on the server, so hosts
with skewed clocks agree). Opaque ``token`` values returned by :meth:`GuardStorage.reserve` are
handed back unchanged to :meth:`GuardStorage.release`.

Rate limits are sliding windows: a key with windows ``((10, 1.0), (200, 60.0))`` grants at most
10 requests in any 1 s and 200 in any 60 s. A reservation computes and commits its slot in one
atomic step (no check-then-sleep race): the slot is the earliest time at which *every* window of
*every* key of the call has room, and it is recorded in all of them. Slots never go backwards, so
waiters are served first come, first served. A Redis backend implements this as one Lua script
(one round trip per decision) over one sorted set per key, trimmed by the longest period and
expiring after it.

Local backends (``is_local = True``, e.g. :class:`~telethon_guard.storage.memory.MemoryStorage`)
also implement :class:`LocalGuardStorage`: the same operations as plain synchronous methods, which
the layers use directly so an in-memory decision costs no coroutine and no await.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..config import Windows

CLOSED = "CLOSED"
OPEN = "OPEN"
HALF_OPEN = "HALF_OPEN"


class LimitSpec(NamedTuple):
    """One limiter key of a call: ``key`` (e.g. ``"acct:42/dc:2/method:messages.getHistory"``),
    its ``windows`` and whether the key is ``bounded`` (per-peer keys: the backend may drop the
    least recently used ones beyond its cap, e.g. ``GuardConfig.max_peer_keys``)."""

    key: str
    windows: Windows
    bounded: bool = False


class Reservation(NamedTuple):
    """A committed limiter slot: start after ``delay`` seconds; ``token`` releases it."""

    delay: float
    token: Any


class BreakerDecision(NamedTuple):
    """Answer of :meth:`GuardStorage.breaker_acquire` and the transitions.

    ``decision``: ``"allow"`` (CLOSED), ``"probe"`` (this caller is the one HALF_OPEN probe) or
    ``"reject"`` (OPEN, or HALF_OPEN with the probe taken). ``state`` is the state after the
    operation, ``old`` the state before it (equal when nothing changed), ``retry_after`` the
    seconds until a probe may be tried (0 when not OPEN), ``failures`` the consecutive failures.
    """

    decision: str
    state: str
    old: str
    retry_after: float
    failures: int = 0


class BreakerPolicy(NamedTuple):
    """Breaker settings passed with each failure: open after ``threshold`` consecutive failures
    for ``open_seconds``, times ``growth`` after each failed probe, at most ``max_open``."""

    threshold: int
    open_seconds: float
    growth: float
    max_open: float


@runtime_checkable
class GuardStorage(Protocol):
    """Async interface every backend implements (memory, Redis). All durations in seconds."""

    is_local: bool
    """``True`` when the backend also implements :class:`LocalGuardStorage` (sync fast path)."""
    name: str
    """Short backend name for events/logs (``"memory"``, ``"redis"``); no credentials."""

    async def reserve(self, specs: Sequence[LimitSpec], *, observe: bool = False,
                      ) -> Reservation:
        """Atomically reserve the earliest slot free in every window of every key in ``specs``
        and record it in all of them; return the delay until it and a release token.
        ``observe=True`` (observe-only mode): record *now* and return the delay that would
        have been needed."""
        ...

    async def release(self, specs: Sequence[LimitSpec], token: Any) -> None:
        """Give back a reservation not used (caller cancelled / deadline): later reservations
        computed afterwards may take its place. Unknown tokens are ignored."""
        ...

    async def seed(self, spec: LimitSpec, ages: Sequence[float]) -> None:
        """Record past slots on ``spec.key``, ``ages`` seconds ago each (the calls made before
        a pace was learned, so the new window starts with the history it was learned from)."""
        ...

    async def flood_block(self, scope: str, seconds: float) -> float:
        """Record ``scope`` blocked for ``seconds`` from now (keeping a later existing end);
        return the seconds left after the merge. Entries expire when the block ends."""
        ...

    async def flood_left(self, scope: str) -> float:
        """Seconds ``scope`` remains blocked (0.0 when free)."""
        ...

    async def flood_clear(self, scope: str) -> None:
        """Remove the block of ``scope``."""
        ...

    async def breaker_acquire(self, key: str, lease: float) -> BreakerDecision:
        """Ask to make a call through breaker ``key``. OPEN past its time becomes HALF_OPEN and
        this caller gets the single probe, leased for ``lease`` seconds (a crashed prober does
        not keep the breaker HALF_OPEN forever)."""
        ...

    async def breaker_failure(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        """Record a failure (transport error, timeout, 5xx); may open the breaker."""
        ...

    async def breaker_success(self, key: str) -> BreakerDecision:
        """Record a success (any answer from Telegram); HALF_OPEN becomes CLOSED."""
        ...

    async def breaker_release_probe(self, key: str) -> None:
        """The probe holder ended without a verdict (cancelled, blocked locally): free the probe."""
        ...

    async def breaker_reconnected(self, key: str) -> BreakerDecision:
        """The connection to the breaker's DC was re-established (the server answered on it):
        OPEN becomes HALF_OPEN with no probe out, so the next call is the probe (failures and
        the open time kept: a failed probe re-opens with its backoff). Any other state is left
        as it is. Returns the state after (``old``: before)."""
        ...

    async def breaker_state(self, key: str) -> BreakerDecision:
        """Current state of ``key`` without changing it (``decision`` is ``""``);
        ``retry_after``: seconds until a probe may be sent (OPEN: the open time left;
        HALF_OPEN: the probe lease left, 0 when no probe is out)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the storage must not be used afterwards."""
        ...


@runtime_checkable
class LocalGuardStorage(GuardStorage, Protocol):
    """Synchronous twins of the :class:`GuardStorage` operations (``is_local = True``), and the
    read-only views the layers, stats and health use. Every name here is used by a layer; a
    local backend implements all of them (nothing is probed with ``getattr``)."""

    def reserve_sync(self, specs: Sequence[LimitSpec], observe: bool = False) -> Reservation: ...

    def decider(self) -> Callable[[Sequence[LimitSpec]], tuple[float, Any]]:
        """A new ``decide(specs) -> (delay, token)``: :meth:`reserve_sync` without ``observe``,
        returning a plain tuple (the limiter's hot path; one per limiter)."""
        ...

    def delay_sync(self, specs: Sequence[LimitSpec]) -> float:
        """Seconds until a slot is free in every window of ``specs``, reserving nothing."""
        ...

    def flood_table(self) -> dict[str, float]:
        """The live flood table ``{scope: clock time the block ends}`` (read only; may hold
        expired entries). Empty: nothing is blocked (the ledger's synchronous check)."""
        ...

    def flood_scopes(self) -> dict[str, float]:
        """Blocked scopes with seconds left (stats)."""
        ...

    def breaker_keys(self) -> list[str]:
        """Keys of every breaker known (stats, health)."""
        ...

    def release_sync(self, specs: Sequence[LimitSpec], token: Any) -> None: ...

    def seed_sync(self, spec: LimitSpec, ages: Sequence[float]) -> None: ...

    def flood_block_sync(self, scope: str, seconds: float) -> float: ...

    def flood_left_sync(self, scope: str) -> float: ...

    def flood_clear_sync(self, scope: str) -> None: ...

    def breaker_acquire_sync(self, key: str, lease: float) -> BreakerDecision: ...

    def breaker_failure_sync(self, key: str, policy: BreakerPolicy) -> BreakerDecision: ...

    def breaker_success_sync(self, key: str) -> BreakerDecision: ...

    def breaker_release_probe_sync(self, key: str) -> None: ...

    def breaker_reconnected_sync(self, key: str) -> BreakerDecision: ...

    def breaker_state_sync(self, key: str) -> BreakerDecision: ...


class Admission(NamedTuple):
    """Answer of :meth:`AdmitStorage.admit`: the breaker's acquire decision; the longest
    flood block among the scopes asked (``flood_left`` seconds, ``flood_index`` its position,
    ``-1`` when none is blocked); the limiter reservation, ``None`` when nothing was reserved
    (the breaker rejected, a scope is blocked, or no limiter keys were asked); ``pace``: when
    a pace was asked (``admit(..., pace=...)``), the shared pace record if it changed since
    the version given (``""``: none), ``None`` when unchanged or not asked
    (:mod:`telethon_guard.shared_pace`)."""

    breaker: BreakerDecision
    flood_left: float
    flood_index: int
    reservation: Reservation | None
    pace: str | None = None


@runtime_checkable
class AdmitStorage(Protocol):
    """A shared backend that decides a call's admission (breaker acquire, flood-ledger check,
    limiter reservation) in one round trip; the pipeline asks it first (see
    :mod:`telethon_guard.shared_admit`)."""

    async def admit(self, breaker_key: str, lease: float, scopes: Sequence[str],
                    specs: Sequence[LimitSpec], pace: tuple[str, bytes] | None = None,
                    ) -> Admission:
        """:meth:`GuardStorage.breaker_acquire`, then (unless rejected)
        :meth:`GuardStorage.flood_left` of every scope, then (unless one is blocked)
        :meth:`GuardStorage.reserve` of ``specs``: one atomic step. ``pace``: ``(pace key,
        version seen)``: also read that shared pace record (``Admission.pace``)."""
        ...


@runtime_checkable
class StatsView(Protocol):
    """Synchronous, read-only views for ``client.guard.stats()`` and health, no I/O. Local
    backends answer from their state; :class:`~telethon_guard.storage.redis.RedisStorage`
    answers with what this process last learned from Redis (its own calls, and
    ``refresh_view()`` for blocks recorded by other processes)."""

    def flood_scopes(self) -> dict[str, float]:
        """Blocked scopes with seconds left."""
        ...

    def breaker_keys(self) -> list[str]:
        """Keys of the breakers known."""
        ...

    def breaker_state_sync(self, key: str) -> BreakerDecision:
        """State of breaker ``key`` (``decision`` is ``""``)."""
        ...


def stats_view(storage: GuardStorage) -> StatsView | None:
    """``storage`` when it offers the synchronous :class:`StatsView`, else ``None`` (a
    storage of your own without it: stats show no breakers or blocks from storage)."""
    return storage if isinstance(storage, StatsView) else None


def local_of(storage: GuardStorage) -> LocalGuardStorage | None:
    """``storage`` when it is local (``is_local``: the layers call its synchronous methods),
    else ``None`` (shared: awaited). Each layer asks once, at construction."""
    if storage.is_local:
        assert isinstance(storage, LocalGuardStorage), f"{storage!r}: is_local without the API"
        return storage
    return None


def open_storage(spec: Any, *, clock: Any = None, max_peer_keys: int = 10_000,
                 **options: Any) -> GuardStorage:
    """Build the storage named by ``GuardConfig.storage``: ``None``/``"memory"`` gives a
    :class:`~telethon_guard.storage.memory.MemoryStorage` on ``clock``; an object implementing
    :class:`GuardStorage` is returned as is; ``"redis://..."`` (``rediss://``, ``unix://``) and a
    ``redis.asyncio`` client instance are served by ``telethon_guard.storage.redis`` (raises
    ``GuardConfigError`` when not installed). ``options`` (e.g. ``timeout``,
    ``storage_fallback``, ``events``) go to :class:`~telethon_guard.storage.redis.RedisStorage`;
    ``None`` values are ignored."""
    from ..errors import GuardConfigError

    if spec is None or spec == "memory":
        from .memory import MemoryStorage

        return MemoryStorage(clock=clock, max_peer_keys=max_peer_keys)
    is_redis_client = type(spec).__module__.split(".")[0] == "redis"
    if isinstance(spec, str) or is_redis_client:
        try:
            from . import redis as redis_backend
        except ImportError as exc:
            raise GuardConfigError("storage", f"redis backend unavailable: {exc}") from exc
        opts = {k: v for k, v in options.items() if v is not None}
        opts.setdefault("clock", clock)
        opts.setdefault("max_peer_keys", max_peer_keys)
        result: GuardStorage
        if is_redis_client:
            result = redis_backend.RedisStorage(spec, **opts)
        else:
            result = redis_backend.from_url(spec, **opts)
        return result
    if isinstance(spec, GuardStorage):
        return spec
    raise GuardConfigError("storage", f"{spec!r} does not implement GuardStorage")


__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "Admission",
    "AdmitStorage",
    "BreakerDecision",
    "BreakerPolicy",
    "GuardStorage",
    "LimitSpec",
    "LocalGuardStorage",
    "Reservation",
    "StatsView",
    "local_of",
    "open_storage",
    "stats_view",
]
