"""Worker mode over real sockets: N accounts serving one workload, each call routed to an
account that is not blocked for its method (server FLOOD_WAIT) and not over its configured
limits; a typed error with the earliest retry_after when none is free."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import (
    FloodWaitBlocked,
    GuardConfigError,
    MayHaveRunError,
    NoAccountAvailableError,
    NotReroutedMayHaveRun,
    UnknownTenantError,
)
from telethon_guard.pool import GuardedClientPool
from telethon_guard.pool_workers import seconds_until_free
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import FloodWindow, ResetOn

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


async def _burst(server: TelegramTestServer, ids: list[int], n: int) -> tuple[int, list[Any]]:
    """``n`` concurrent ``router.call``s of getHistory over the accounts ``ids`` (worker
    clients with ``max_flood_wait=0``, no configured limits); returns (calls served, errors)."""
    sessions = {f"w{i}": server.session(uid) for i, uid in enumerate(ids)}

    def factory(tenant: str) -> Any:
        return server.client(GuardedTelegramClient, session=sessions[tenant],
                             storage=pool.storage, max_flood_wait=0)

    pool = GuardedClientPool(factory)
    async with pool:
        for tenant in sessions:  # connected and "news" resolved: the burst is getHistory only
            async with pool.lease(tenant) as client:
                await bounded(client.get_input_entity("news"))
        router = pool.workers(sessions)
        results = await bounded(asyncio.gather(
            *[router.call(HISTORY, history) for _ in range(n)], return_exceptions=True))
    errors = [r for r in results if isinstance(r, BaseException)]
    return len(results) - len(errors), errors


async def test_a_burst_over_saturated_accounts_sends_no_call_twice() -> None:
    # 30 calls at once over 3 accounts that take 3 getHistory per 60 s each (no method_limits,
    # so the guard learns each account's limit from its FLOOD_WAITs). The first dispatch sends
    # 10 to each account: 7 FLOOD_WAITs each, unavoidable. A call refused there moves on only
    # after the calls sent to the next account before the refusal have come back, so it meets
    # that account's block in its ledger instead of drawing one more FLOOD_WAIT from it.
    # Before: the moved calls were sent into the blocks still on the way, 35 FLOOD_WAITs for
    # 30 calls (44 requests sent).
    plan = FaultPlan(FloodWindow(HISTORY, 3, 60.0))
    async with TelegramTestServer(faults=plan) as server:
        ids = [server.world.register_account(None) for _ in range(3)]
        served, errors = await _burst(server, ids, 30)
        assert served == 9
        assert all(isinstance(e, NoAccountAvailableError) for e in errors), errors
        assert all(e.retry_after is not None and 0 < e.retry_after <= 60 for e in errors)
        floods = server.log.count(HISTORY, outcome="rpc_error")
        assert floods <= 30 - 9, floods  # one per call sent beyond the accounts' capacity
        assert server.log.count(HISTORY) <= 30  # no call was sent twice


async def test_a_call_moved_after_a_flood_waits_for_the_next_account_then_is_served() -> None:
    # Two accounts take 3 getHistory per 60 s, the third 20; 12 calls at once go 4 to each.
    # The one call over the limit on each small account is refused there and moves on; it
    # waits for the calls already sent to the next account, so it is not sent into the other
    # small account's block but served by the large one: every call served, one FLOOD_WAIT
    # per saturated account. Before: 3 FLOOD_WAITs (a moved call was sent into the block).
    async with TelegramTestServer() as server:
        ids = [server.world.register_account(None) for _ in range(3)]
        for uid, limit in zip(ids, (3, 3, 20), strict=True):
            server.faults.add(FloodWindow(HISTORY, limit, 60.0, account=uid))
        served, errors = await _burst(server, ids, 12)
        assert served == 12 and not errors, errors
        assert server.log.count(HISTORY, outcome="rpc_error") == 2
        assert [server.log.count(HISTORY, outcome="ok", account=uid) for uid in ids] == [3, 3, 6]


async def test_a_send_that_may_have_run_is_not_moved_to_another_account() -> None:
    # alice's first sendMessage is executed, then the connection resets (the reply is lost);
    # her guard re-sends it (same random_id) and Telegram answers FLOOD_WAIT (1 send per 60 s
    # there). The message is stored already: moving the call to bob would send it again as
    # a new message (a new random_id). It fails with NotReroutedMayHaveRun instead, from the
    # FloodWaitBlocked (may_have_run). A later send, refused on alice before it is sent,
    # still goes to bob. Before: "t0" was stored twice (alice's and bob's).
    send = "messages.sendMessage"
    async with TelegramTestServer() as server:
        users = ("alice", "bob")
        uids = {u: server.world.user_id(u) for u in users}
        alice = uids["alice"]
        server.faults.add(FloodWindow(send, 1, 60.0, account=alice))
        server.faults.add(ResetOn(send, times=1, after_execute=True, account=alice))
        sessions = {u: server.session(uids[u]) for u in users}

        def factory(tenant: str) -> Any:
            return server.client(GuardedTelegramClient, session=sessions[tenant],
                                 storage=pool.storage, max_flood_wait=0, deadline=10)

        pool = GuardedClientPool(factory)
        async with pool:
            for u in users:
                async with pool.lease(u) as client:
                    await bounded(client.get_input_entity("chat_a"))
            router = pool.workers(list(users))
            with pytest.raises(NotReroutedMayHaveRun) as info:
                await bounded(router.call(send, lambda c: c.send_message("chat_a", "t0")))
            err = info.value
            assert err.tenant == "alice" and err.method == send and err.retry_after is None
            assert isinstance(err, MayHaveRunError)
            assert isinstance(err.__cause__, FloodWaitBlocked) and err.__cause__.may_have_run
            assert router.rerouted == 0
            msg = await bounded(router.call(send, lambda c: c.send_message("chat_a", "t1")))
            assert msg.message == "t1"
            assert router.routed == {"alice": 1, "bob": 1}
        stored = Counter(s.text for s in server.world.sent_messages() if not s.incoming)
        assert stored == {"t0": 1, "t1": 1}, stored
        assert [s.text for s in server.world.sent_messages(account=alice)
                if not s.incoming] == ["t0"]


async def test_no_account_available_after_chat_floods_says_when_honestly() -> None:
    # Each account takes 1 sendMessage per 60 s and the clients have no method_limits: a
    # FLOOD_WAIT on a send blocks that chat's writes (a chat scope), which the router's
    # free-check for the method does not see. A call refused on every account must still
    # say when one is free (~60 s), not 0: `await asyncio.sleep(e.seconds)` looped at once.
    # Before: retry_after == 0 and seconds == 0 for both refused calls.
    send = "messages.sendMessage"
    async with TelegramTestServer() as server:
        users = ("alice", "bob")
        uids = {u: server.world.user_id(u) for u in users}
        server.faults.add(FloodWindow(send, 1, 60.0))
        sessions = {u: server.session(uids[u]) for u in users}

        def factory(tenant: str) -> Any:
            return server.client(GuardedTelegramClient, session=sessions[tenant],
                                 storage=pool.storage, max_flood_wait=0, deadline=10)

        pool = GuardedClientPool(factory)
        async with pool:
            for u in users:
                async with pool.lease(u) as client:
                    await bounded(client.get_input_entity("chat_a"))
            router = pool.workers(list(users))
            for text in ("t0", "t1"):  # one per account
                await bounded(router.call(send, lambda c, t=text: c.send_message("chat_a", t)))
            for text in ("t2", "t3"):  # t2 draws both FLOOD_WAITs, t3 meets both blocks
                with pytest.raises(NoAccountAvailableError) as info:
                    await bounded(router.call(send,
                                              lambda c, t=text: c.send_message("chat_a", t)))
                err = info.value
                assert err.retry_after is not None and 50 < err.retry_after <= 60, err
                assert err.seconds >= err.retry_after
                assert isinstance(err.__cause__, FloodWaitBlocked)
            assert server.log.count(send, outcome="rpc_error") == 2  # t3 sent nowhere
        stored = Counter(s.text for s in server.world.sent_messages() if not s.incoming)
        assert stored == {"t0": 1, "t1": 1}, stored
