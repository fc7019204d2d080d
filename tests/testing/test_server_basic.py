"""End-to-end: plain Telethon clients against TelegramTestServer over real TCP."""

from __future__ import annotations

import asyncio

import pytest
from telethon import TelegramClient, errors
from telethon.network import (
    ConnectionTcpAbridged,
    ConnectionTcpFull,
    ConnectionTcpIntermediate,
    ConnectionTcpObfuscated,
)
from telethon.network.connection.connection import Connection
from telethon.network.connection.tcpintermediate import RandomizedIntermediatePacketCodec
from telethon.tl import functions, types

from telethon_guard.testing import Delay, FaultPlan
from telethon_guard.testing.faults import OnCalls
from telethon_guard.testing.server import TelegramTestServer

T = 15.0  # bound for every wait, seconds


class _PaddedCodec(RandomizedIntermediatePacketCodec):
    tag = b"\xdd\xdd\xdd\xdd"  # padded intermediate without the obfuscation layer


class ConnectionTcpPaddedIntermediate(Connection):
    packet_codec = _PaddedCodec


async def test_get_me_over_pre_shared_session() -> None:
    async with TelegramTestServer() as server:
        account = server.world.register_account()
        client = server.client(session=server.session(account))
        assert isinstance(client, TelegramClient)
        async with client:
            me = await asyncio.wait_for(client.get_me(), T)
        assert me.id == account
        assert server.log.count("help.getConfig", outcome="ok") == 1
        assert server.log.count("users.getUsers", account=account) >= 1
        assert server.log.connections_opened(dc_id=1) == 1
        assert server.internal_errors == []


@pytest.mark.parametrize(
    ("connection", "framing"),
    [
        (ConnectionTcpFull, "full"),
        (ConnectionTcpIntermediate, "intermediate"),
        (ConnectionTcpAbridged, "abridged"),
        (ConnectionTcpPaddedIntermediate, "intermediate"),
        (ConnectionTcpObfuscated, "abridged"),  # obfuscated2 around abridged
    ],
)
async def test_each_framing_is_detected_and_served(
    connection: type[Connection], framing: str
) -> None:
    async with TelegramTestServer(dcs=1) as server:
        client = server.client(connection=connection)
        async with client:
            me = await asyncio.wait_for(client.get_me(), T)
            # a reply large enough for the 3-byte abridged length and a container
            history = await asyncio.wait_for(client.get_messages("news", limit=100), T)
        assert me.id > 0
        assert len(history) == 100
        framings = {e.framing for e in server.log.requests()}
        assert framings == {framing}


async def test_send_message_is_stored_and_duplicate_random_id_refused() -> None:
    async with TelegramTestServer() as server:
        account = server.world.register_account()
        client = server.client(
            session=server.session(account), request_retries=0, raise_last_call_error=True
        )
        async with client:
            msg = await asyncio.wait_for(client.send_message("chat_a", "hello"), T)
            assert msg.message == "hello"
            # long text: Telethon sends it gzip_packed
            long_text = "gzip me" * 400
            msg2 = await asyncio.wait_for(client.send_message("chat_a", long_text), T)
            assert msg2.message == long_text
            req = functions.messages.SendMessageRequest("chat_a", "again", random_id=42)
            await asyncio.wait_for(client(req), T)
            # RANDOM_ID_DUPLICATE is a 500 to Telethon: one attempt, a 2 s sleep, then raised
            with pytest.raises(errors.RandomIdDuplicateError):
                await asyncio.wait_for(client(req), T)
        texts = [s.text for s in server.world.sent_messages(account=account)]
        assert texts == ["hello", long_text, "again"]
        assert server.stats["gzip_packed_received"] >= 1
        assert server.stats["bad_server_salt"] >= 1  # Telethon starts with salt 0
        assert server.stats["new_session_created"] >= 1
        assert server.log.count("messages.sendMessage", outcome="ok") == 3
        assert server.log.count("messages.sendMessage", outcome="rpc_error") == 1
        assert server.log.duplicates() == {}  # the duplicate was refused, not executed twice
        assert [e.random_id for e in server.log.requests("messages.sendMessage")][-2:] == [42, 42]


async def test_iter_messages_5000_each_id_exactly_once() -> None:
    async with TelegramTestServer() as server:
        assert server.world.config.history_size == 5000
        async with server.client() as client:

            async def collect() -> list[int]:
                return [m.id async for m in client.iter_messages("news", wait_time=0)]

            ids = await asyncio.wait_for(collect(), 60)
        assert len(ids) == 5000
        assert sorted(ids) == list(range(1, 5001))
        assert ids == sorted(ids, reverse=True)
        assert server.log.count("messages.getHistory", outcome="ok") == 50


async def test_requests_on_one_connection_run_concurrently() -> None:
    plan = FaultPlan(OnCalls("help.getNearestDc", None, Delay(1.0)))
    async with TelegramTestServer(faults=plan) as server:
        async with server.client() as client:
            slow = asyncio.ensure_future(client(functions.help.GetNearestDcRequest()))
            await asyncio.sleep(0.1)
            me = await asyncio.wait_for(client.get_me(), T)  # not stuck behind the delay
            assert me is not None
            assert not slow.done()
            nearest = await asyncio.wait_for(slow, T)
        assert isinstance(nearest, types.NearestDc)
        done = [e.method for e in server.log.requests()]
        assert done.index("users.getUsers") < done.index("help.getNearestDc")


async def test_service_calls_ping_and_destroy_session() -> None:
    async with TelegramTestServer(dcs=1) as server:
        async with server.client() as client:
            pong = await asyncio.wait_for(client(functions.PingRequest(ping_id=7)), T)
            assert isinstance(pong, types.Pong) and pong.ping_id == 7
            pong2 = await asyncio.wait_for(
                client(functions.PingDelayDisconnectRequest(ping_id=8, disconnect_delay=75)), T
            )
            assert pong2.ping_id == 8
            gone = await asyncio.wait_for(
                client(functions.DestroySessionRequest(session_id=12345)), T
            )
            assert isinstance(gone, types.DestroySessionNone)
        assert server.log.count("ping", outcome="ok") >= 1


async def test_two_live_servers_do_not_share_telethon_config_cache() -> None:
    async with TelegramTestServer() as a, TelegramTestServer() as b:
        for server in (a, b):
            async with server.client() as client:
                msg = await asyncio.wait_for(
                    client.get_messages("news", ids=server.world.file_message_id), T
                )
                data = await asyncio.wait_for(client.download_media(msg, file=bytes), 30)
            assert data == server.world.file_bytes()
            assert server.log.count("upload.getFile", outcome="ok", dc_id=2) >= 1
        assert a.client_class() is not b.client_class()
        assert issubclass(a.client_class(), TelegramClient)


async def test_flood_window_surfaces_in_telethon_and_in_the_log() -> None:
    from telethon_guard.testing.faults import FloodWindow

    plan = FaultPlan(FloodWindow("help.getNearestDc", limit=3, window=30))
    async with TelegramTestServer(dcs=1, faults=plan) as server:
        async with server.client(flood_sleep_threshold=0) as client:
            for _ in range(3):
                await asyncio.wait_for(client(functions.help.GetNearestDcRequest()), T)
            with pytest.raises(errors.FloodWaitError) as info:
                await asyncio.wait_for(client(functions.help.GetNearestDcRequest()), T)
        assert 29 <= info.value.seconds <= 30
        assert server.log.max_in_window("help.getNearestDc", 30.0) == 3
        assert server.log.count("help.getNearestDc", outcome="rpc_error") == 1
