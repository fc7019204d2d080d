"""Testing your own code against a flood with telethon-guard's MTProto test server.

Run it with ``python3 -m pytest examples/test_my_service_under_flood.py``. The server is a real
MTProto endpoint on 127.0.0.1; Telethon (plain or guarded) talks to it over TCP.
"""

from __future__ import annotations

import asyncio

import pytest
from telethon import TelegramClient

from telethon_guard import GuardedTelegramClient
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import FaultPlan, FloodWindow


async def fetch_latest(client: TelegramClient, channel: str, pages: int) -> list[int]:
    """The code under test: read ``pages`` pages of history, newest first."""
    ids: list[int] = []
    async for message in client.iter_messages(channel, limit=pages * 100):
        ids.append(message.id)
    return ids


@pytest.mark.asyncio  # pytest-asyncio; not needed with asyncio_mode = "auto"
async def test_my_service_survives_a_history_flood() -> None:
    # Telegram-like limit: 5 getHistory per 2 s per account, FLOOD_WAIT with the seconds left.
    plan = FaultPlan(FloodWindow("messages.getHistory", limit=5, window=2.0))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(GuardedTelegramClient, max_flood_wait=5, deadline=20)
        async with client:
            ids = await asyncio.wait_for(fetch_latest(client, "news", pages=8), timeout=30)

        assert len(ids) == 800 and len(set(ids)) == 800  # every message exactly once
        # Ground truth from the server: never more than the limit in any window.
        assert server.log.max_in_window("messages.getHistory", 2.0) <= 5
