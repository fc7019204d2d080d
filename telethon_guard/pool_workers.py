"""Worker mode: N accounts of a :class:`~telethon_guard.pool.GuardedClientPool` serving one
workload, each call routed to an account that is free for its method.

An account is *free* for a method when its guard would send at once: no FLOOD_WAIT block on
the method (the flood ledger, :meth:`~telethon_guard.flood.FloodLedger.blocked_for`), a slot
free now in its configured limits and learned pace (the rate limiter's read-only
:meth:`~telethon_guard.limiter.RateLimiter.delay_of`), its breaker not OPEN or HALF_OPEN, its
connection not reconnecting, and the tenant not broken in the pool. An account with no client
yet (never used, or dropped when idle), whose client is not connected (new, idle) or whose
connect is under way counts as free: the lease connects it (or waits for that connect).

:meth:`WorkerRouter.lease` takes the next free account in round-robin order;
:meth:`WorkerRouter.call` also moves on to the next account when the call itself is refused
(``FloodWaitBlocked``, ``CircuitOpenError``, ``TransportFloodError``, a broken tenant), except
a write refused after an earlier attempt of it there got no answer (the refusal's
``may_have_run``): it may have run there, so it fails with
:class:`~telethon_guard.errors.NotReroutedMayHaveRun` instead of becoming a second message on
another account. A call
moved on after a ``FloodWaitBlocked`` first waits (at most :attr:`WorkerRouter.settle_timeout`
seconds) until the calls of its method that the router sent to the next account *before* the
refusal have finished: when a burst floods one account, it has usually flooded the others too,
and their FLOOD_WAITs may still be on the way; the moved call is then routed on what they
taught the next account's flood ledger instead of being sent into its block (30 calls at
once over 3 accounts taking 3 per 2 s each: 21 FLOOD_WAITs, one per call sent beyond the
accounts' capacity in the first dispatch; without the wait the moved calls drew 14 more). A
tenant
the factory does not know (``UnknownTenantError`` from the lease: an ``async`` factory is only
asked then) is routed around like a broken one: it is not free for the pool's
``broken_retry_after`` seconds, then asked again. When no account is free,
:class:`~telethon_guard.errors.NoAccountAvailableError` carries the earliest ``retry_after``
(seconds) at which one is. Give the clients a small ``max_flood_wait`` (e.g. 0) so that a
FLOOD_WAIT is raised at once and the call moves to another account instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from typing import Any, Protocol, TypeVar, cast

from ._tl import known_method_names
from .breaker import breaker_key
from .call import CallInfo
from .errors import (
    CircuitOpenError,
    FloodWaitBlocked,
    GuardConfigError,
    NoAccountAvailableError,
    NotReroutedMayHaveRun,
    PoolClosedError,
    TenantUnavailableError,
    TransportFloodError,
    UnknownTenantError,
)
from .keys import is_idempotent
from .storage import HALF_OPEN, OPEN

__all__ = ["REROUTED_ERRORS", "ClientPool", "WorkerRouter", "seconds_until_free"]

T = TypeVar("T")
_MIN_WAIT = 0.001  # seconds: the least retry_after of an account that refused a call just now


class ClientPool(Protocol):
    """What the router needs of a :class:`~telethon_guard.pool.GuardedClientPool`."""

    @property
    def closed(self) -> bool: ...

    broken_retry_after: float

    def broken_for(self, tenant: Hashable) -> float: ...

    def client_of(self, tenant: Hashable) -> Any: ...

    def state_of(self, tenant: Hashable) -> str: ...

    def lease(self, tenant: Hashable) -> contextlib.AbstractAsyncContextManager[Any]: ...

REROUTED_ERRORS: tuple[type[BaseException], ...] = (
    FloodWaitBlocked, CircuitOpenError, TransportFloodError, TenantUnavailableError)
"""Errors after which :meth:`WorkerRouter.call` tries the next account."""


async def seconds_until_free(client: Any, method: str) -> float:
    """Seconds until ``client``'s guard would send a ``method`` call at once (0.0: now;
    ``math.inf``: unknown, e.g. reconnecting or the breaker's probe is out). Read-only: no
    slot is reserved and nothing is sent.

    ``client``: a guarded client (``client.guard``); ``method``: a TL method name such as
    ``"messages.getHistory"``.
    """
    from ._link import account_key

    state = client.guard
    reason = state.unavailable_reason
    if reason is not None and not reason.startswith("breaker"):
        return math.inf  # disconnected, reconnecting, reconnect failing
    pipeline = state.pipeline
    call = CallInfo(method, cast(Any, None), account_key(client, state),
                    int(getattr(client.session, "dc_id", 0) or 0))
    left = 0.0
    blocked = await pipeline.ledger.blocked_for(call)
    if blocked is not None:
        left = blocked[2]
    specs = pipeline.limit_keys.specs(call)
    if specs:
        left = max(left, await pipeline.limiter.delay_of(specs))
    decision = await pipeline.breaker.state(breaker_key(call))
    if decision.state == OPEN and decision.retry_after > 0:
        left = max(left, decision.retry_after)
    elif decision.state == HALF_OPEN:
        return math.inf
    return left


class WorkerRouter:
    """Routes calls over the accounts of ``tenants`` in ``pool`` (see the module docstring).

    :raises GuardConfigError: ``tenants`` is empty or a ``str`` (field ``tenants``).

    ``routed``: ``{tenant: calls routed to it}``; ``rerouted``: calls moved on to another
    account after a refusal; ``settle_timeout``: the most seconds a call moved on after a
    ``FloodWaitBlocked`` waits for the earlier calls of its method on the next account to
    finish (see :meth:`call`).
    """

    settle_timeout: float = 5.0

    def __init__(self, pool: ClientPool, tenants: Iterable[Hashable]) -> None:
        self._pool = pool
        if isinstance(tenants, (str, bytes)):
            raise GuardConfigError("tenants", f"expected a collection of tenant ids, got the "
                                   f"{type(tenants).__name__} {tenants!r} (use [{tenants!r}])")
        self._tenants = list(dict.fromkeys(tenants))
        if not self._tenants:
            raise GuardConfigError("tenants", "worker mode needs at least one tenant")
        self._next = 0
        self._unknown: dict[Any, float] = {}  # tenant -> monotonic time it is asked again
        self.routed: dict[Any, int] = {}
        self.rerouted = 0
        # Calls of :meth:`call` running on each (tenant, method): their start number -> a
        # future resolved when they finish (a call moved on after a flood waits for these).
        self._started = 0
        self._running: dict[tuple[Any, str], dict[int, asyncio.Future[None]]] = {}

    @property
    def tenants(self) -> list[Any]:
        return list(self._tenants)

    async def wait_of(self, tenant: Hashable, method: str) -> float:
        """Seconds until ``tenant`` is free for ``method`` (see :func:`seconds_until_free`)."""
        unknown_until = self._unknown.get(tenant)
        if unknown_until is not None:
            left = unknown_until - time.monotonic()
            if left > 0:
                return left
            del self._unknown[tenant]
        broken = self._pool.broken_for(tenant)
        if broken > 0:
            return broken
        client = self._pool.client_of(tenant)
        if client is None or self._pool.state_of(tenant) in ("new", "connecting", "idle"):
            return 0.0  # not connected (yet, or now): the lease connects it or joins its connect
        return await seconds_until_free(client, method)

    async def pick(self, method: str, exclude: frozenset[Any] = frozenset(),
                   refused_until: dict[Any, float | None] | None = None) -> Any:
        """The next tenant free for ``method`` (round-robin), skipping ``exclude``.

        ``refused_until``: for tenants of ``exclude`` that refused the call, the monotonic
        time (``time.monotonic()``) their refusal ends (``None``: unknown); an excluded tenant
        counts as free no sooner than that (at least 1 ms from now), so ``retry_after`` is
        never 0 while none is free (a refusal for a chat's block, which
        :func:`seconds_until_free` does not see, used to make it 0).

        :raises NoAccountAvailableError: none is free; ``retry_after`` (> 0) is the earliest
            time any of them (``exclude`` included) is, ``None`` if unknown.
        :raises PoolClosedError: the pool is closed.
        :raises ValueError: ``method`` is not a TL method name (``_tl.known_method_names``).
        """
        if method not in known_method_names():
            raise ValueError(f"method: {method!r} is not a TL method of the installed Telethon "
                             "(e.g. 'messages.getHistory')")
        if self._pool.closed:
            raise PoolClosedError()
        n = len(self._tenants)
        earliest = math.inf
        for i in range(n):
            index = (self._next + i) % n
            tenant = self._tenants[index]
            wait = await self.wait_of(tenant, method)
            if tenant in exclude:
                until = (refused_until or {}).get(tenant, 0.0)
                wait = (math.inf if until is None
                        else max(wait, until - time.monotonic(), _MIN_WAIT))
            elif wait <= 0:
                self._next = (index + 1) % n
                self.routed[tenant] = self.routed.get(tenant, 0) + 1
                return tenant
            earliest = min(earliest, wait)
        raise NoAccountAvailableError(method, None if math.isinf(earliest) else earliest, n)

    @contextlib.asynccontextmanager
    async def lease(self, method: str) -> AsyncIterator[Any]:
        """``async with router.lease("messages.getHistory") as client:`` a connected client
        of an account free for ``method``; an account the factory does not know is skipped.
        Raises :class:`NoAccountAvailableError` and the errors of
        :meth:`GuardedClientPool.lease`."""
        tried: set[Any] = set()
        async with contextlib.AsyncExitStack() as stack:
            while True:
                tenant = await self.pick(method, frozenset(tried))
                try:
                    client = await stack.enter_async_context(self._pool.lease(tenant))
                except UnknownTenantError:
                    self._note_unknown(tenant)
                    tried.add(tenant)
                    continue
                break
            yield client

    def _note_unknown(self, tenant: Any) -> None:
        """The factory does not know ``tenant``: not free for ``broken_retry_after`` s."""
        self._unknown[tenant] = time.monotonic() + self._pool.broken_retry_after
        self.rerouted += 1

    async def call(self, method: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(client)`` on an account free for ``method``; on a refusal
        (:data:`REROUTED_ERRORS`) the next free account is tried, each account at most once.

        After a ``FloodWaitBlocked`` the call does not go to the next account while calls of
        ``method`` that this router sent there before the refusal are still running: it waits
        for them (at most :attr:`settle_timeout` seconds, once per account), then picks again,
        so a FLOOD_WAIT they brought back is known before it is sent.

        A write (``method`` not a read: :func:`~telethon_guard.keys.is_idempotent`) refused
        after an earlier attempt of it on that account got no answer (the refusal's
        ``may_have_run``: a reset or a dropped reply before the FLOOD_WAIT) is not moved on:
        it may have run there, and on another account it would be a new request.

        :raises NoAccountAvailableError: every account is refused, blocked or unknown to the
            factory; ``retry_after`` is the earliest time one is free again; ``__cause__`` is
            the last refusal met by this call, if any.
        :raises NotReroutedMayHaveRun: a write refused after an attempt that may have run
            (``__cause__``: the refusal); final, check whether it ran before sending again.
        """
        tried: set[Any] = set()
        refused_until: dict[Any, float | None] = {}  # tried tenant -> its refusal's end
        refused: BaseException | None = None
        flooded_at: int | None = None  # calls started before this were sent before the flood
        settled: set[Any] = set()
        while True:
            try:
                tenant = await self.pick(method, frozenset(tried), refused_until)
            except NoAccountAvailableError as e:
                if refused is None:
                    raise
                raise e from refused  # __cause__: the last refusal of this call
            if flooded_at is not None and tenant not in settled:
                settled.add(tenant)
                earlier = [f for n, f in self._running.get((tenant, method), {}).items()
                           if n < flooded_at]
                if earlier:
                    self.routed[tenant] -= 1  # not routed there (yet)
                    await asyncio.wait(earlier, timeout=self.settle_timeout)
                    continue  # pick again: they may have blocked this account
            key = (tenant, method)
            number = self._started
            self._started = number + 1
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            running = self._running.get(key)
            if running is None:
                running = self._running[key] = {}
            running[number] = done
            try:
                async with self._pool.lease(tenant) as client:
                    return await fn(client)
            except REROUTED_ERRORS as e:
                if getattr(e, "may_have_run", False) and not is_idempotent(method):
                    # A write that may have run on this account: on another one it would be
                    # a new request (a new random_id), i.e. a second message.
                    raise NotReroutedMayHaveRun(method, tenant) from e
                tried.add(tenant)
                self.rerouted += 1
                refused = e
                after: float | None = getattr(e, "retry_after", None)
                refused_until[tenant] = None if after is None else time.monotonic() + after
                if isinstance(e, FloodWaitBlocked):
                    flooded_at = self._started
            except UnknownTenantError as e:
                if e.tenant != tenant:
                    raise  # from inside fn (another pool), not this account's lease
                self._note_unknown(tenant)
                tried.add(tenant)
                refused = e
            finally:
                del running[number]
                if not running:
                    self._running.pop(key, None)
                done.set_result(None)
