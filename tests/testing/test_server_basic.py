"""End-to-end: plain Telethon clients against TelegramTestServer (pre-shared sessions)."""

from __future__ import annotations

import asyncio

from telethon import TelegramClient

from telethon_guard.testing.server import TelegramTestServer

T = 15.0  # bound for every wait, seconds


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
