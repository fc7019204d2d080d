"""``GuardedClientPool``: many Telegram accounts in one process, keyed by your tenant id.

::

    pool = GuardedClientPool(
        lambda user_id: GuardedTelegramClient(load_session(user_id), API_ID, API_HASH,
                                              storage=pool.storage),  # None: unknown user
        max_connected=200, idle_timeout=300, max_concurrent_connects=4)
    async with pool:
        async with pool.lease(user_id) as client:      # connects on first use
            dialogs = await client.get_dialogs(limit=20)

What the pool does:

* **Lazy.** A tenant's client is built by the factory (sync or async; ``None`` or ``KeyError``
  means "no such tenant": :class:`~telethon_guard.errors.UnknownTenantError`) and connected on
  its first lease, at most ``max_concurrent_connects`` connects at a time (each bounded by
  ``connect_timeout`` seconds, and so is an async factory's await apart from it).
  Connections also take slots of the process's connection budget
  (:mod:`telethon_guard.budget`) inside the guarded sender.
* **Idle.** A client with no lease for ``idle_timeout`` seconds is disconnected and dropped
  (the entry keeps its counters only); the next lease builds it again from the factory.
* **Cap.** At most ``max_connected`` clients are connected (or connecting); a new one
  disconnects the least recently used idle one first, or waits up to ``acquire_timeout``
  seconds for one (then :class:`~telethon_guard.errors.PoolExhaustedError`).
* **Isolation.** Each tenant has its own client and guard: its FLOOD_WAITs, limits, breaker
  and reconnects are keyed by its account. A tenant whose factory or connect fails is
  *broken* for ``broken_retry_after`` seconds: its leases fail at once with
  :class:`~telethon_guard.errors.TenantUnavailableError` (``retry_after``), without taking a
  connect slot from the others. A session already held by another tenant's client (same
  object, file or auth key) is refused with :class:`~telethon_guard.errors.SessionInUseError`.
* **Shared state.** :attr:`GuardedClientPool.storage` is one guard storage the factory may pass
  to every client (``storage=pool.storage``): floods, limits and breakers (keyed by account:
  ``GuardConfig.account``, else the logged-in user's id, ``user:<id>``)
  then outlive a client dropped when idle, and cost one table instead of one per client.
* **Close.** :meth:`GuardedClientPool.close` (or leaving ``async with``) refuses new leases
  (:class:`~telethon_guard.errors.PoolClosedError`), waits up to ``close_timeout`` seconds for
  leases to end, then disconnects every client; a call still running gets ``PoolClosedError``
  from its ``lease`` block. Afterwards the pool holds no client, socket or task.

Worker mode (N accounts serving one workload): :meth:`GuardedClientPool.workers`, see
:mod:`telethon_guard.pool_workers`. All times are seconds on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from typing import Any, TypeVar

from .errors import (
    GuardConfigError,
    PoolClosedError,
    PoolError,
    PoolExhaustedError,
    SessionInUseError,
    TenantUnavailableError,
    UnknownTenantError,
)
from .pool_entry import (
    BROKEN,
    CONNECTED,
    CONNECTING,
    IDLE,
    NEW,
    PoolEntry,
    TenantStats,
    session_keys,
)
from .pool_workers import WorkerRouter
from .storage import GuardStorage

__all__ = ["GuardedClientPool", "TenantStats"]

log = logging.getLogger("telethon_guard.pool")

T = TypeVar("T")
Factory = Callable[[Any], Any]
"""``factory(tenant) -> TelegramClient | None`` (or an awaitable of it)."""


MAX_FAILED_TENANTS = 1000
"""Most tenants the pool remembers that failed (factory or connect) without ever having been
leased; each is kept at most ``broken_retry_after`` seconds (see ``_note_failed``)."""


def _check_hashable(tenant: Any) -> None:
    """:raises TypeError: ``tenant`` is not hashable (a tenant id must be a dict key)."""
    try:
        hash(tenant)
    except TypeError:
        raise TypeError(f"tenant id must be hashable (e.g. an int or str), got "
                        f"{type(tenant).__name__} {tenant!r}") from None


def _number(field: str, value: Any, *, minimum: float = 0.0, allow_none: bool = False,
            integer: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if integer:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise GuardConfigError(field, f"must be an int >= {minimum:g}, got {value!r}")
        return value
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= minimum):
        raise GuardConfigError(field, f"must be a finite number > {minimum:g}, got {value!r}")
    return float(value)


class GuardedClientPool:
    """Guarded clients of many tenants in one process (see the module docstring).

    :param factory: ``factory(tenant)`` returns a not-yet-connected ``TelegramClient`` for the
        tenant (a ``GuardedTelegramClient``; a plain ``TelegramClient`` is guarded with
        :func:`telethon_guard.guard` defaults), or an awaitable of it; ``None`` or ``KeyError``
        for an unknown tenant. Called again after the tenant's client was dropped (idle).
    :param max_connected: most clients connected (or connecting) at once. Default 100.
    :param max_concurrent_connects: most connects in progress at once. Default 4.
    :param idle_timeout: seconds without a lease after which a client is disconnected and
        dropped; ``None``: never. Default 300.0.
    :param connect_timeout: seconds one connect may take, and apart from it an async
        factory (then the tenant is broken: ``TenantUnavailableError`` from a
        ``TimeoutError``). 30.0. A plain (sync) factory cannot be bounded: it blocks the loop.
    :param acquire_timeout: seconds a lease waits for room under ``max_connected``. 30.0.
    :param broken_retry_after: seconds a tenant whose factory or connect failed is refused
        (``TenantUnavailableError.retry_after``). Default 30.0.
    :param close_timeout: seconds :meth:`close` waits for leases to end, and for each
        disconnect. Default 5.0.
    :param storage: the guard storage offered to factories as :attr:`storage` (e.g. a
        ``RedisStorage``); default a new in-memory one.
    :raises GuardConfigError: on an invalid setting, naming it (at construction).
    """

    def __init__(
        self,
        factory: Factory,
        *,
        max_connected: int = 100,
        max_concurrent_connects: int = 4,
        idle_timeout: float | None = 300.0,
        connect_timeout: float = 30.0,
        acquire_timeout: float = 30.0,
        broken_retry_after: float = 30.0,
        close_timeout: float = 5.0,
        storage: GuardStorage | None = None,
    ) -> None:
        if not callable(factory):
            raise GuardConfigError("factory", "must be callable: factory(tenant) -> client")
        self._factory = factory
        self.max_connected: int = _number("max_connected", max_connected, minimum=1,
                                          integer=True)
        self.max_concurrent_connects: int = _number(
            "max_concurrent_connects", max_concurrent_connects, minimum=1, integer=True)
        self.idle_timeout: float | None = _number("idle_timeout", idle_timeout, allow_none=True)
        self.connect_timeout: float = _number("connect_timeout", connect_timeout)
        self.acquire_timeout: float = _number("acquire_timeout", acquire_timeout)
        self.broken_retry_after: float = _number("broken_retry_after", broken_retry_after)
        self.close_timeout: float = _number("close_timeout", close_timeout)
        if storage is None:
            from .storage.memory import MemoryStorage

            storage = MemoryStorage()
        elif not isinstance(storage, GuardStorage):
            raise GuardConfigError("storage", f"{storage!r} does not implement GuardStorage")
        self.storage: GuardStorage = storage
        """Guard storage for the pool's clients (pass ``storage=pool.storage`` in the factory)."""
        self._entries: dict[Any, PoolEntry] = {}
        self._connected: OrderedDict[Any, PoolEntry] = OrderedDict()  # least recent first
        self._owners: dict[tuple[str, Any], Any] = {}  # session key -> tenant
        self._failed: OrderedDict[Any, None] = OrderedDict()  # never-used, broken; oldest first
        self._connect_slots: asyncio.Semaphore | None = None
        self._room: asyncio.Event | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._creating: set[asyncio.Future[Any]] = set()  # async factories running

    # ---- public API ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Tenants the pool has an entry for (connected, idle or broken)."""
        return len(self._entries)

    @property
    def connected(self) -> int:
        """Clients connected or connecting now."""
        return len(self._connected)

    @contextlib.asynccontextmanager
    async def lease(self, tenant: Hashable) -> AsyncIterator[Any]:
        """``async with pool.lease(tenant) as client:`` the tenant's connected client, which
        is not disconnected (idle, cap) while leased.

        :raises TypeError: ``tenant`` is not hashable.
        :raises UnknownTenantError: the factory knows no such tenant.
        :raises TenantUnavailableError: the factory or connect failed (now or within
            ``broken_retry_after`` s). A tenant that failed before ever being leased is
            kept only for that cool-down, and at most :data:`MAX_FAILED_TENANTS` of them.
        :raises SessionInUseError: the session is held by another tenant's client.
        :raises PoolExhaustedError: ``max_connected`` clients are all leased.
        :raises PoolClosedError: the pool is closed, or was closed while the block ran.
        """
        entry = await self._checkout(tenant)
        try:
            yield entry.client
        except ConnectionError as e:  # ClientDisconnectedError among them
            if self._closed and not isinstance(e, PoolError):
                raise PoolClosedError(tenant, f"tenant {tenant!r}: the pool was closed while "
                                      "the call was in flight") from e
            raise
        finally:
            entry.leases -= 1
            entry.last_used = time.monotonic()
            self._notify_room()

    async def call(self, tenant: Hashable, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(client)`` under :meth:`lease` (same errors)."""
        async with self.lease(tenant) as client:
            return await fn(client)

    def tenant_stats(self, tenant: Hashable) -> TenantStats:
        """:class:`TenantStats` of ``tenant``. :raises UnknownTenantError: no entry for it."""
        entry = self._entries.get(tenant)
        if entry is None:
            raise UnknownTenantError(tenant)
        return entry.snapshot()

    def state_of(self, tenant: Hashable) -> str:
        """``"new"``, ``"connecting"``, ``"connected"``, ``"idle"`` or ``"broken"`` (``"new"``
        for a tenant without an entry)."""
        entry = self._entries.get(tenant)
        if entry is None:
            return NEW
        if entry.state == BROKEN and entry.broken_until <= time.monotonic():
            return IDLE
        return entry.state

    def broken_for(self, tenant: Hashable) -> float:
        """Seconds the pool still refuses ``tenant`` (0.0 when it is not broken)."""
        entry = self._entries.get(tenant)
        if entry is None or entry.state != BROKEN:
            return 0.0
        return max(0.0, entry.broken_until - time.monotonic())

    def client_of(self, tenant: Hashable) -> Any:
        """The tenant's current client (connected or not), or ``None``: for inspection only
        (take a :meth:`lease` to make calls)."""
        entry = self._entries.get(tenant)
        return entry.client if entry is not None else None

    def stats(self) -> dict[str, Any]:
        """Pool totals: ``tenants``, ``connected``, ``leased`` (clients with a lease),
        ``broken``, ``idle``, ``by_state`` (``{state: n}``), ``closed``."""
        by_state: dict[str, int] = {}
        now = time.monotonic()
        leased = 0
        for e in self._entries.values():
            st = IDLE if e.state == BROKEN and e.broken_until <= now else e.state
            by_state[st] = by_state.get(st, 0) + 1
            leased += e.leases > 0
        return {"tenants": len(self._entries), "connected": len(self._connected),
                "leased": leased, "broken": by_state.get(BROKEN, 0),
                "idle": by_state.get(IDLE, 0), "by_state": by_state, "closed": self._closed}

    def health(self, *, down_only: bool = False) -> dict[Any, str | None]:
        """``{tenant: None (available) or the reason}`` for every tenant with an entry:
        the client's ``guard.unavailable_reason``, or the entry's state without a client
        (``"new"``, ``"idle"``, ``"connecting"``: no client to call now, but nothing wrong;
        ``"broken"``: refused for ``broken_retry_after`` s after a failure, ``"idle"`` again
        once that has passed).

        :param down_only: only the tenants that are down (:attr:`TenantStats.down`: broken,
            or a client whose guard is unavailable), for a ``/health`` endpoint that must not
            flag every idle tenant."""
        snaps = (e.snapshot() for e in self._entries.values())
        return {s.tenant: s.unavailable_reason for s in snaps if s.down or not down_only}

    def workers(self, tenants: Iterable[Hashable]) -> WorkerRouter:
        """A :class:`~telethon_guard.pool_workers.WorkerRouter` spreading one workload over
        the accounts of ``tenants`` (routes each call to an account free for its method).

        With a plain (not ``async``) factory, each tenant without an entry is checked now by
        calling the factory (the client it returns is kept for the first lease).

        :raises GuardConfigError: ``tenants`` is empty or a ``str``, or the factory knows
            no such tenant (returned ``None`` or raised ``KeyError``), naming them.
        :raises TypeError: a tenant id is not hashable.
        """
        router = WorkerRouter(self, tenants)
        unknown = [t for t in router.tenants if not self._probe(t)]
        if unknown:
            raise GuardConfigError("tenants", f"unknown tenant(s) {unknown!r}: the factory "
                                   "returned None or raised KeyError")
        return router

    def _probe(self, tenant: Any) -> bool:
        """``False`` if a plain factory says ``tenant`` is unknown; a client it returns is
        kept in a new entry. An async factory, or one that raises, is not judged here."""
        _check_hashable(tenant)
        if tenant in self._entries or inspect.iscoroutinefunction(self._factory):
            return True
        try:
            client = self._factory(tenant)
        except KeyError:
            return False
        except Exception:
            return True  # the lease breaks the tenant (TenantUnavailableError, rerouted)
        if inspect.isawaitable(client):
            if inspect.iscoroutine(client):
                client.close()
            return True
        if client is None:
            return False
        from telethon import TelegramClient

        if isinstance(client, TelegramClient):
            entry = PoolEntry(tenant)
            try:
                self._adopt(entry, client)
            except SessionInUseError:
                return True  # the lease reports it
            self._entries[tenant] = entry
        return True

    async def remove(self, tenant: Hashable) -> None:
        """Disconnect and forget ``tenant`` (its counters too); no-op if unknown. Calls of a
        lease in progress fail (``ClientDisconnectedError``)."""
        entry = self._entries.pop(tenant, None)
        if entry is not None:
            await self._disconnect(entry, counter=None)

    async def __aenter__(self) -> GuardedClientPool:
        self._check_open(None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Refuse new leases, wait up to ``close_timeout`` s for leases to end, disconnect and
        drop every client, stop the idle reaper. Idempotent; concurrent calls wait for the
        first. Never raises for a client's disconnect error (logged)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        self._closing = loop.create_future()
        try:
            self._notify_room()  # waiters for room wake up and see the pool closed
            for task in list(self._creating):  # their leases get PoolClosedError
                task.cancel()
            reaper, self._reaper = self._reaper, None
            if reaper is not None:
                reaper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reaper
            deadline = time.monotonic() + self.close_timeout
            while any(e.leases for e in self._entries.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                room = self._room_event()
                room.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(room.wait(), min(left, 0.1))
            entries = [e for e in self._entries.values() if e.client is not None]
            await asyncio.gather(*(self._disconnect(e, counter=None) for e in entries))
            self._connected.clear()
            self._owners.clear()
        finally:
            self._closing.set_result(None)

    # ---- checkout --------------------------------------------------------------------------

    def _check_open(self, tenant: Any) -> None:
        if self._closed:
            raise PoolClosedError(tenant)

    def _room_event(self) -> asyncio.Event:
        if self._room is None:
            self._room = asyncio.Event()
        return self._room

    def _notify_room(self) -> None:
        if self._room is not None:
            self._room.set()

    async def _checkout(self, tenant: Any) -> PoolEntry:
        self._check_open(tenant)
        _check_hashable(tenant)
        self._prune_failed()
        entry = self._entries.get(tenant)
        if entry is None:
            entry = self._entries[tenant] = PoolEntry(tenant)
        if entry.state == BROKEN:
            left = entry.broken_until - time.monotonic()
            if left > 0:
                raise TenantUnavailableError(
                    tenant, f"tenant {tenant!r} is unavailable for {left:.1f} s more after: "
                    f"{entry.last_error}", left)
        entry.leases += 1  # from here on, not evictable
        try:
            if not self._usable(entry):
                async with entry.get_lock():
                    if not self._usable(entry):
                        await self._connect(entry)
        except BaseException:
            entry.leases -= 1
            if entry.state == NEW and entry.client is None and not entry.leases_total \
                    and not entry.failures:
                self._entries.pop(tenant, None)  # nothing worth keeping
            elif entry.state == BROKEN and not entry.leases_total and entry.client is None:
                self._note_failed(entry)
            self._notify_room()
            raise
        entry.leases_total += 1
        if tenant in self._connected:
            self._connected.move_to_end(tenant)
        self._start_reaper()
        return entry

    @staticmethod
    def _usable(entry: PoolEntry) -> bool:
        client = entry.client
        return entry.state == CONNECTED and client is not None and client.is_connected()

    async def _connect(self, entry: PoolEntry) -> None:
        tenant = entry.tenant
        self._check_open(tenant)
        previous = entry.state
        entry.state = CONNECTING
        try:
            if entry.client is None:
                await self._create(entry)
            if tenant not in self._connected:
                await self._make_room(entry)
                self._connected[tenant] = entry
            if self._connect_slots is None:
                self._connect_slots = asyncio.Semaphore(self.max_concurrent_connects)
            async with self._connect_slots:
                self._check_open(tenant)
                await asyncio.wait_for(entry.client.connect(), self.connect_timeout)
            self._check_open(tenant)
        except (PoolError, asyncio.CancelledError) as e:
            self._connected.pop(tenant, None)
            if entry.client is not None:
                await self._drop_client(entry)
            if isinstance(e, (UnknownTenantError, SessionInUseError)):
                entry.state = previous if previous != CONNECTED else IDLE
            elif entry.state == CONNECTING:
                entry.state = IDLE if previous != NEW else NEW
            raise
        except Exception as e:
            self._connected.pop(tenant, None)
            await self._drop_client(entry)
            raise self._broken(entry, e, "connect failed") from e
        entry.state = CONNECTED
        entry.connects += 1
        self._own(entry)  # the auth key may be new (DH exchange on connect)

    async def _create(self, entry: PoolEntry) -> None:
        tenant = entry.tenant
        try:
            client = self._factory(tenant)
            if inspect.isawaitable(client):
                client = await self._await_factory(tenant, client)
        except KeyError:
            raise UnknownTenantError(tenant) from None
        except (asyncio.CancelledError, PoolClosedError):
            raise
        except Exception as e:
            what = ("session factory timed out" if isinstance(e, TimeoutError)
                    else "session factory raised")
            raise self._broken(entry, e, what) from e
        if client is None:
            raise UnknownTenantError(tenant)
        from telethon import TelegramClient

        if not isinstance(client, TelegramClient):
            err = TypeError(f"factory returned {type(client).__name__}, not a TelegramClient")
            raise self._broken(entry, err, "session factory returned no client") from err
        self._adopt(entry, client)

    async def _await_factory(self, tenant: Any, pending: Awaitable[Any]) -> Any:
        """The result of an async factory, bounded by ``connect_timeout`` and ended by
        :meth:`close`: the factory runs as a task of its own that either cancels.

        :raises TimeoutError: the factory did not return within ``connect_timeout`` s (the
            caller breaks the tenant with it).
        :raises PoolClosedError: the pool was closed while the factory ran."""
        task = asyncio.ensure_future(pending)
        self._creating.add(task)
        try:
            done, _ = await asyncio.wait((task,), timeout=self.connect_timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._creating.discard(task)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):  # bounded: a factory may ignore cancel
                await asyncio.wait((task,), timeout=self.close_timeout)
            if self._closed:
                raise PoolClosedError(tenant)
            raise TimeoutError(f"the session factory did not return within connect_timeout="
                               f"{self.connect_timeout:g} s")
        if task.cancelled():
            if self._closed:
                raise PoolClosedError(tenant, f"tenant {tenant!r}: the pool was closed while "
                                      "its session factory ran")
            raise asyncio.CancelledError
        return task.result()

    def _adopt(self, entry: PoolEntry, client: Any) -> None:
        """Guard ``client`` if needed and make it ``entry``'s, refusing a session held by
        another tenant (:class:`SessionInUseError`)."""
        tenant = entry.tenant
        from ._link import link_of

        if link_of(client) is None:
            from ._wrap import guard

            guard(client)
        for key in session_keys(client):
            other = self._owners.get(key)
            if other is not None and other != tenant:
                entry.failures += 1
                entry.last_error = f"SessionInUseError(other={other!r})"
                raise SessionInUseError(tenant, other)
        entry.client = client
        self._own(entry)

    def _own(self, entry: PoolEntry) -> None:
        if entry.client is not None:
            for key in session_keys(entry.client):
                self._owners[key] = entry.tenant

    def _broken(self, entry: PoolEntry, error: BaseException, what: str,
                ) -> TenantUnavailableError:
        entry.state = BROKEN
        entry.failures += 1
        entry.last_error = repr(error)
        entry.broken_until = time.monotonic() + self.broken_retry_after
        log.warning("pool tenant %r: %s: %r; refused for %.1f s", entry.tenant, what, error,
                    self.broken_retry_after)
        return TenantUnavailableError(entry.tenant, f"tenant {entry.tenant!r}: {what}: "
                                      f"{error!r}", self.broken_retry_after)

    def _note_failed(self, entry: PoolEntry) -> None:
        """Keep a never-used tenant whose factory or connect failed only for its cool-down
        (``broken_retry_after``), and at most :data:`MAX_FAILED_TENANTS` of them (the oldest
        failure is forgotten first), so that ids taken from requests cannot grow the pool."""
        self._failed[entry.tenant] = None
        self._failed.move_to_end(entry.tenant)
        while len(self._failed) > MAX_FAILED_TENANTS:
            self._forget_failed(next(iter(self._failed)))

    def _prune_failed(self) -> None:
        """Forget failed never-used tenants whose cool-down is over (oldest first)."""
        now = time.monotonic()
        while self._failed:
            tenant = next(iter(self._failed))
            entry = self._entries.get(tenant)
            if entry is not None and entry.state == BROKEN and entry.broken_until > now:
                break
            self._forget_failed(tenant)

    def _forget_failed(self, tenant: Any) -> None:
        self._failed.pop(tenant, None)
        entry = self._entries.get(tenant)
        if entry is not None and entry.client is None and not entry.leases \
                and not entry.leases_total:
            del self._entries[tenant]

    async def _make_room(self, entry: PoolEntry) -> None:
        """Return once fewer than ``max_connected`` clients are connected (disconnecting the
        least recently used idle one if needed), with no await between the last check and
        the caller's insert."""
        deadline = time.monotonic() + self.acquire_timeout
        while len(self._connected) >= self.max_connected:
            self._check_open(entry.tenant)
            victim = next((e for e in self._connected.values() if e.evictable()), None)
            if victim is not None:
                async with victim.get_lock():  # free (evictable): taken without waiting
                    await self._disconnect(victim, counter="evictions")
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise PoolExhaustedError(entry.tenant, self.max_connected, self.acquire_timeout)
            room = self._room_event()
            room.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(room.wait(), left)

    # ---- disconnects -----------------------------------------------------------------------

    async def _disconnect(self, entry: PoolEntry, counter: str | None) -> None:
        """Disconnect and drop ``entry``'s client; ``counter``: ``"idle_disconnects"`` or
        ``"evictions"`` (or ``None``)."""
        self._connected.pop(entry.tenant, None)
        if entry.state in (CONNECTED, CONNECTING):
            entry.state = IDLE
        if counter is not None:
            setattr(entry, counter, getattr(entry, counter) + 1)
        await self._drop_client(entry)
        self._notify_room()

    async def _drop_client(self, entry: PoolEntry) -> None:
        client, entry.client = entry.client, None
        if client is None:
            return
        for key in session_keys(client):
            if self._owners.get(key) == entry.tenant:
                del self._owners[key]
        try:
            await asyncio.wait_for(client.disconnect(), self.close_timeout)
        except Exception:
            log.exception("pool tenant %r: disconnect failed", entry.tenant)

    def _start_reaper(self) -> None:
        if self.idle_timeout is None or self._closed:
            return
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        """Disconnect clients idle for ``idle_timeout`` s; ends when nothing is connected."""
        idle = self.idle_timeout
        assert idle is not None
        interval = min(max(idle / 4, 0.01), 1.0)
        while not self._closed and self._connected:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for entry in list(self._connected.values()):
                last = entry.last_used
                if entry.evictable() and last is not None and now - last >= idle:
                    try:
                        async with entry.get_lock():
                            if entry.state == CONNECTED and entry.leases == 0:
                                await self._disconnect(entry, counter="idle_disconnects")
                    except Exception:  # pragma: no cover - _drop_client logs and swallows
                        log.exception("pool tenant %r: idle disconnect", entry.tenant)
