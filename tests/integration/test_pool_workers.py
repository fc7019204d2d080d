"""Worker mode over real sockets: N accounts serving one workload, each call routed to an
account that is not blocked for its method (server FLOOD_WAIT) and not over its configured
limits; a typed error with the earliest retry_after when none is free."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import GuardConfigError, NoAccountAvailableError, UnknownTenantError
from telethon_guard.pool import GuardedClientPool
from telethon_guard.pool_workers import seconds_until_free
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import FloodWindow

from ._client_helpers import bounded

HISTORY = "messages.getHistory"


def history(client: Any) -> Any:
    return client.get_messages("news", limit=1)


async def test_calls_move_to_accounts_not_blocked_by_flood_wait() -> None:
    # Telegram-side limit: 2 getHistory per 60 s per account; clients raise FLOOD_WAIT at once.
    plan = FaultPlan(FloodWindow(HISTORY, 2, 60.0))
    async with TelegramTestServer(faults=plan) as server:
        ids = [server.world.register_account(None) for _ in range(3)]
        sessions = {f"w{i}": server.session(uid) for i, uid in enumerate(ids)}

        def factory(tenant: str) -> Any:
            return server.client(GuardedTelegramClient, session=sessions[tenant],
                                 storage=pool.storage, max_flood_wait=0)

        pool = GuardedClientPool(factory)
        async with pool:
            router = pool.workers(sessions)
            results = [await bounded(router.call(HISTORY, history)) for _ in range(6)]
            assert all(len(r) == 1 for r in results)
            # Round-robin: 6 calls fit 3 accounts x 2, no FLOOD_WAIT yet.
            per_account = {uid: server.log.count(HISTORY, outcome="ok", account=uid)
                           for uid in ids}
            assert per_account == {uid: 2 for uid in ids}, per_account
            # Now every account is blocked: a typed error with the earliest retry_after, and
            # (after each account's own FLOOD_WAIT was learned) nothing more is sent.
            flood_waits = server.log.count(HISTORY, outcome="rpc_error")
            with pytest.raises(NoAccountAvailableError) as info:
                for _ in range(4):
                    await bounded(router.call(HISTORY, history))
            err = info.value
            assert err.method == HISTORY and err.accounts == 3
            assert err.retry_after is not None and 0 < err.retry_after <= 60
            assert err.seconds >= err.retry_after
            waits = [await seconds_until_free(pool.client_of(t), HISTORY) for t in sessions]
            assert min(waits) == pytest.approx(err.retry_after, abs=1.0)
            # Each account was tried once (its FLOOD_WAIT moved the call on), then refused.
            assert server.log.count(HISTORY, outcome="rpc_error") == flood_waits + 3
            assert router.rerouted == 3
            with pytest.raises(NoAccountAvailableError):
                await bounded(router.call(HISTORY, history))
            assert server.log.count(HISTORY, outcome="rpc_error") == flood_waits + 3  # unsent
            # Another method is not blocked on any account.
            me = await bounded(router.call("users.getUsers", lambda c: c.get_me()))
            assert me.id in ids


async def test_routing_respects_configured_limits_without_a_single_flood_wait() -> None:
    async with TelegramTestServer() as server:
        ids = [server.world.register_account(None) for _ in range(3)]
        sessions = {f"w{i}": server.session(uid) for i, uid in enumerate(ids)}

        def factory(tenant: str) -> Any:
            return server.client(GuardedTelegramClient, session=sessions[tenant],
                                 storage=pool.storage,
                                 method_limits={HISTORY: ((2, 30.0),)})

        pool = GuardedClientPool(factory)
        async with pool:
            router = pool.workers(sessions)
            for _ in range(6):
                async with router.lease(HISTORY) as client:
                    await bounded(history(client))
            assert sorted(router.routed.values()) == [2, 2, 2]
            # Each account is at its limit: routing refuses instead of queueing 30 s.
            with pytest.raises(NoAccountAvailableError) as info:
                async with router.lease(HISTORY):
                    raise AssertionError("a full account was leased")
            assert info.value.retry_after is not None and 25 < info.value.retry_after <= 31
        for uid in ids:
            assert server.log.count(HISTORY, outcome="ok", account=uid) == 2
        assert server.log.count(HISTORY, outcome="rpc_error") == 0


async def test_a_broken_account_is_skipped() -> None:
    async with TelegramTestServer() as server:
        sessions = {"ok": server.session()}

        def factory(tenant: str) -> Any:
            if tenant == "bad":
                raise OSError("session store down")
            return server.client(GuardedTelegramClient, session=sessions[tenant])

        async with GuardedClientPool(factory, broken_retry_after=20) as pool:
            router = pool.workers(["bad", "ok"])
            got = [await bounded(router.call("users.getUsers", lambda c: c.get_me()))
                   for _ in range(3)]
            assert all(m.id for m in got)
            assert router.routed.get("ok") == 3 and router.rerouted == 1
            assert pool.state_of("bad") == "broken"
            with pytest.raises(GuardConfigError):
                pool.workers([])


async def test_a_tenant_an_async_factory_does_not_know_is_routed_around() -> None:
    # An async factory is only asked at the lease: its KeyError ("no such tenant") must not
    # fail the call while another account is free, nor every other call afterwards.
    async with TelegramTestServer() as server:
        sessions = {"alice": server.session()}
        asked: list[str] = []

        async def factory(tenant: str) -> Any:
            asked.append(tenant)
            return server.client(GuardedTelegramClient, session=sessions[tenant],
                                 max_flood_wait=0)

        async with GuardedClientPool(factory, broken_retry_after=20) as pool:
            router = pool.workers(["ghost", "alice"])
            got = [await bounded(router.call("users.getUsers", lambda c: c.get_me()))
                   for _ in range(6)]
            assert all(m.id for m in got)
            assert asked.count("ghost") == 1 and router.rerouted == 1
            async with router.lease("users.getUsers") as client:
                assert client is pool.client_of("alice")
            # Only the unknown tenant: a typed error (caused by the UnknownTenantError) carrying
            # its cool-down; within it the factory is not asked again.
            only = pool.workers(["ghost"])
            with pytest.raises(NoAccountAvailableError) as first:
                await bounded(only.call("users.getUsers", lambda c: c.get_me()))
            assert isinstance(first.value.__cause__, UnknownTenantError)
            with pytest.raises(NoAccountAvailableError) as info:
                await bounded(only.call("users.getUsers", lambda c: c.get_me()))
            assert info.value.retry_after is not None and 0 < info.value.retry_after <= 20
            with pytest.raises(NoAccountAvailableError):
                async with only.lease("users.getUsers"):
                    pass
            assert asked.count("ghost") == 2


@pytest.mark.parametrize("async_factory", [False, True])
async def test_calls_while_the_accounts_first_connect_are_served(async_factory: bool) -> None:
    # 8 calls at once over 4 fresh accounts and no fault: the accounts still connecting are
    # free (the lease waits for that connect), so every call is served; none is refused with
    # "none is free" while the accounts are only connecting.
    async with TelegramTestServer() as server:
        sessions = {f"t{i}": server.session() for i in range(4)}

        def make(tenant: str) -> Any:
            return server.client(GuardedTelegramClient, session=sessions[tenant],
                                 max_flood_wait=0)

        async def make_async(tenant: str) -> Any:
            return make(tenant)

        async with GuardedClientPool(make_async if async_factory else make) as pool:
            router = pool.workers(list(sessions))
            results = await bounded(asyncio.gather(
                *[router.call(HISTORY, history) for _ in range(8)], return_exceptions=True))
            failed = [r for r in results if isinstance(r, BaseException)]
            assert not failed, failed
            assert sum(router.routed.values()) >= 8
