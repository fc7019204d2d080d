"""Issue 15 item 2: a progress message edited 20 times in 1 s through EditCoalescer (real
Telethon, real sockets, the guarded client), against a chat that allows 4 edits per 12 s.
(One second, not two: on a loaded host the loop stretches the 20 steps, and past ~3 s the
coalescer's one edit per second would be 5 -- the test's own timing, not the coalescer's.)

Coalesced, 3 or 4 edits reach the server (one per second), no flood is drawn, every caller returns,
and the message ends with the last text (a direct edit with that text then answers
``MESSAGE_NOT_MODIFIED``: the server's own word). Sent directly, the 5th edit draws a flood.
"""

from __future__ import annotations

import asyncio

import pytest
from telethon import errors as tl_errors
from telethon import utils
from telethon.tl import types

from telethon_guard import FloodWaitBlocked, GuardedTelegramClient
from telethon_guard.edits import EditCoalescer
from telethon_guard.testing.faults_limits import FloodWindow
from telethon_guard.testing.faults_peers import OnPeers
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import bounded, measured

STEPS, LIMIT = 20, 4


def _server() -> TelegramTestServer:
    server = TelegramTestServer()
    chat = utils.get_peer_id(types.PeerChannel(server.world.channel_id("chat_a")))
    server.faults.add(OnPeers(chat, FloodWindow("messages.editMessage", LIMIT, 12.0)))
    return server


def _floods(server: TelegramTestServer) -> int:
    return sum(1 for e in server.log.requests("messages.editMessage", outcome="rpc_error")
               if (e.error_message or "").startswith("FLOOD_WAIT"))


async def test_twenty_progress_edits_coalesce_into_four_at_most_with_no_flood_and_the_last_text(
) -> None:
    async with _server() as server:
        client = server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=0)
        async with client:
            chat = await bounded(client.get_input_entity("chat_a"))
            status = await bounded(client.send_message(chat, "0 %"))
            edits = EditCoalescer(client, interval=1.0)
            tasks = []
            for i in range(1, STEPS + 1):
                tasks.append(asyncio.create_task(edits.edit(chat, status.id, f"{i * 5} %")))
                await asyncio.sleep(0.05)
            outcomes = await bounded(asyncio.gather(*tasks, return_exceptions=True))
            assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
            sent = server.log.count("messages.editMessage")
            assert sent <= LIMIT and edits.sent == sent and _floods(server) == 0
            with pytest.raises(tl_errors.MessageNotModifiedError):  # it shows the last text
                await bounded(client.edit_message(chat, status.id, f"{STEPS * 5} %"))
            await bounded(edits.aclose())
            sent = server.log.count("messages.editMessage")
            with pytest.raises(RuntimeError, match=r"after aclose\(\)"):  # not sent quietly
                await bounded(edits.edit(chat, status.id, "after close"))
            await asyncio.sleep(0.2)
            assert server.log.count("messages.editMessage") == sent

    async with _server() as direct_server:
        client = direct_server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=0)
        async with client:
            chat = await bounded(client.get_input_entity("chat_a"))
            status = await bounded(client.send_message(chat, "0 %"))
            failed = 0
            for i in range(1, STEPS + 1):
                try:
                    await bounded(client.edit_message(chat, status.id, f"{i * 5} %"))
                except FloodWaitBlocked:
                    failed += 1
                await asyncio.sleep(0.1)
            direct_floods = _floods(direct_server)
    assert direct_floods == 1 and failed == STEPS - LIMIT
    measured("progress_edits_20_in_2s", coalesced_edits_sent=sent, coalesced_floods=0,
             coalesced_failed=0, direct_edits_ok=STEPS - failed, direct_floods=direct_floods,
             direct_failed=failed)
