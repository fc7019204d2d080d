"""Paces learned while Redis is away reach the other processes when it answers again.

Each test starts its own ``redis-server`` on a free port (fixture ``private_redis``), stops it
and starts it again (empty, on the same port). Under ``storage_fallback="local"`` a pace
learned from a FLOOD_WAIT during the outage is served locally (nothing stored); at recovery
the process publishes it once with its state then (:mod:`telethon_guard.shared_pace`), so
another process's next admission adopts it. A pace dropped before the recovery is not
published.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_helpers import PrivateRedis
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import StorageUnavailableError
from telethon_guard.fakeclock import FakeClock
from telethon_guard.keys import pace_key
from telethon_guard.pacing import AdaptivePacer
from telethon_guard.shared_pace import SharedPaces
from telethon_guard.storage.redis import RedisStorage
from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

ME = functions.users.GetUsersRequest([types.InputUserSelf()])
PACE = "acct-po/users.getUsers"
TIMEOUT = 0.25
PROBE = 0.3


async def test_a_pace_learned_during_an_outage_is_adopted_by_another_process_after_it(
        private_redis: PrivateRedis) -> None:
    # two "processes": two clients, each with its own RedisStorage (its own connections)
    a_storage, b_storage = (
        RedisStorage(url=private_redis.url, prefix="pace-outage", timeout=TIMEOUT,
                     probe_interval=PROBE) for _ in range(2))
    async with TelegramTestServer() as server:
        opts: dict[str, Any] = dict(
            cls=GuardedTelegramClient, account="acct-po", max_flood_wait=10.0,
            retry_max_attempts=1, deadline=30.0, adaptive_pacing=True, pace_relax=30.0)
        a = server.client(storage=a_storage, **opts)
        b = server.client(storage=b_storage, **opts)
        await asyncio.wait_for(a.connect(), 10)
        await asyncio.wait_for(b.connect(), 10)
        try:
            await asyncio.wait_for(a(ME), 5)
            await asyncio.wait_for(b(ME), 5)
            a_share, b_share = a.guard.pipeline.admit.paces, b.guard.pipeline.admit.paces
            assert isinstance(a_share, SharedPaces) and isinstance(b_share, SharedPaces)

            # Redis goes away; both processes go on, on local state
            await private_redis.astop()
            await asyncio.wait_for(b(ME), 5)
            assert not b_storage.available
            # A: a burst, then FLOOD_WAIT_2: A learns a pace, waits 2 s, retries; its
            # publication cannot reach Redis
            for _ in range(6):
                await asyncio.wait_for(a(ME), 5)
            assert not a_storage.available
            server.faults.add(ErrorOnCalls("users.getUsers", 420, "FLOOD_WAIT_2", times=1))
            await asyncio.wait_for(a(ME), 15)
            # A burst's pace is on the probe schedule (relaxed from X on): a call answered
            # at it, then a refusal of the relaxed pace restores the pace that held on the
            # pace_relax schedule (a 60 s hold), so it stays unchanged for the test
            await asyncio.wait_for(a(ME), 15)
            server.faults.add(ErrorOnCalls("users.getUsers", 420, "FLOOD_WAIT_1", times=1))
            await asyncio.wait_for(a(ME), 15)
            await asyncio.wait_for(a_share.drain(), 5)
            a_paces = a.guard.stats()["paces"]
            assert PACE in a_paces, a_paces
            assert a_share.published == 0 and a_share.republished == 0
            count, period = a_paces[PACE]

            # Redis back (empty). A's next call is the probe that finds it: the pace is
            # published then, once
            await private_redis.astart()
            await asyncio.sleep(PROBE + 0.05)
            await asyncio.wait_for(a(ME), 15)
            assert a_storage.available
            await asyncio.wait_for(a_share.drain(), 5)
            assert (a_share.republished, a_share.published) == (1, 1)
            assert b.guard.stats()["paces"] == {}

            # B's admission that finds Redis back (its probe; a probe on a connection that
            # died with the old server may fail first) brings A's pace: from then on B's
            # limiter applies the same window as A's, on the same schedule
            for _ in range(10):
                await asyncio.wait_for(b(ME), 15)
                if b_storage.available:
                    break
                assert b_share.adopted == 0
                await asyncio.sleep(PROBE)
            assert b_storage.available
            assert b_share.adopted == 1
            b_paces = b.guard.stats()["paces"]
            assert b_paces == {PACE: (count, pytest.approx(period))}, (a_paces, b_paces)
            a_pacer, b_pacer = a.guard.pipeline.ledger.pacer, b.guard.pipeline.ledger.pacer
            assert a_pacer is not None and b_pacer is not None
            a_window = a_pacer.window("acct-po", "users.getUsers")
            b_window = b_pacer.window("acct-po", "users.getUsers")
            assert a_window is not None and b_window is not None
            assert [w[0] for w in a_window] == [w[0] for w in b_window], (a_window, b_window)
            assert [w[1] for w in b_window] == pytest.approx([w[1] for w in a_window],
                                                             rel=0.05)
            await asyncio.wait_for(a_share.drain(), 5)
            assert (a_share.republished, a_share.published) == (1, 1)  # once
        finally:
            await asyncio.wait_for(a.disconnect(), 10)
            await asyncio.wait_for(b.disconnect(), 10)
    await a_storage.aclose()
    await b_storage.aclose()


def _flood(pacer: AdaptivePacer, clock: FakeClock, method: str, *, held: bool) -> None:
    """10 calls in 5 s, then FLOOD_WAIT_3 (a hypothesis, dropped within 3 s + ``recover``);
    ``held``: another FLOOD_WAIT during the ramp (held for ``relax``, relaxed after)."""
    for _ in range(10):
        pacer.on_success("a", method)
        clock.advance(0.5)
    assert pacer.on_flood("a", method, 3.0) is not None
    if held:
        clock.advance(3.2)
        for _ in range(3):
            pacer.on_success("a", method)
            clock.advance(0.05)
        assert pacer.on_flood("a", method, 2.0) is not None
        assert pacer.is_held("a", method)


async def _probe(storage: RedisStorage) -> None:
    """One storage operation (raises ``StorageUnavailableError`` under ``"fail"`` while Redis
    is away)."""
    try:
        await asyncio.wait_for(storage.flood_left("acct:a/x"), 5)
    except StorageUnavailableError:
        assert storage.storage_fallback == "fail"


@pytest.mark.parametrize("policy", ["local", "fail"])
async def test_a_pace_dropped_before_recovery_is_not_published(
        private_redis: PrivateRedis, policy: str) -> None:
    # under "fail" the publication raises (logged) instead of being served locally: the same
    clock = FakeClock(1000.0, auto_advance=False)  # the guard clock: paces and probes
    storage = RedisStorage(url=private_redis.url, prefix="pace-drop", timeout=TIMEOUT,
                           probe_interval=PROBE, clock=clock, storage_fallback=policy)
    pacer = AdaptivePacer(clock, relax=30.0, recover=2.0)
    share = SharedPaces(pacer, storage)
    raw = aioredis.Redis.from_url(private_redis.url)
    gone, kept = "messages.getHistory", "messages.search"
    try:
        assert await asyncio.wait_for(storage.flood_left("acct:a/x"), 5) == 0.0
        await private_redis.astop()
        await _probe(storage)
        assert not storage.available
        _flood(pacer, clock, kept, held=True)   # held for 30 s
        _flood(pacer, clock, gone, held=False)  # a hypothesis: dropped within 3 s + 2 s
        await asyncio.wait_for(share.drain(), 5)
        assert share.published == 0
        assert pacer.export("a", gone) is not None
        clock.advance(10.0)  # past the hypothesis's X + recover: dropped; the held one stays
        assert pacer.window("a", gone) is None and pacer.export("a", gone) is None
        kept_state = pacer.export("a", kept)
        assert kept_state is not None

        await private_redis.astart()
        await _probe(storage)  # the probe (due: the clock moved on): Redis answers
        assert storage.available
        await asyncio.wait_for(share.drain(), 5)
        assert (share.republished, share.published) == (1, 1)
        assert await raw.keys("pace-drop:pc:*") == [storage._key("pc", pace_key("a", kept))]
        record = await raw.get(storage._key("pc", pace_key("a", kept)))
        assert record is not None
        # the state at recovery (times relative to then), not the one that failed to publish
        _version, _, body = record.decode().partition(" ")
        state = json.loads(body)
        assert state["count"] == kept_state["count"]
        assert state["flood_at"] == kept_state["flood_at"]
    finally:
        await raw.aclose()
        await storage.aclose()
