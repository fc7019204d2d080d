"""Faults on the update path, per channel, with real (plain) Telethon over real sockets.

One channel's ``updates.getChannelDifference`` answered with a fault (``OnPeers`` scopes the
rule to that channel) does not touch another channel's gap; the faulted channel's missed
messages arrive exactly once: plain Telethon either retries inside its update loop (it sleeps
FLOOD_WAITs and 5xx inside ``_call``, the stall issue 11 is about) or ends the failed
difference without advancing its pts (``client/updates.py``) until the next update reveals
the gap again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from telethon import utils
from telethon.tl import types

from telethon_guard.testing import OnPeers, TelegramTestServer
from telethon_guard.testing.faults import ErrorOnCalls, FaultPlan
from telethon_guard.testing.faults_lifecycle import OnLiveConnections, OnNewConnections
from telethon_guard.testing.world import WorldConfig
from tests.testing.test_updates_push import T, diffs, listening, tracked, until


def marked(server: TelegramTestServer, name: str) -> int:
    return utils.get_peer_id(types.PeerChannel(server.world.channel_id(name)))


def texts_in(got: list[Any], chat_id: int) -> list[str]:
    return [e.raw_text for e in got if e.chat_id == chat_id]


@pytest.mark.parametrize(("code", "message"), [
    (420, "FLOOD_WAIT_1"),
    (500, "RPC_CALL_FAIL"),
    (-503, "Timeout"),
    (400, "INPUT_METHOD_INVALID_1234_5678"),
])
async def test_fault_on_one_channels_difference_leaves_the_other_channel_alone(
        code: int, message: str) -> None:
    async with TelegramTestServer() as server:
        a, b = marked(server, "chat_a"), marked(server, "chat_b")
        async with listening(server, "bob") as (client, got):
            for name in ("chat_a", "chat_b"):
                server.push_message("alice", name, f"{name} first")
            await until(lambda: len(got) == 2)
            server.faults.add(OnPeers(a, ErrorOnCalls(
                "updates.getChannelDifference", code, message, times=1)))
            for name in ("chat_a", "chat_b"):
                server.make_gap(name, 2)
                server.push_message("carol", name, f"{name} after")
            # chat_b's gap is filled through its own difference, whatever happens to chat_a's
            await until(lambda: len(texts_in(got, b)) == 4)
            await until(lambda: server.log.count("updates.getChannelDifference",
                                                 outcome="rpc_error") == 1)
            await asyncio.sleep(0.6)  # Telethon's own retry (if any) is over
            # the next update of chat_a arrives normally, or reveals its gap again
            server.push_message("carol", "chat_a", "chat_a again")
            await until(lambda: len(texts_in(got, a)) == 5)
            await asyncio.sleep(0.6)
            counts = Counter(e.id for e in got if e.chat_id == a)
            assert sorted(counts) == [11, 12, 13, 14, 15] and set(counts.values()) == {1}
            assert texts_in(got, a)[-2:] == ["chat_a after", "chat_a again"]
            assert len(texts_in(got, b)) == 4 and client.is_connected()
        assert server.log.count("updates.getChannelDifference", outcome="rpc_error") == 1


async def test_fault_on_get_difference_then_the_gap_is_filled_once() -> None:
    async with TelegramTestServer() as server:
        async with listening(server, "bob") as (client, got):
            before = diffs(server)
            server.faults.add(ErrorOnCalls("updates.getDifference", 400, "INPUT_METHOD_INVALID",
                                           times=1))
            server.make_gap("bob", 2, from_user="carol")
            server.push_message("carol", "bob", "reveals the gap")
            await until(lambda: server.log.count("updates.getDifference",
                                                 outcome="rpc_error") == 1)
            await asyncio.sleep(0.3)
            assert got == []  # the difference failed: nothing delivered, pts not advanced
            server.push_message("carol", "bob", "reveals it again")
            await until(lambda: len(got) == 4)
            await asyncio.sleep(0.6)
            assert len(got) == 4 and len({e.id for e in got}) == 4
            assert diffs(server)[0] == before[0] + 1 and client.is_connected()


async def test_too_long_pushes_make_telethon_fetch_the_difference() -> None:
    async with TelegramTestServer() as server:
        async with listening(server, "bob") as (_, got):
            before = await tracked(server, got, "alice", "chat_c")
            server.make_gap("bob", 2)
            assert server.push_too_long("bob") == 1
            await until(lambda: len(got) == 3)
            assert diffs(server) == (before[0] + 1, before[1])
            server.make_gap("chat_c", 3)
            assert server.push_too_long("bob", channel="chat_c") == 1
            await until(lambda: len(got) == 6)
            assert diffs(server) == (before[0] + 1, before[1] + 1)
            await asyncio.sleep(0.5)
            assert len({(e.chat_id, e.id) for e in got}) == 6 == len(got)
        with pytest.raises(ValueError, match="not an account"):
            server.push_too_long("carol")
        with pytest.raises(ValueError, match="not a channel"):
            server.push_too_long(channel="group")


async def test_difference_slices_and_channel_pages_deliver_every_message_once() -> None:
    config = WorldConfig(difference_limit=2, channel_difference_page=2)
    async with TelegramTestServer(world_config=config) as server:
        async with listening(server, "bob") as (_, got):
            before = await tracked(server, got, "alice", "chat_a")
            server.make_gap("bob", 5)
            server.push_message("alice", "bob", "after private gap")
            server.make_gap("chat_a", 5)
            server.push_message("alice", "chat_a", "after channel gap")
            await until(lambda: len(got) == 13)
            await asyncio.sleep(0.5)
            assert len(got) == 13 and len({(e.chat_id, e.id) for e in got}) == 13
            # 6 private messages in slices of 2, 6 channel messages in pages of 2
            assert diffs(server) == (before[0] + 3, before[1] + 3)


async def test_channel_difference_too_long_skips_to_the_newest_pts() -> None:
    async with TelegramTestServer() as server:
        async with listening(server, "bob") as (_, got):
            await tracked(server, got, "alice", "chat_a")
            server.make_gap("chat_a", 150)  # more than Telethon's limit of 100 for users
            server.push_message("alice", "chat_a", "reveals")
            await until(lambda: server.log.count("updates.getChannelDifference") >= 1)
            await asyncio.sleep(0.8)
            assert len(got) == 1  # Telethon drops a too-long difference's messages
            server.push_message("alice", "chat_a", "next one")
            await until(lambda: len(got) == 2, timeout=T)
            assert got[-1].raw_text == "next one"
        # channelDifferenceTooLong, then (Telethon 1.45 keeps the entry in getting-diff after
        # a too-long answer) an empty difference at the new pts
        assert server.log.count("updates.getChannelDifference", outcome="ok") >= 1


async def test_plan_fault_is_scoped_to_its_channel_only() -> None:
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        rule = OnPeers(marked(server, "chat_b"), ErrorOnCalls(
            "updates.getChannelDifference", 420, "FLOOD_WAIT_1", times=1))
        plan.add(rule)
        async with listening(server, "bob") as (_, got):
            await tracked(server, got, "alice", "chat_a")
            server.make_gap("chat_a", 1)
            server.push_message("alice", "chat_a", "after")
            await until(lambda: len(got) == 3)
        assert rule.fired == 0  # chat_a's difference never matched the chat_b rule
        assert "OnPeers" in repr(rule)


async def test_messages_missed_while_disconnected_arrive_once_after_reconnect() -> None:
    async with TelegramTestServer() as server:
        async with listening(server, "bob", connection_retries=50, retry_delay=0.1) as (
                client, got):
            before = await tracked(server, got, "carol", "bob")
            get_me = server.log.count("users.getUsers", outcome="ok")
            now = server.faults.now()
            # bob's connection is reset and DC 1 refuses connections for 1.5 s
            server.faults.add(OnLiveConnections("reset", start=now),
                              OnNewConnections("down", start=now, duration=1.5))
            await asyncio.sleep(0.3)
            missed = [server.push_message("carol", "bob", f"missed {i}") for i in range(2)]
            assert [d.pushed for d in missed] == [0, 0]  # nobody to push to
            # Telethon reconnects and says it is alive (get_me) once DC 1 listens again
            await until(lambda: server.log.count("users.getUsers", outcome="ok") > get_me)
            server.push_message("carol", "bob", "after the outage")  # reveals the gap
            await until(lambda: len(got) == 4)
            await asyncio.sleep(0.6)
            assert [e.raw_text for e in got] == [
                "tracked", "missed 0", "missed 1", "after the outage"]
            assert diffs(server)[0] == before[0] + 1 and client.is_connected()
