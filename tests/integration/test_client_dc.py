"""DC switches, the connect-time init under faults, and per-call flood budgets."""

from __future__ import annotations

import time
from typing import Any

import pytest
from telethon import errors as tl_errors
from telethon.tl import functions, types

from telethon_guard import FloodWaitBlocked, GuardedTelegramClient, guard
from telethon_guard.events import FloodWaitStarted, GuardEvent, RequestLimited, RetryScheduled
from telethon_guard.testing.faults import FaultPlan
from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import AT_ONCE, TEST_RSA_KEY, InvokeRecorder, bounded


async def test_user_migrate_switches_dc_without_deadlock() -> None:
    # USER_MIGRATE_2 on a request: Telethon's behaviour is replicated (switch DC, which
    # reconnects and re-inits through the guard on the same task, then re-send). The nested
    # connect / init / get_me calls run on the caller's task and must not deadlock.
    plan = FaultPlan(ErrorOnCalls("help.getNearestDc", 303, "USER_MIGRATE_2", times=1))
    async with TelegramTestServer(faults=plan, rsa_key=TEST_RSA_KEY) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10)
        rec = InvokeRecorder(client.guard.pipeline)
        async with client:
            nearest = await bounded(client(functions.help.GetNearestDcRequest()), 15)
            assert isinstance(nearest, types.NearestDc)
            assert client.session.dc_id == 2
        near = [e.dc_id for e in server.log.requests("help.getNearestDc")]
        assert near == [1, 2]
        inits = rec.of("help.getConfig")
        assert [c.dc_id for c in inits][:1] == [1] and any(c.dc_id == 2 for c in inits)
        assert client._sender.dc_id == 2


async def test_user_migrate_from_the_straight_lane_switches_dc() -> None:
    # The same USER_MIGRATE_2 with the lane on (no recorder): the logged-in client's
    # help.getNearestDc takes the lane, its attempt's error goes on in Pipeline.resume, which
    # raises the migrate error; the lane switches DC and re-sends through guarded_call.
    plan = FaultPlan(ErrorOnCalls("help.getNearestDc", 303, "USER_MIGRATE_2", times=1))
    async with TelegramTestServer(faults=plan, rsa_key=TEST_RSA_KEY) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10)
        async with client:
            pipe = client.guard.pipeline
            assert pipe.lane is not None
            await bounded(client.get_me())  # the account key (user:<id>) is known from here
            assert client._guard_link.account is not None
            resumed: list[str] = []
            resume = pipe.resume

            async def counted(call: Any, *args: Any) -> Any:
                resumed.append(call.method)
                return await resume(call, *args)

            pipe.resume = counted  # type: ignore[method-assign]
            nearest = await bounded(client(functions.help.GetNearestDcRequest()), 15)
            assert isinstance(nearest, types.NearestDc)
            assert client.session.dc_id == 2
            assert await bounded(client(functions.help.GetNearestDcRequest())) == nearest
            calls = pipe.stats()["calls"]["help.getNearestDc"]
            assert calls == {"rpc_error": 1, "ok": 2}, calls
            assert resumed == ["help.getNearestDc"]  # the lane's attempt raised the migrate
        near = [e.dc_id for e in server.log.requests("help.getNearestDc")]
        assert near == [1, 2, 2]
        assert client._sender.dc_id == 2


async def test_transient_error_on_the_init_request_is_retried_by_the_guard() -> None:
    plan = FaultPlan(ErrorOnCalls("help.getConfig", 500, "RPC_CALL_FAIL", times=2))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10, retry_base_delay=0.05,
                               retry_max_delay=0.1)
        async with client:
            assert client.is_connected()
            assert (await bounded(client.get_me())).id > 0
        assert server.log.count("help.getConfig") == 3
        assert server.log.count("help.getConfig", outcome="ok") == 1


async def test_flood_on_a_guarded_plain_client_is_handled_by_the_guard() -> None:
    # A plain TelegramClient would sleep FLOOD_WAIT_120 (<= its default threshold? no: it
    # raises after its own memo); guarded, it raises at once and then fails locally.
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_30"))
    async with TelegramTestServer(faults=plan) as server:
        client = guard(server.client(), deadline=60, max_flood_wait=10)
        async with client:
            t0 = time.monotonic()
            with pytest.raises(tl_errors.FloodWaitError) as e:
                await bounded(client.get_dialogs())
            assert isinstance(e.value, FloodWaitBlocked), repr(e.value)
            assert e.value.seconds == 30, (e.value.seconds, e.value.retry_after)
            with pytest.raises(FloodWaitBlocked) as e2:
                await bounded(client.get_dialogs())
            assert not e2.value.from_server
            assert time.monotonic() - t0 < AT_ONCE  # far below the 30 s it did not wait
        assert server.log.count("messages.getDialogs") == 1


async def test_per_call_flood_sleep_threshold_overrides_max_flood_wait() -> None:
    # client(request, flood_sleep_threshold=0) must raise a FLOOD_WAIT_1 at once even though
    # the client's max_flood_wait (10 s) would wait it out.
    # "At once" for a 1 s wait is shown by the guard's events, not by a wall-clock bound
    # below 1 s: every wait the guard makes emits one (flood wait, backoff, limiter).
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_1", times=1))
    events: list[GuardEvent] = []
    waits = (FloodWaitStarted, RetryScheduled, RequestLimited)
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10, max_flood_wait=10,
                               on_event=events.append)
        req = functions.messages.GetDialogsRequest(
            offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(), limit=5, hash=0)
        async with client:
            with pytest.raises(FloodWaitBlocked) as e:
                await bounded(client(req, flood_sleep_threshold=0))
            assert e.value.from_server and e.value.seconds == 1
            assert [ev for ev in events if isinstance(ev, waits)] == []  # raised, no wait
            # without the override the same wait is slept and the call succeeds
            await bounded(client(req))
            slept = [ev for ev in events if isinstance(ev, FloodWaitStarted)]
            assert [ev.method for ev in slept] == ["messages.getDialogs"]
        assert server.log.count("messages.getDialogs") == 2


async def test_is_user_authorized_does_not_cache_a_flood_as_logged_out() -> None:
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10, max_flood_wait=5)
        async with client:
            client._authorized = None
            server.faults.add(ErrorOnCalls("updates.getState", 420, "FLOOD_WAIT_100", times=1))
            with pytest.raises(tl_errors.FloodWaitError):
                await bounded(client.is_user_authorized())
            assert client._authorized is None  # Telethon would have cached False


async def test_two_clients_of_one_account_share_flood_state_through_redis() -> None:
    # Two guarded clients of the same account (as two processes would be), each with its own
    # Redis connection: a FLOOD_WAIT learned by one makes the other fail locally.
    import uuid

    account = f"it-{uuid.uuid4().hex[:12]}"
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_100"))
    async with TelegramTestServer(faults=plan) as server:
        user = server.world.register_account(None)
        kwargs = {"deadline": 10, "max_flood_wait": 5, "account": account,
                  "storage": "redis://127.0.0.1:6379/0"}
        a = server.client(cls=GuardedTelegramClient, session=server.session(user), **kwargs)
        b = server.client(cls=GuardedTelegramClient, session=server.session(user), **kwargs)
        assert a.guard.pipeline.storage is not b.guard.pipeline.storage
        try:
            async with a, b:
                with pytest.raises(FloodWaitBlocked) as ea:
                    await bounded(a.get_dialogs())
                assert ea.value.from_server and ea.value.seconds == 100
                with pytest.raises(FloodWaitBlocked) as eb:
                    await bounded(b.get_dialogs())
                assert not eb.value.from_server and 95 <= eb.value.seconds <= 100
                assert (await bounded(b.get_me())).id == user
        finally:
            for c in (a, b):
                await c.guard.pipeline.storage.aclose()
        assert server.log.count("messages.getDialogs") == 1
