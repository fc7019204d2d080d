"""Issue 15 item 1: one chat's flood stays in that chat (real Telethon, real sockets).

A bot floods one group while answering 30 private chats; a status message's edits flood in one
chat while another chat's edits are due on a schedule; floods come from several chats. Each
scenario runs through ``GuardedTelegramClient`` and, for the figures, through plain Telethon
(``request_retries=5``, Telethon's default, so its flood sleeping is what it does out of the
box). Ground truth is ``server.log`` and the server's stored messages.

Scaled: the group limit is 3 messages per 12 s and the edit limit 3 edits per 12 s (Telegram:
about 20 per minute per group; edits of one message are limited too, limits unpublished), so
a flood is a wait of about 12 s instead of a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from telethon import errors as tl_errors
from telethon import utils
from telethon.tl import functions, types

from telethon_guard import FloodWaitBlocked, GuardedTelegramClient
from telethon_guard.events import FloodBlocked, FloodWaitStarted, GuardEvent
from telethon_guard.testing.faults_limits import FloodWindow
from telethon_guard.testing.faults_peers import OnPeers
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import AT_ONCE, bounded, measured

LIMIT, WINDOW = 3, 12.0
"""The scaled per-chat limit: 3 writes per 12 s (a flood is a wait of about 12 s)."""


def _channel(server: TelegramTestServer, name: str) -> int:
    return utils.get_peer_id(types.PeerChannel(server.world.channel_id(name)))


def _privates(server: TelegramTestServer, n: int) -> list[types.InputPeerUser]:
    """``n`` users of the world, as the bot would have them from their messages."""
    out = []
    for _ in range(n):
        uid = server.world.register_account()
        out.append(types.InputPeerUser(uid, server.world.core.users[uid].access_hash))
    return out


def _floods(server: TelegramTestServer, method: str) -> int:
    return sum(1 for e in server.log.requests(method, outcome="rpc_error")
               if (e.error_message or "").startswith("FLOOD_WAIT"))


async def _bot_run(server: TelegramTestServer, client: Any) -> dict[str, Any]:
    """6 sends into the group (3 allowed) interleaved with 30 private answers, 0.1 s apart."""
    group_name = "chat_a"
    group = await bounded(client.get_input_entity(group_name))
    privates = _privates(server, 30)
    latencies: list[float] = []
    private_errors: list[BaseException] = []
    group_errors: list[BaseException] = []

    async def group_sends() -> None:
        for i in range(6):
            try:
                await client.send_message(group, f"busy {i}")
            except tl_errors.FloodWaitError as e:
                group_errors.append(e)
            await asyncio.sleep(0.1)

    async def private_sends() -> None:
        await asyncio.sleep(0.35)  # the group floods first
        for i, peer in enumerate(privates):
            t0 = time.monotonic()
            try:
                await client.send_message(peer, f"answer {i}")
            except Exception as e:
                private_errors.append(e)
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.1)

    await bounded(asyncio.gather(group_sends(), private_sends()), 60)
    delivered = sum(len(server.world.sent_messages(peer=p.user_id)) for p in privates)
    return {
        "private_delivered": delivered,
        "private_failed": len(private_errors),
        "private_max_latency": max(latencies),
        "group_delivered": len(server.world.sent_messages(peer=_channel(server, group_name))),
        "floods_drawn": _floods(server, "messages.sendMessage"),
        "errors": private_errors,
        "group_errors": group_errors,
    }


async def _plain_run(method: str, run: Callable[[TelegramTestServer, Any],
                                               Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """``run`` with plain Telethon (``request_retries=5``) on a fresh server whose chat_a has a
    ``FloodWindow`` on ``method`` (LIMIT calls per WINDOW)."""
    plain_server = TelegramTestServer()
    plain_server.faults.add(OnPeers(_channel(plain_server, "chat_a"),
                                    FloodWindow(method, LIMIT, WINDOW)))
    async with plain_server:
        plain_client = plain_server.client(request_retries=5)
        async with plain_client:
            return await run(plain_server, plain_client)


async def test_a_groups_send_flood_leaves_30_private_answers_undelayed_and_delivered() -> None:
    events: list[GuardEvent] = []
    server = TelegramTestServer()
    group = _channel(server, "chat_a")
    server.faults.add(OnPeers(group, FloodWindow("messages.sendMessage", LIMIT, WINDOW)))
    async with server:
        client = server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=2,
                               on_event=events.append)
        async with client:
            guard = await _bot_run(server, client)
    assert guard["private_delivered"] == 30 and not guard["errors"]
    # No private send waited for a flood: nothing but the group's scope was ever blocked.
    blocked = {e.scope for e in events if isinstance(e, (FloodBlocked, FloodWaitStarted))}
    assert blocked and all("/writes:peer#" in s for s in blocked), blocked
    assert guard["private_max_latency"] < AT_ONCE  # the avoided wait is ~12 s
    # The group: 3 delivered, one flood drawn; its later sends refused locally.
    assert guard["group_delivered"] == LIMIT and guard["floods_drawn"] == 1
    assert len(guard["group_errors"]) == 3
    assert all(isinstance(e, FloodWaitBlocked) for e in guard["group_errors"])
    assert [e.from_server for e in guard["group_errors"]] == [True, False, False]

    plain = await _plain_run("messages.sendMessage", _bot_run)
    measured("group_flood_30_private_answers",
             guard_private_delivered=guard["private_delivered"],
             guard_private_failed=guard["private_failed"],
             guard_private_max_latency=guard["private_max_latency"],
             guard_group_delivered=guard["group_delivered"],
             guard_floods_drawn=guard["floods_drawn"],
             plain_private_delivered=plain["private_delivered"],
             plain_private_failed=plain["private_failed"],
             plain_private_max_latency=plain["private_max_latency"],
             plain_group_delivered=plain["group_delivered"],
             plain_floods_drawn=plain["floods_drawn"])


async def _edit_run(server: TelegramTestServer, client: Any) -> dict[str, Any]:
    """A status message in chat A edited 5 times 0.2 s apart (3 allowed per 12 s) while a
    message in chat B is edited every 0.5 s for 4 s: how late is each of B's edits?"""
    a = await bounded(client.get_input_entity("chat_a"))
    b = await bounded(client.get_input_entity("chat_b"))
    status_a = await bounded(client.send_message(a, "progress 0 %"))
    status_b = await bounded(client.send_message(b, "progress 0 %"))
    lateness: list[float] = []
    a_times: list[float] = []

    def edit(peer: Any, msg_id: int, text: str) -> Any:
        return client(functions.messages.EditMessageRequest(peer=peer, id=msg_id, message=text))

    async def edits_a() -> None:
        for i in range(1, 6):
            await edit(a, status_a.id, f"progress {i * 20} %")
            a_times.append(time.monotonic())
            await asyncio.sleep(0.2)

    async def edits_b(start: float) -> None:
        for i in range(1, 9):
            due = start + 0.5 * i
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await edit(b, status_b.id, f"progress {i * 10} %")
            lateness.append(time.monotonic() - due)

    await bounded(asyncio.gather(edits_a(), edits_b(time.monotonic())), 60)
    return {
        "b_max_late": max(lateness),
        "b_edits": len(lateness),
        "a_edits": len(a_times),
        "floods_drawn": _floods(server, "messages.editMessage"),
        "edits_at_server": server.log.count("messages.editMessage", outcome="ok"),
    }


async def test_one_chats_edit_flood_leaves_other_chats_edits_on_time_and_draws_one_flood(
) -> None:
    events: list[GuardEvent] = []
    server = TelegramTestServer()
    server.faults.add(OnPeers(_channel(server, "chat_a"),
                              FloodWindow("messages.editMessage", LIMIT, WINDOW)))
    async with server:
        client = server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=15,
                               on_event=events.append)
        async with client:
            guard = await _edit_run(server, client)
    # Chat A's 4th edit waited out its flood once and went through; no second flood.
    assert guard["a_edits"] == 5 and guard["floods_drawn"] == 1
    assert guard["edits_at_server"] == 5 + 8
    waits = [e for e in events if isinstance(e, FloodWaitStarted)]
    assert len(waits) == 1 and "/writes:peer#" in waits[0].scope
    # Chat B's edits were never held: each went out within AT_ONCE of its due time (the
    # avoided wait is ~12 s).
    assert guard["b_edits"] == 8 and guard["b_max_late"] < AT_ONCE

    plain = await _plain_run("messages.editMessage", _edit_run)
    measured("edit_flood_in_one_chat",
             guard_b_max_late=guard["b_max_late"], guard_floods_drawn=guard["floods_drawn"],
             guard_edits_at_server=guard["edits_at_server"],
             plain_b_max_late=plain["b_max_late"], plain_floods_drawn=plain["floods_drawn"],
             plain_edits_at_server=plain["edits_at_server"])


async def test_floods_from_three_chats_widen_to_the_account_two_do_not() -> None:
    server = TelegramTestServer()
    chats = ["chat_a", "chat_b", "chat_c"]
    server.faults.add(OnPeers([_channel(server, n) for n in chats],
                              FloodWindow("messages.sendMessage", 1, 30, per_peer=True)))
    async with server:
        client = server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=2)
        async with client:
            peers = [await bounded(client.get_input_entity(n)) for n in chats]
            private = _privates(server, 2)
            for peer in peers[:2]:
                await bounded(client.send_message(peer, "1"))
                with pytest.raises(FloodWaitBlocked) as e:
                    await bounded(client.send_message(peer, "2"))
                assert e.value.from_server and "/writes:peer#" in e.value.scope
            await bounded(client.send_message(private[0], "two chats flooded: still free"))
            await bounded(client.send_message(peers[2], "1"))
            with pytest.raises(FloodWaitBlocked) as third:
                await bounded(client.send_message(peers[2], "2"))
            assert third.value.scope.endswith("/method:messages.sendMessage")
            sent = server.log.count("messages.sendMessage")
            with pytest.raises(FloodWaitBlocked) as widened:
                await bounded(client.send_message(private[1], "three chats: account-wide"))
            assert not widened.value.from_server
            assert server.log.count("messages.sendMessage") == sent  # refused locally
    assert len(server.world.sent_messages(peer=private[0].user_id)) == 1
    assert _floods(server, "messages.sendMessage") == 3
