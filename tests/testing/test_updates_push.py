"""The test server pushes updates like Telegram: real Telethon clients over real sockets.

Every wait is bounded (``T``); handlers record what they receive into lists the tests read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from telethon import TelegramClient, events, utils
from telethon.tl import types

from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.world import UnknownPeerError
from tests._waits import poll_until

T = 20.0  # bound for every wait, seconds


def diffs(server: TelegramTestServer) -> tuple[int, int]:
    """(updates.getDifference, updates.getChannelDifference) calls the server answered."""
    return (server.log.count("updates.getDifference", outcome="ok"),
            server.log.count("updates.getChannelDifference", outcome="ok"))


async def tracked(server: TelegramTestServer, got: list[Any], from_user: str, peer: str,
                  text: str = "tracked") -> tuple[int, int]:
    """Push the first message of ``peer`` (the client then tracks its box), wait for the
    handler, and return :func:`diffs` at that point."""
    server.push_message(from_user, peer, text)
    await until(lambda: len(got) == 1)
    return diffs(server)


async def until(cond: Callable[[], bool], timeout: float = T) -> None:
    """Wait until ``cond()`` holds; ``AssertionError`` after ``timeout`` seconds."""
    await poll_until(cond, timeout)


@asynccontextmanager
async def listening(server: TelegramTestServer, user: str, **client_kwargs: Any
                    ) -> AsyncIterator[tuple[TelegramClient, list[Any]]]:
    """A connected client logged in as directory user ``user`` with a NewMessage handler
    appending every event to the yielded list (``client_kwargs`` go to the client)."""
    uid = server.world.user_id(user)
    client = server.client(session=server.session(uid), **client_kwargs)
    got: list[Any] = []

    async def on_message(event: Any) -> None:
        got.append(event)

    client.add_event_handler(on_message, events.NewMessage())
    await asyncio.wait_for(client.connect(), T)
    try:
        yield client, got
    finally:
        await asyncio.wait_for(client.disconnect(), T)


async def test_alice_send_message_fires_bobs_handler() -> None:
    async with TelegramTestServer() as server:
        async with listening(server, "alice") as (alice, alice_got), \
                listening(server, "bob") as (_, bob_got):
            bob_id = server.world.user_id("bob")
            alice_id = server.world.user_id("alice")
            pts_before = server.world.account_pts(bob_id)
            before = diffs(server)
            sent = await asyncio.wait_for(alice.send_message("bob", "hi bob"), T)
            await until(lambda: len(bob_got) == 1)
            event = bob_got[0]
            assert event.raw_text == "hi bob"
            assert event.sender_id == alice_id and event.chat_id == alice_id
            assert not event.out and event.is_private
            assert server.world.account_pts(bob_id) == pts_before + 1
            # bob's copy has bob's own message id; alice's handler never sees her own send
            assert sent.out and sent.chat_id == bob_id
            await asyncio.sleep(0.3)
            assert len(bob_got) == 1 and alice_got == []
            assert diffs(server) == before  # no gap: nothing fetched


async def test_pushed_messages_fire_handlers_in_private_group_and_channels() -> None:
    async with TelegramTestServer() as server:
        async with listening(server, "bob") as (bob, got):
            group = server.world.group_id("group")
            before = diffs(server)
            server.push_message("carol", "bob", "private short")
            server.push_message("carol", "bob", "private full", form="full")
            server.push_message("carol", "group", "group short")
            server.push_message("alice", "group", "group full", form="full")
            server.push_message("alice", "chat_a", "megagroup")
            server.push_message(None, "news", "broadcast post")
            await until(lambda: len(got) == 6)
            by_text = {e.raw_text: e for e in got}
            carol = server.world.user_id("carol")
            assert by_text["private short"].chat_id == carol
            assert by_text["private full"].chat_id == carol
            assert by_text["group short"].chat_id == -group
            assert by_text["group short"].sender_id == carol
            assert by_text["group full"].chat_id == -group
            chat_a = utils.get_peer_id(types.PeerChannel(server.world.channel_id("chat_a")))
            assert by_text["megagroup"].chat_id == chat_a
            assert by_text["megagroup"].sender_id == server.world.user_id("alice")
            assert by_text["broadcast post"].is_channel and not by_text["megagroup"].out
            # the group's history, read back through the API, holds the two messages
            hist = [m.raw_text async for m in bob.iter_messages(types.PeerChat(group), limit=5)]
            assert hist == ["group full", "group short"]
            assert server.stats["updates_pushed"] == 6
            await asyncio.sleep(0.3)
            assert len(got) == 6  # each exactly once
            assert diffs(server) == before


async def test_private_gap_is_filled_once_through_get_difference() -> None:
    async with TelegramTestServer() as server:
        async with listening(server, "bob") as (_, got):
            before = await tracked(server, got, "carol", "bob", "before")
            gap = server.make_gap("bob", 3, from_user="carol")
            assert len(gap) == 3 and all(d.pushed == 0 for d in gap)
            await asyncio.sleep(0.3)
            assert len(got) == 1  # a gap is not pushed
            server.push_message("carol", "bob", "after")
            await until(lambda: len(got) == 5)
            texts = [e.raw_text for e in got]
            assert texts[0] == "before" and sorted(texts[1:]) == sorted(
                ["gap message 1 of 3", "gap message 2 of 3", "gap message 3 of 3", "after"])
            await asyncio.sleep(0.5)
            assert len(got) == 5
            assert diffs(server) == (before[0] + 1, before[1])


async def test_channel_gap_is_filled_once_through_get_channel_difference() -> None:
    async with TelegramTestServer() as server:
        async with listening(server, "bob") as (_, got):
            before = await tracked(server, got, "alice", "chat_b", "first")
            server.make_gap("chat_b", 4)
            server.push_message("carol", "chat_b", "after the gap")
            await until(lambda: len(got) == 6)
            ids = [e.id for e in got]
            assert ids == sorted(ids) and len(set(ids)) == 6
            await asyncio.sleep(0.5)
            assert len(got) == 6
            assert diffs(server) == (before[0], before[1] + 1)


async def test_bad_input_names_the_problem() -> None:
    async with TelegramTestServer() as server:
        with pytest.raises(UnknownPeerError, match="nobody"):
            server.push_message("alice", "nobody", "x")
        with pytest.raises(UnknownPeerError, match="chat_z"):
            server.make_gap("chat_z", 2)
        with pytest.raises(ValueError, match="count"):
            server.make_gap("chat_a", 0)
        with pytest.raises(ValueError, match="not an account"):
            server.make_gap("carol", 1)
        with pytest.raises(ValueError, match="neither"):
            server.push_message("alice", "carol", "x")
        with pytest.raises(ValueError, match="form"):
            server.push_message("alice", "chat_a", "x", form="long")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="text"):
            server.push_message("alice", "chat_a", "")


async def test_alice_channel_send_reaches_bob_and_only_update_receivers_get_pushes() -> None:
    async with TelegramTestServer() as server:
        carol = server.client(session=server.session(server.world.user_id("carol")),
                              receive_updates=False)
        await asyncio.wait_for(carol.connect(), T)
        try:
            async with listening(server, "alice") as (alice, alice_got), \
                    listening(server, "bob") as (_, bob_got):
                await asyncio.wait_for(alice.send_message("chat_a", "hello channel"), T)
                await until(lambda: len(bob_got) == 1)
                assert bob_got[0].raw_text == "hello channel" and not bob_got[0].out
                # carol never asked for updates: her connection gets nothing
                assert server.stats["updates_pushed"] == 1
                done = server.push_message("carol", "bob", "from carol's other device")
                await until(lambda: len(bob_got) == 2)
                assert done.pushed == 1  # bob only; carol's client does not receive updates
                await asyncio.sleep(0.3)
                assert alice_got == []
        finally:
            await asyncio.wait_for(carol.disconnect(), T)


async def test_the_senders_other_session_sees_its_outgoing_message() -> None:
    async with TelegramTestServer() as server:
        async with listening(server, "alice") as (phone, phone_got), \
                listening(server, "alice") as (_, desktop_got), \
                listening(server, "bob") as (_, bob_got):
            before = diffs(server)
            sent = await asyncio.wait_for(phone.send_message("bob", "from my phone"), T)
            await until(lambda: len(desktop_got) == 1 and len(bob_got) == 1)
            mirrored = desktop_got[0]
            assert mirrored.out and mirrored.id == sent.id and mirrored.raw_text == "from my phone"
            assert mirrored.chat_id == server.world.user_id("bob")
            await asyncio.sleep(0.3)
            assert phone_got == [] and len(desktop_got) == 1 and len(bob_got) == 1
            assert diffs(server) == before  # pts in step everywhere: nothing fetched
