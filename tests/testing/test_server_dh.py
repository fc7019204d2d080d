"""The auth-key exchange: fresh sessions log in, and other-DC senders do DH + import."""

from __future__ import annotations

import asyncio

import rsa
from telethon.crypto import rsa as telethon_rsa
from telethon.sessions import StringSession

from telethon_guard.testing import TelegramTestServer, crypto

T = 15.0


async def test_fresh_session_does_dh_then_signs_in_with_code() -> None:
    async with TelegramTestServer() as server:
        session = server.empty_session()
        assert not session.auth_key
        client = server.client(session=session)
        await asyncio.wait_for(client.connect(), T)
        try:
            assert client.session.auth_key  # created by the DH exchange
            key_id = client.session.auth_key.key_id
            state = next(s for s in server.auth_states() if s.auth_key_id == key_id)
            assert state.dc_id == 1 and state.user_id is None
            assert state.auth_key == client.session.auth_key.key
            assert not await asyncio.wait_for(client.is_user_authorized(), T)
            phone = "+15550001234"
            await asyncio.wait_for(client.send_code_request(phone), T)
            user = await asyncio.wait_for(
                client.sign_in(phone, server.world.config.login_code), T
            )
            me = await asyncio.wait_for(client.get_me(), T)
            assert me.id == user.id == state.user_id
            assert state.layer is not None and state.api_id == server.api_id
            saved = client.session.save()
        finally:
            await client.disconnect()
        # the exchanged key keeps working from a saved string session
        async with server.client(session=StringSession(saved)) as again:
            assert (await asyncio.wait_for(again.get_me(), T)).id == user.id
        assert server.internal_errors == []


async def test_fresh_session_bot_login() -> None:
    async with TelegramTestServer(dcs=1) as server:
        client = server.client(session=server.empty_session())
        await asyncio.wait_for(client.connect(), T)
        try:
            bot = await asyncio.wait_for(client.sign_in(bot_token="4242:test-token"), T)
            assert bot.id == 4242 and bot.bot
        finally:
            await client.disconnect()


async def test_download_from_second_dc_uses_exported_sender() -> None:
    async with TelegramTestServer(dcs=2) as server:
        account = server.world.register_account()
        async with server.client(session=server.session(account)) as client:
            msg = await asyncio.wait_for(
                client.get_messages("news", ids=server.world.file_message_id), T
            )
            assert msg.document.dc_id == 2
            data = await asyncio.wait_for(client.download_media(msg, file=bytes), 30)
        assert data == server.world.file_bytes()
        log = server.log
        assert log.count("auth.exportAuthorization", outcome="ok", dc_id=1) == 1
        assert log.count("auth.importAuthorization", outcome="ok", dc_id=2) == 1
        assert log.count("upload.getFile", outcome="ok", dc_id=2) >= 1
        assert log.count("upload.getFile", outcome="ok", dc_id=1) == 0
        # DC 2 got a brand-new key through DH, then logged in by importing the authorization
        dc2 = [s for s in server.auth_states() if s.dc_id == 2]
        assert len(dc2) == 1 and dc2[0].user_id == account
        assert log.connections_opened(dc_id=2) == 1
        assert server.internal_errors == []


async def test_fixed_rsa_key_is_registered_and_used() -> None:
    pem = crypto.server_rsa_key().save_pkcs1()
    key = rsa.PrivateKey.load_pkcs1(pem)
    async with TelegramTestServer(dcs=1, rsa_key=pem) as server:
        assert crypto.fingerprint(key) in telethon_rsa._server_keys
        client = server.client(session=server.empty_session())
        await asyncio.wait_for(client.connect(), T)
        await client.disconnect()
        assert len(server.auth_states()) == 1
