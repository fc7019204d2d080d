"""Testing your own event handler against a flood with telethon-guard's MTProto test server.

Run it with ``python3 -m pytest examples/test_handler_under_flood.py``. The server pushes new
messages to the connected client like Telegram (``server.push_message``), can leave update
gaps that Telethon must fill with ``updates.getDifference`` (``server.make_gap``), and
answers your handler's replies under a Telegram-like send limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telethon import events

from telethon_guard import FloodWaitBlocked, GuardedTelegramClient
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import FaultPlan, FloodWindow


async def answer(event: Any) -> None:
    """The code under test: an auto-responder that answers every incoming private message.

    A FLOOD_WAIT longer than the guard may wait is raised at once as ``FloodWaitBlocked``
    (nothing was sent): wait ``retry_after`` seconds and try again, a few times at most.
    """
    for _ in range(5):
        try:
            await event.reply(f"re: {event.raw_text}")
            return
        except FloodWaitBlocked as e:
            await asyncio.sleep(e.retry_after)


async def replies_reach(server: TelegramTestServer, chat: int, count: int) -> None:
    """Wait until the server stored ``count`` replies in ``chat`` (a user id), polling every
    50 ms (the caller bounds the wait)."""
    while True:
        if len(server.world.sent_messages(peer=chat)) >= count:
            return
        await asyncio.sleep(0.05)


@pytest.mark.asyncio  # pytest-asyncio; not needed with asyncio_mode = "auto"
async def test_my_auto_responder_answers_each_message_once_under_a_send_flood() -> None:
    # Telegram-like limit: 3 sendMessage per 1 s per account, FLOOD_WAIT with the seconds left.
    plan = FaultPlan(FloodWindow("messages.sendMessage", limit=3, window=1.0))
    async with TelegramTestServer(faults=plan) as server:
        alice = server.world.user_id("alice")
        bob = server.session(server.world.user_id("bob"))     # our service logs in as bob
        client = server.client(GuardedTelegramClient, session=bob, max_flood_wait=5,
                               deadline=20)
        client.add_event_handler(answer, events.NewMessage(incoming=True))
        async with client:
            for i in range(8):                                 # alice writes to bob
                server.push_message("alice", "bob", f"question {i}")
            server.make_gap("bob", 2, from_user="alice")       # 2 messages Telegram never pushed
            server.push_message("alice", "bob", "last question")  # reveals the gap
            await asyncio.wait_for(replies_reach(server, alice, 11), timeout=30)
            await asyncio.sleep(0.5)                           # nothing more may arrive

        replies = sorted(m.text for m in server.world.sent_messages(peer=alice))
        asked = [f"question {i}" for i in range(8)] + [
            "gap message 1 of 2", "gap message 2 of 2", "last question"]
        assert replies == sorted(f"re: {q}" for q in asked)    # each answered exactly once
        # Ground truth from the server: never more sends than the limit in any window.
        assert server.log.max_in_window("messages.sendMessage", 1.0) <= 3
