"""GuardedTelegramClient against the local MTProto server: every request through the guard.

Real Telethon, real sockets; the ground truth is ``server.log``.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from telethon import TelegramClient
from telethon import errors as tl_errors
from telethon.tl import functions, types

from telethon_guard import GuardConfig, GuardConfigError, GuardedTelegramClient
from telethon_guard.errors import ClientDisconnectedError
from telethon_guard.loop import current_handler
from telethon_guard.testing.faults import FaultPlan
from telethon_guard.testing.faults_calls import DropReplies, ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import AT_ONCE, TEST_RSA_KEY, InvokeRecorder, bounded, wait_until


async def test_calls_before_connect_fail_at_once_typed() -> None:
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10)
        t0 = time.monotonic()
        with pytest.raises(ClientDisconnectedError):
            await bounded(client(functions.help.GetNearestDcRequest()))
        assert time.monotonic() - t0 < AT_ONCE  # not retried into the 10 s deadline
        assert server.log.count() == 0


async def test_calls_and_connect_init_pass_the_pipeline() -> None:
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5)
        rec = InvokeRecorder(client.guard.pipeline)
        async with client:
            me = await bounded(client.get_me())
            dialogs = await bounded(client.get_dialogs())
        assert me.id > 0
        assert isinstance(dialogs, list)
        # the connect-time init (invokeWithLayer(initConnection(help.getConfig))) is guarded
        init = rec.of("help.getConfig")
        assert init and isinstance(init[0].request, functions.InvokeWithLayerRequest)
        assert rec.of("messages.getDialogs")
        # every request the server saw went through the pipeline
        server_methods = {e.method for e in server.log.requests()}
        assert server_methods <= set(rec.methods())
        # the account key: the auth key's until the user id is known, then the user's (issue 12)
        accounts = [c.account for c in rec.calls]
        assert accounts[0].startswith("key:") and accounts[-1] == f"user:{me.id}"
        assert set(accounts) == {accounts[0], f"user:{me.id}"}
        assert {c.dc_id for c in rec.calls} == {1}
        # Telethon's own flood handling is off underneath
        assert client.flood_sleep_threshold == 0
        client._flood_waited_requests[123] = 1.0
        assert 123 not in client._flood_waited_requests


async def test_bad_settings_raise_at_construction() -> None:
    async with TelegramTestServer() as server:
        with pytest.raises(GuardConfigError) as e:
            server.client(cls=GuardedTelegramClient, deadline=-1)
        assert e.value.field == "deadline"
        with pytest.raises(GuardConfigError):
            server.client(cls=GuardedTelegramClient, preset="robot")
        with pytest.raises(TypeError):
            server.client(cls=GuardedTelegramClient, max_flood_waits=3)
        with pytest.raises(GuardConfigError):
            server.client(cls=GuardedTelegramClient, guard_config=GuardConfig(), deadline=3)
        bot = server.client(cls=GuardedTelegramClient, preset="bot", max_flood_wait=2)
        assert bot.guard.config.deadline == 8.0 and bot.guard.config.max_flood_wait == 2.0
        legacy = server.client(cls=GuardedTelegramClient, flood_sleep_threshold=7)
        assert legacy.guard.config.max_flood_wait == 7.0


async def test_per_call_flood_sleep_threshold_is_not_dropped() -> None:
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient)
        rec = InvokeRecorder(client.guard.pipeline)
        async with client:
            await bounded(client(functions.users.GetUsersRequest([types.InputUserSelf()]),
                                 flood_sleep_threshold=3))
        call = rec.of("users.getUsers")[-1]
        assert call.tags["max_flood_wait"] == "3.0"
        assert getattr(call, "max_flood_wait", 3.0) == 3.0


async def test_nested_resolution_inside_a_request_does_not_deadlock() -> None:
    # The peer is a username: Telethon resolves it (contacts.resolveUsername) from inside the
    # outer request's _call, on the same task, through the same pipeline.
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5, rate_limits=((5, 1.0),))
        rec = InvokeRecorder(client.guard.pipeline)
        async with client:
            history = await bounded(client(functions.messages.GetHistoryRequest(
                peer="news", offset_id=0, offset_date=None, add_offset=0, limit=5,
                max_id=0, min_id=0, hash=0)), 10)
        assert history.count == server.world.config.history_size
        assert rec.methods().index("contacts.resolveUsername") < rec.methods().index(
            "messages.getHistory")


async def test_batched_list_keeps_partial_results_and_resends_only_failed() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 500, "RPC_CALL_FAIL", times=1),
                     ErrorOnCalls("help.getNearestDc", 400, "SOME_BAD_REQUEST"))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5, retry_base_delay=0.01,
                               retry_max_delay=0.05)
        async with client:
            before_users = server.log.count("users.getUsers")
            dialogs_req = functions.messages.GetDialogsRequest(
                offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(),
                limit=10, hash=0)
            users_req = functions.users.GetUsersRequest([types.InputUserSelf()])
            ok = await bounded(client([users_req, dialogs_req]))
            assert isinstance(ok, list) and len(ok) == 2
            assert isinstance(ok[0][0], types.User)
            # the transient failure of one element re-sent that element only
            assert server.log.count("messages.getDialogs") == 2
            assert server.log.count("users.getUsers") == before_users + 1

            bad = functions.help.GetNearestDcRequest()
            with pytest.raises(tl_errors.MultiError) as e:
                await bounded(client([functions.users.GetUsersRequest(
                    [types.InputUserSelf()]), bad]))
            assert e.value.results[0] is not None and e.value.exceptions[0] is None
            assert isinstance(e.value.exceptions[1], tl_errors.BadRequestError)
            assert e.value.results[1] is None
            assert server.log.count("help.getNearestDc") == 1  # 4xx: never retried

            # ordered=True: one after the other, same result shape
            ordered = await bounded(client([users_req, dialogs_req], ordered=True))
            assert isinstance(ordered, list) and len(ordered) == 2
            users_t = [e.time for e in server.log.requests("users.getUsers")][-1]
            dialogs_t = [e.time for e in server.log.requests("messages.getDialogs")][-1]
            assert users_t <= dialogs_t


async def test_failed_init_rolls_back_the_connection() -> None:
    plan = FaultPlan(ErrorOnCalls("help.getConfig", 400, "CONNECTION_LAYER_INVALID", times=1))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5)
        with pytest.raises(tl_errors.BadRequestError):
            await bounded(client.connect())
        assert not client.is_connected()
        assert current_handler(asyncio.get_running_loop()) is None  # released with it
        # not half-connected: a second connect really connects (and inits) again
        await bounded(client.connect())
        try:
            assert client.is_connected()
            assert server.log.count("help.getConfig", outcome="ok") == 1
            assert (await bounded(client.get_me())).id > 0
        finally:
            await bounded(client.disconnect())
        assert current_handler(asyncio.get_running_loop()) is None


async def test_cancelled_connect_rolls_back() -> None:
    plan = FaultPlan(DropReplies("help.getConfig", times=1))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=30)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.connect(), 0.5)
        assert not client.is_connected()
        await bounded(client.connect())
        assert client.is_connected()
        await bounded(client.disconnect())


async def test_disconnect_with_calls_in_flight_is_not_a_caller_cancellation() -> None:
    plan = FaultPlan(DropReplies("messages.getDialogs"))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10, retry_max_attempts=1)
        await bounded(client.connect())
        task = asyncio.ensure_future(client.get_dialogs())
        await wait_until(lambda: server.log.count("messages.getDialogs") > 0)
        t0 = time.monotonic()
        await bounded(client.disconnect())
        # the caller's task was not cancelled: it gets a typed, final connection error
        with pytest.raises(ClientDisconnectedError) as e:
            await bounded(task, 5)
        # no retries against a disconnected client: far below the 10 s deadline they would
        # use (and the server log shows the one attempt)
        assert time.monotonic() - t0 < AT_ONCE
        assert isinstance(e.value, ConnectionError) and not task.cancelled()
        assert server.log.count("messages.getDialogs") == 1
        with pytest.raises(ClientDisconnectedError):  # calls while disconnected: at once
            await bounded(client.get_dialogs(), 1)
        # the breaker did not count any of it: connecting again works at once
        server.faults.clear()
        async with client:
            assert (await bounded(client.get_me())).id > 0


async def test_caller_cancellation_propagates_unchanged() -> None:
    plan = FaultPlan(DropReplies("messages.getDialogs"))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10)
        async with client:
            task = asyncio.ensure_future(client.get_dialogs())
            await wait_until(lambda: server.log.count("messages.getDialogs") > 0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await bounded(task, 5)
            # the client is fine afterwards
            assert (await bounded(client.get_me())).id > 0


async def test_download_from_other_dc_uses_a_guarded_exported_sender() -> None:
    async with TelegramTestServer(rsa_key=TEST_RSA_KEY) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10)
        rec = InvokeRecorder(client.guard.pipeline)
        async with client:
            file_id = server.world.file_message_id
            file_id = file_id() if callable(file_id) else file_id
            msg = await bounded(client.get_messages("news", ids=file_id))
            data = await bounded(client.download_media(msg, file=bytes), 30)
            assert data == server.world.file_bytes()
            borrowed = [s for _state, s in client._borrowed_senders.values()]
        file_calls = rec.of("upload.getFile")
        assert file_calls and all(c.transfer for c in file_calls)
        assert [c.dc_id for c in file_calls].count(2) >= 1
        assert server.log.count("upload.getFile", outcome="ok") == sum(
            1 for c in file_calls if c.dc_id == 2)
        imports = rec.of("auth.importAuthorization")
        assert len(imports) == 1 and imports[0].dc_id == 2
        assert borrowed and all(type(s).__name__ == type(client._sender).__name__
                                for s in borrowed)


async def test_takeout_requests_pass_the_pipeline() -> None:
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5)
        rec = InvokeRecorder(client.guard.pipeline)
        async with client:
            client.session.takeout_id = 77
            async with client.takeout(finalize=False) as takeout:
                messages = await bounded(takeout.get_messages("news", limit=3))
        assert messages.total == server.world.config.history_size
        history = rec.of("messages.getHistory")
        assert history and isinstance(history[-1].request, functions.InvokeWithTakeoutRequest)


async def test_plain_client_class_is_unaffected() -> None:
    # Sanity: the per-server subclassing leaves TelegramClient itself alone.
    async with TelegramTestServer() as server:
        plain = server.client(cls=TelegramClient)
        assert not hasattr(plain, "_guard_link")
        assert plain.flood_sleep_threshold != 0
