"""The example service's event-driven part (examples/fastapi_service: a NewMessage handler
storing incoming messages in its SQLite cache, ``GET /messages``) keeps working through a
transport -429 storm and a FLOOD_WAIT on one channel's difference (issue 11, item 3).

Real Telethon (guarded) against the embedded MTProto server, the app driven in-process
through httpx's ASGI transport on the same loop. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from telethon import utils
from telethon.tl import types

from examples.fastapi_service.app import ChannelCache, ChannelService, create_app
from telethon_guard import GuardedTelegramClient
from telethon_guard.testing import OnPeers, TelegramTestServer
from telethon_guard.testing.faults import ErrorOnCalls, FaultPlan, Transport429Storm

BOUND = 30.0  # no single wait of this test exceeds this
STORM = 2.5  # seconds of transport -429
PACE = 0.25  # seconds between two messages into each chat
FLOOD_PHASE = 4.5  # seconds from the flooded difference to the storm (FLOOD_WAIT_3 + gap 0.5)


class CountingCache(ChannelCache):
    """The example's cache, counting deliveries of a message it already stored and noting
    when each message was stored (monotonic seconds, by text)."""

    def __init__(self) -> None:
        super().__init__()
        self.duplicates = 0
        self.stored_at: dict[str, float] = {}

    def store_message(self, chat_id: int, msg_id: int, text: str, date: float) -> bool:
        stored = super().store_message(chat_id, msg_id, text, date)
        self.duplicates += not stored
        self.stored_at.setdefault(text, time.monotonic())
        return stored


async def until(cond: Any, timeout: float = BOUND, what: Any = None) -> None:
    end = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout} s: "
                                 f"{what() if what else ''}")
        await asyncio.sleep(0.05)


async def test_the_example_service_stores_every_message_once_through_a_storm_and_a_flood(
) -> None:
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        bob = server.world.user_id("bob")
        alice = server.world.user_id("alice")
        chat_a = utils.get_peer_id(types.PeerChannel(server.world.channel_id("chat_a")))
        chat_b = utils.get_peer_id(types.PeerChannel(server.world.channel_id("chat_b")))
        client = server.client(
            cls=GuardedTelegramClient, session=server.session(bob), deadline=5.0,
            attempt_timeout=0.4, breaker_failure_threshold=3, breaker_open_seconds=0.5,
            retry_base_delay=0.01, retry_max_delay=0.05)
        cache = CountingCache()
        service = ChannelService(client, cache=cache, timeout=1.0)
        app = create_app(service)
        await asyncio.wait_for(service.start(), BOUND)
        expected: dict[int, set[int]] = {alice: set(), chat_a: set(), chat_b: set()}
        pushed_at: dict[str, float] = {}

        def push(peer: str, chat_id: int, text: str) -> None:
            pushed_at[text] = time.monotonic()
            expected[chat_id].add(server.push_message("alice", peer, text).message_ids[bob])

        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://svc", timeout=BOUND) as http:

                async def stored(chat_id: int) -> list[int]:
                    r = await http.get("/messages", params={"chat": chat_id, "limit": 1000})
                    assert r.status_code == 200
                    return [m["id"] for m in r.json()["messages"]]

                async def all_stored() -> bool:
                    for chat_id, ids in expected.items():
                        if set(await stored(chat_id)) != ids:
                            return False
                    return True

                def missing() -> dict[int, list[int]]:
                    have = {(m["chat_id"], m["id"]) for m in cache.messages(None, 10000)}
                    return {c: sorted(i for i in ids if (c, i) not in have)
                            for c, ids in expected.items()}

                for peer, chat_id in (("bob", alice), ("chat_a", chat_a), ("chat_b", chat_b)):
                    push(peer, chat_id, f"{peer} first")
                await until(all_stored, what=missing)

                # chat_a's difference is flooded; a gap there is revealed
                plan.add(OnPeers(chat_a, ErrorOnCalls("updates.getChannelDifference", 420,
                                                      "FLOOD_WAIT_3", times=1)))
                for gap in server.make_gap("chat_a", 2, from_user="carol"):
                    expected[chat_a].add(gap.message_ids[bob])
                push("chat_a", chat_a, "chat_a reveals")
                # then a -429 storm, while alice keeps writing into bob's chat and chat_b
                t0 = time.monotonic()
                storm = Transport429Storm(start=plan.now() + FLOOD_PHASE, duration=STORM)
                plan.add(storm)
                storm_end = t0 + FLOOD_PHASE + STORM
                end = storm_end + 3.0
                i = 0

                def back(kind: str) -> bool:  # a message pushed after the storm was stored
                    return any(t[0] == kind and at > storm_end and t in cache.stored_at
                               for t, at in pushed_at.items())

                # after the storm, alice writes on until the service is back (the reconnect is
                # paced): the next message of a channel reveals its gap (the account's missed
                # messages are fetched on reconnect by the guard, update_path.resume_updates)
                while time.monotonic() < end or not (back("p") and back("b")):
                    assert time.monotonic() < storm_end + BOUND, "no update after the storm"
                    push("bob", alice, f"p {i}")
                    push("chat_b", chat_b, f"b {i}")
                    i += 1
                    await asyncio.sleep(PACE)
                await until(all_stored, what=missing)
                health = (await http.get("/health")).json()
        finally:
            await asyncio.wait_for(service.stop(), BOUND)
    # the handler stored messages at once during the flood and again after the storm
    recovered = min(cache.stored_at[t] for t, at in pushed_at.items() if at > storm_end)
    calm = [t for t, at in pushed_at.items() if t[0] in "pb"
            and (at < t0 + FLOOD_PHASE - 0.5 or at > recovered)]
    latency = sorted(cache.stored_at[t] - pushed_at[t] for t in calm)
    p99 = latency[min(len(latency) - 1, int(0.99 * len(latency)))]
    print(f"\nexample service: handler store latency outside the storm p50 "
          f"{latency[len(latency) // 2]:.3f} s p99 {p99:.3f} s (n={len(latency)})")
    assert len(latency) > 20 and p99 < 1.0
    assert storm.fired > 0
    assert cache.duplicates == 0
    assert len(cache.messages(chat_a, 1000)) == 4  # first, 2 missed, the revealing one
    assert len(cache.messages(chat_b, 1000)) == i + 1
    assert len(cache.messages(alice, 1000)) == i + 1
    assert health["telegram"]["available"], health
