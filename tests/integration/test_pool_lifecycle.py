"""GuardedClientPool lifecycle with real Telethon over real sockets: lazy connect, bounded
concurrent connects, idle disconnect, the connected cap (LRU eviction), close, bad input."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from telethon.sessions import StringSession

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import (
    GuardConfigError,
    PoolClosedError,
    PoolExhaustedError,
    SessionInUseError,
    TenantUnavailableError,
    UnknownTenantError,
)
from telethon_guard.pool import GuardedClientPool
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import Latency

from ._client_helpers import BOUND, bounded


class Tenants:
    """A session per tenant on ``server`` and a factory counting its calls."""

    def __init__(self, server: TelegramTestServer, names: list[str],
                 cls: type[GuardedTelegramClient] = GuardedTelegramClient,
                 **client_kwargs: Any) -> None:
        self.server = server
        self.sessions: dict[str, StringSession] = {n: server.session() for n in names}
        self.calls: dict[str, int] = {}
        self.cls = cls
        self.kwargs = client_kwargs
        self.pool: GuardedClientPool | None = None

    def __call__(self, tenant: str) -> GuardedTelegramClient | None:
        self.calls[tenant] = self.calls.get(tenant, 0) + 1
        session = self.sessions.get(tenant)
        if session is None:
            return None
        kwargs = dict(self.kwargs)
        if self.pool is not None:
            kwargs.setdefault("storage", self.pool.storage)
        return self.server.client(self.cls, session=session, **kwargs)


def make_pool(tenants: Tenants, **kwargs: Any) -> GuardedClientPool:
    pool = GuardedClientPool(tenants, **kwargs)
    tenants.pool = pool
    return pool


async def wait_until(predicate: Callable[[], bool], seconds: float = BOUND) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_lazy_connect_idle_disconnect_and_rebuild() -> None:
    async with TelegramTestServer() as server:
        tenants = Tenants(server, ["t1", "t2"])
        pool = make_pool(tenants, idle_timeout=0.3)
        async with pool:
            assert server.log.connections_opened() == 0 and tenants.calls == {}
            async with pool.lease("t1") as client:
                me = await bounded(client.get_me())
                assert me.id == (await bounded(client.get_me())).id
                assert pool.state_of("t1") == "connected"
            # Lazy: t2 was never asked for, so it has no client and no connection.
            assert tenants.calls == {"t1": 1}
            assert pool.state_of("t2") == "new" and pool.connected == 1
            # Idle: no lease for idle_timeout -> disconnected and dropped.
            await wait_until(lambda: pool.state_of("t1") == "idle")
            assert pool.connected == 0 and pool.client_of("t1") is None
            # "idle" is set when the disconnect starts; it ends a moment later (longer on a
            # loaded machine)
            await wait_until(lambda: not client.is_connected())
            st = pool.tenant_stats("t1")
            assert (st.idle_disconnects, st.connects, st.leases, st.leases_total) == (1, 1, 0, 1)
            # Next lease builds the client again from the factory.
            async with pool.lease("t1") as again:
                assert again is not client
                assert (await bounded(again.get_me())).id == me.id
            assert tenants.calls == {"t1": 2}
            assert pool.tenant_stats("t1").connects == 2


async def test_concurrent_connects_are_bounded() -> None:
    active = 0
    peak = 0

    class Counting(GuardedTelegramClient):
        async def connect(self) -> None:  # type: ignore[override]
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            try:
                await asyncio.sleep(0.05)  # hold the slot long enough for others to pile up
                await super().connect()
            finally:
                active -= 1

    async with TelegramTestServer() as server:
        names = [f"t{i}" for i in range(8)]
        tenants = Tenants(server, names, cls=Counting)
        async with make_pool(tenants, max_concurrent_connects=2) as pool:

            async def use(name: str) -> int:
                async with pool.lease(name) as client:
                    return int((await client.get_me()).id)

            ids = await bounded(asyncio.gather(*(use(n) for n in names)))
            assert len(set(ids)) == 8
            assert peak == 2, peak  # 8 wanted to connect at once; 2 at a time did
            assert pool.connected == 8


async def test_cap_evicts_the_least_recently_used_idle_client() -> None:
    async with TelegramTestServer() as server:
        tenants = Tenants(server, ["t1", "t2", "t3"])
        async with make_pool(tenants, max_connected=2, idle_timeout=None,
                             acquire_timeout=0.3) as pool:
            for name in ("t1", "t2"):
                async with pool.lease(name) as c:
                    await bounded(c.get_me())
            async with pool.lease("t1") as c:  # t1 used last: t2 is least recently used
                await bounded(c.get_me())
            async with pool.lease("t3") as c:
                await bounded(c.get_me())
                assert pool.connected == 2
                assert pool.state_of("t2") == "idle" and pool.state_of("t1") == "connected"
                assert pool.tenant_stats("t2").evictions == 1
                # t1 and t3 both leased: no idle client to evict -> typed error after the wait.
                async with pool.lease("t1"):
                    with pytest.raises(PoolExhaustedError) as info:
                        await bounded(pool.lease("t2").__aenter__())
                    assert info.value.tenant == "t2" and info.value.max_connected == 2
            assert pool.connected == 2


async def test_close_leaves_no_client_socket_or_task() -> None:
    async with TelegramTestServer() as server:
        tenants = Tenants(server, [f"t{i}" for i in range(5)])
        await asyncio.sleep(0.05)
        tasks_before = len(asyncio.all_tasks())
        fds_before = open_fds()
        pool = make_pool(tenants, idle_timeout=30)
        for name in tenants.sessions:
            async with pool.lease(name) as c:
                await bounded(c.get_me())
        assert pool.connected == 5 and len(asyncio.all_tasks()) > tasks_before
        clients = [pool.client_of(n) for n in tenants.sessions]
        await bounded(pool.close())
        assert pool.closed and pool.connected == 0
        assert all(not c.is_connected() for c in clients)
        assert all(pool.client_of(n) is None for n in tenants.sessions)
        # Tasks (client loops, the idle reaper) and sockets (ours and the server's side of
        # each) back to the baseline.
        await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before, 5)
        await wait_until(lambda: open_fds() <= fds_before, 5)
        with pytest.raises(PoolClosedError):
            await bounded(pool.lease("t0").__aenter__())
        await bounded(pool.close())  # idempotent


async def test_pool_closed_while_calls_are_in_flight() -> None:
    plan = FaultPlan(Latency("messages.getHistory", seconds=3.0))
    async with TelegramTestServer(faults=plan) as server:
        tenants = Tenants(server, ["t1", "t2"])
        pool = make_pool(tenants, close_timeout=0.2)

        async def slow(name: str) -> Any:
            async with pool.lease(name) as client:
                return await client.get_messages("news", limit=1)

        for name in ("t1", "t2"):  # connected before the slow calls start
            async with pool.lease(name) as c:
                await bounded(c.get_me())
        calls = [asyncio.ensure_future(slow(n)) for n in ("t1", "t2")]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await bounded(pool.close())
        results = await bounded(asyncio.gather(*calls, return_exceptions=True))
        assert all(isinstance(r, PoolClosedError) for r in results), results
        assert {r.tenant for r in results} == {"t1", "t2"}  # type: ignore[union-attr]
        assert time.monotonic() - started < 3.0  # did not wait for the 3 s answers


async def test_bad_input_each_gets_a_typed_error_and_others_are_unaffected() -> None:
    async with TelegramTestServer() as server:
        tenants = Tenants(server, ["good", "twin"])
        tenants.sessions["twin"] = tenants.sessions["good"]  # the same session object

        def factory(tenant: str) -> Any:
            if tenant == "broken":
                raise RuntimeError("session store is down")
            if tenant == "missing":
                raise KeyError(tenant)
            return tenants(tenant)

        async with GuardedClientPool(factory, broken_retry_after=30) as pool:
            tenants.pool = pool
            with pytest.raises(UnknownTenantError):
                await bounded(pool.lease("nobody").__aenter__())  # factory returned None
            with pytest.raises(UnknownTenantError):
                await bounded(pool.lease("missing").__aenter__())  # factory raised KeyError
            assert len(pool) == 0  # unknown tenants leave no entry behind
            with pytest.raises(TenantUnavailableError) as info:
                await bounded(pool.lease("broken").__aenter__())
            assert isinstance(info.value.__cause__, RuntimeError)
            assert info.value.retry_after == pytest.approx(30.0)
            async with pool.lease("good") as client:
                assert (await bounded(client.get_me())).id
                with pytest.raises(SessionInUseError) as used:
                    await bounded(pool.lease("twin").__aenter__())
                assert used.value.other == "good"
            # A broken tenant is refused at once, without calling its factory again.
            calls = tenants.calls.copy()
            with pytest.raises(TenantUnavailableError) as again:
                await bounded(pool.lease("broken").__aenter__())
            assert 0 < (again.value.retry_after or 0) <= 30.0
            assert pool.tenant_stats("broken").state == "broken"
            assert pool.tenant_stats("broken").failures == 1
            assert tenants.calls == calls
            health = pool.health()
            assert health["good"] is None and health["broken"] == "broken"
            with pytest.raises(UnknownTenantError):
                pool.tenant_stats("nobody")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_connected": 0}, "max_connected"),
    ({"max_concurrent_connects": 1.5}, "max_concurrent_connects"),
    ({"idle_timeout": -1}, "idle_timeout"),
    ({"connect_timeout": float("inf")}, "connect_timeout"),
    ({"acquire_timeout": 0}, "acquire_timeout"),
    ({"broken_retry_after": "30"}, "broken_retry_after"),
    ({"close_timeout": True}, "close_timeout"),
    ({"storage": "memory"}, "storage"),
])
def test_bad_settings_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(GuardConfigError) as info:
        GuardedClientPool(lambda t: None, **kwargs)
    assert info.value.field == field
    with pytest.raises(GuardConfigError) as info:
        GuardedClientPool("not callable")  # type: ignore[arg-type]
    assert info.value.field == "factory"


async def test_a_plain_telethon_client_from_the_factory_is_guarded() -> None:
    from telethon import TelegramClient

    async with TelegramTestServer() as server:
        session = server.session()
        async with GuardedClientPool(
                lambda t: server.client(TelegramClient, session=session)) as pool:
            me = await bounded(pool.call("t", lambda c: c.get_me()))
            client = pool.client_of("t")
            assert me.id and client.guard.stats().calls  # the guard saw the calls
            assert pool.tenant_stats("t").guard is not None
