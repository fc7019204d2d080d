"""End-to-end: real Telethon clients exercising the world's handlers over TelegramTestServer."""

from __future__ import annotations

import asyncio
import io

from telethon import utils
from telethon.tl import types

from telethon_guard.testing.server import TelegramTestServer
from telethon_guard.testing.world_state import WorldConfig

T = 30.0  # bound for every wait, seconds


async def test_iter_messages_every_id_once_forwards_reverse_and_offset() -> None:
    async with TelegramTestServer(world_config=WorldConfig(history_size=1000)) as server:
        client = server.client()
        async with client:
            ids = [m.id async for m in client.iter_messages("news", wait_time=0)]
            assert ids == list(range(1000, 0, -1))
            rev = [m.id async for m in client.iter_messages("news", reverse=True, wait_time=0)]
            assert rev == list(range(1, 1001))
            part = [m.id async for m in client.iter_messages("news", offset_id=300, limit=250,
                                                              wait_time=0)]
            assert part == list(range(299, 49, -1))
            part = [m.id async for m in client.iter_messages(
                "news", offset_id=300, reverse=True, limit=150, wait_time=0)]
            assert part == list(range(301, 451))
            ranged = [m.id async for m in client.iter_messages(
                "news", min_id=10, max_id=20, wait_time=0)]
            assert ranged == list(range(19, 10, -1))
            total = (await client.get_messages("news", limit=0)).total
            assert total == 1000
        assert server.internal_errors == []


async def test_send_message_to_channel_user_and_self() -> None:
    async with TelegramTestServer() as server:
        account = server.world.register_account()
        client = server.client(session=server.session(account))
        async with client:
            m1 = await asyncio.wait_for(client.send_message("chat_a", "hello group"), T)
            m2 = await asyncio.wait_for(client.send_message("alice", "hello alice"), T)
            m3 = await asyncio.wait_for(client.send_message("me", "note to self"), T)
            m4 = await asyncio.wait_for(client.send_message("chat_d", "a post"), T)
            assert (m1.id, m1.text, m1.out) == (11, "hello group", True)
            assert m2.text == "hello alice" and m2.out and m2.chat_id == server.world.user_id(
                "alice")
            assert m3.id == m2.id + 1
            assert m4.post and m4.text == "a post"
            for i in range(3):
                await client.send_message("alice", f"more {i}")
            dm = [m.text async for m in client.iter_messages("alice", limit=3)]
            assert dm == ["more 2", "more 1", "more 0"]
            dm = [m.text async for m in client.iter_messages("alice", reverse=True)]
            assert dm == ["hello alice", "more 0", "more 1", "more 2"]
            last = await client.get_messages("chat_a", limit=1)
            assert last[0].id == m1.id and last[0].text == "hello group"
            fwd = await asyncio.wait_for(client.forward_messages("chat_b", [5, 6], "news"), T)
            assert [m.fwd_from.channel_post for m in fwd] == [5, 6]
            async with client.action("alice", "typing"):
                pass
            members = await asyncio.wait_for(client.get_participants("chat_c"), T)
            assert account in {u.id for u in members} and members.total == len(members)
            dialogs = await asyncio.wait_for(client.get_dialogs(), T)
            names = {d.name for d in dialogs}
            assert {"News", "Chat A", "Alice"} <= names
        sent = server.world.sent_messages(account=account)
        assert [s.text for s in sent] == [
            "hello group", "hello alice", "note to self", "a post",
            "more 0", "more 1", "more 2", "@news message 5", "@news message 6"]
        assert server.internal_errors == []


async def test_download_media_from_file_dc_and_upload() -> None:
    config = WorldConfig(history_size=20, file_size=300 * 1024 + 7, file_dc=2)
    async with TelegramTestServer(dcs=2, world_config=config) as server:
        client = server.client()
        async with client:
            msg = await client.get_messages("news", ids=server.world.file_message_id)
            assert isinstance(msg.media, types.MessageMediaDocument)
            data = await asyncio.wait_for(client.download_media(msg, file=bytes), T)
            assert data == server.world.file_bytes()
            uploaded = await asyncio.wait_for(
                client.send_file("me", io.BytesIO(b"u" * 5000), file_name="u.bin",
                                 force_document=True), T)
            assert uploaded.document.size == 5000
        assert server.log.count("auth.importAuthorization", outcome="ok") == 1
        # Telethon asks its home DC first and follows FILE_MIGRATE_2 to an exported sender
        assert server.log.count("upload.getFile", outcome="rpc_error") == 1
        assert server.internal_errors == []


async def test_start_with_phone_code_on_a_fresh_key() -> None:
    async with TelegramTestServer() as server:
        client = server.client(session=server.empty_session())

        async def scenario() -> None:
            await client.start(phone="+10000000000", code_callback=lambda: "12345")
            me = await client.get_me()
            assert me.phone == "10000000000" and me.is_self
            await client.send_message("bob", "hi from a new login")
            assert await client.log_out()

        try:
            await asyncio.wait_for(scenario(), T)
        finally:
            await client.disconnect()
        assert server.world.sent_messages()[0].text == "hi from a new login"
        assert server.log.count("auth.logOut", outcome="ok") == 1
        assert server.internal_errors == []


async def test_bot_login_and_get_entity() -> None:
    async with TelegramTestServer() as server:
        client = server.client(session=server.empty_session())

        async def scenario() -> None:
            await client.start(bot_token="4242:AAbbCC")
            me = await client.get_me()
            assert me.bot and me.id == 4242
            news = await client.get_entity("news")
            assert utils.get_peer_id(news) == utils.get_peer_id(
                types.PeerChannel(server.world.main_channel_id))

        try:
            await asyncio.wait_for(scenario(), T)
        finally:
            await client.disconnect()
        assert server.internal_errors == []
