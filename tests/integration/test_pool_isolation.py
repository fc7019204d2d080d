"""Tenant isolation in GuardedClientPool, real Telethon over real sockets: one tenant's
FLOOD_WAITs, another's transport -429 storm (breaker), a broken session and a factory that
raises never slow the calls of the healthy tenants."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from telethon.crypto import AuthKey

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import (
    CircuitOpenError,
    FloodWaitBlocked,
    GuardError,
    TenantUnavailableError,
)
from telethon_guard.pool import GuardedClientPool
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import FloodWindow, Transport429Storm

from ._client_helpers import AT_ONCE, bounded

FLOOD = 60  # seconds of FLOOD_WAIT the flooded tenant gets (never waited out here)


async def test_one_tenants_floods_storm_and_broken_session_do_not_slow_the_others() -> None:
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        ids = {name: server.world.register_account(None) for name in ("flooded", "stormed")}
        sessions = {name: server.session(ids[name]) for name in ids}
        sessions.update({name: server.session() for name in ("b", "c")})
        dead = server.session()
        dead.auth_key = AuthKey(os.urandom(256))  # the server does not know this key: -404
        sessions["dead"] = dead
        # The flooded tenant: 1 getHistory per 60 s on its account, and its client waits out
        # FLOOD_WAITs of up to FLOOD s (so its calls sleep, as a real service's would).
        plan.add(FloodWindow("messages.getHistory", 1, float(FLOOD), account=ids["flooded"]))
        pool: GuardedClientPool

        def factory(tenant: str) -> Any:
            if tenant == "raises":
                raise OSError("session storage unreachable")
            kwargs: dict[str, Any] = {"storage": pool.storage, "deadline": FLOOD + 30}
            if tenant == "flooded":
                kwargs["max_flood_wait"] = FLOOD + 5
            if tenant == "stormed":
                kwargs.update(breaker_failure_threshold=2, breaker_open_seconds=30,
                              max_reconnect_seconds=1.0, deadline=3.0)
            return server.client(GuardedTelegramClient, session=sessions[tenant], **kwargs)

        pool = GuardedClientPool(factory, connect_timeout=3.0, broken_retry_after=30)
        async with pool:
            for name in ("flooded", "stormed", "b", "c"):
                async with pool.lease(name) as client:
                    await bounded(client.get_me())
            async with pool.lease("flooded") as client:
                await bounded(client.get_messages("news", limit=1))  # the one allowed call

            # The flooded tenant's next calls sleep on its FLOOD_WAIT (60 s)...
            flooded = [asyncio.ensure_future(pool.call(
                "flooded", lambda c: c.get_messages("news", limit=1))) for _ in range(3)]
            # ...the stormed tenant's account gets transport -429 on every request...
            plan.add(Transport429Storm(start=0.0, duration=None, account=ids["stormed"]))

            async def stormed() -> list[BaseException | None]:
                out: list[BaseException | None] = []
                for _ in range(4):
                    try:
                        async with pool.lease("stormed") as client:
                            await client.get_me()
                        out.append(None)
                    except GuardError as e:
                        out.append(e)
                return out

            storm_task = asyncio.ensure_future(stormed())
            # ...and two tenants have a broken session or a failing factory.
            broken: list[BaseException] = []
            for name in ("dead", "raises", "dead", "raises"):
                try:
                    async with pool.lease(name) as client:
                        await client.get_me()
                except GuardError as e:
                    broken.append(e)

            # Meanwhile every call of the healthy tenants goes through at once.
            latencies: list[float] = []

            async def healthy(name: str) -> None:
                for i in range(10):
                    started = time.monotonic()
                    async with pool.lease(name) as client:
                        if i % 2:
                            await client.get_messages("news", limit=1)
                        else:
                            await client.get_me()
                    latencies.append(time.monotonic() - started)

            await bounded(asyncio.gather(healthy("b"), healthy("c")))
            assert len(latencies) == 20
            assert max(latencies) < AT_ONCE, latencies

            storm_results = await bounded(storm_task)
            assert all(isinstance(r, GuardError) for r in storm_results), storm_results
            assert any(isinstance(r, CircuitOpenError) for r in storm_results), storm_results
            assert all(isinstance(e, TenantUnavailableError) for e in broken), broken
            assert pool.state_of("dead") == "broken" and pool.state_of("raises") == "broken"
            assert pool.tenant_stats("raises").failures == 1  # refused later without retrying

            # The flooded calls are still asleep on their FLOOD_WAIT: nothing leaked over.
            assert not any(f.done() for f in flooded)
            assert pool.tenant_stats("flooded").leases == 3
            health = pool.health()
            assert health["b"] is None and health["c"] is None
            assert health["stormed"] is not None
            for f in flooded:
                f.cancel()
            results = await asyncio.gather(*flooded, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results), results
            # The guard records the flood for that account only.
            blocked = pool.tenant_stats("flooded").guard.blocked
            assert any("messages.getHistory" in k for k in blocked), blocked
            assert not pool.tenant_stats("b").guard.blocked
        assert server.log.count("messages.getHistory", outcome="rpc_error") >= 1


async def test_a_flood_blocked_tenant_fails_fast_while_others_proceed() -> None:
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        a_id = server.world.register_account(None)
        sessions = {"a": server.session(a_id), "b": server.session()}
        plan.add(FloodWindow("messages.getHistory", 1, float(FLOOD), account=a_id))

        def factory(tenant: str) -> Any:
            return server.client(GuardedTelegramClient, session=sessions[tenant],
                                 storage=pool.storage, max_flood_wait=0)

        pool = GuardedClientPool(factory)
        async with pool:
            for _ in range(2):
                for name in ("a", "b"):
                    try:
                        await bounded(pool.call(name, lambda c: c.get_messages("news", limit=1)))
                    except FloodWaitBlocked as e:
                        assert name == "a" and e.retry_after is not None
            started = time.monotonic()
            for _ in range(5):
                try:
                    await bounded(pool.call("a", lambda c: c.get_messages("news", limit=1)))
                    raise AssertionError("the flooded tenant was not blocked")
                except FloodWaitBlocked as e:
                    assert e.retry_after is not None and e.retry_after > FLOOD - 10
                await bounded(pool.call("b", lambda c: c.get_messages("news", limit=1)))
            assert time.monotonic() - started < AT_ONCE
        # One FLOOD_WAIT from the server; the later refusals of "a" never reached it.
        assert server.log.count("messages.getHistory", outcome="rpc_error") == 1
