"""Redis trouble never hangs a call: a private ``redis-server`` is paused, killed and restarted.

The machine's Redis on 6379 is never touched: each test starts its own ``redis-server`` on a
free port (fixture ``private_redis``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import pytest
from redis_helpers import PrivateRedis
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import StorageUnavailableError
from telethon_guard.events import EventBus, GuardEvent, StorageFallback
from telethon_guard.fakeclock import FakeClock
from telethon_guard.storage import BreakerPolicy, LimitSpec
from telethon_guard.storage.redis import RedisStorage, from_url
from telethon_guard.testing.server import TelegramTestServer

TIMEOUT = 0.25
SLACK = 0.25  # scheduling on a busy 2-core machine
SPEC = [LimitSpec("acct:9", ((2, 1.0),))]


async def timed(aw: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    result = await asyncio.wait_for(aw, 5)
    return result, time.monotonic() - t0


async def all_ops(st: RedisStorage) -> list[float]:
    """Every storage operation once; returns the elapsed seconds of each."""
    policy = BreakerPolicy(3, 5.0, 2.0, 10.0)
    elapsed = []
    for aw in (st.reserve(SPEC), st.flood_block("acct:9/method:m", 5.0),
               st.flood_left("acct:9/method:m"), st.breaker_acquire("acct:9/dc:1", 5.0),
               st.breaker_failure("acct:9/dc:1", policy), st.breaker_success("acct:9/dc:1"),
               st.breaker_state("acct:9/dc:1"), st.breaker_release_probe("acct:9/dc:1"),
               st.flood_clear("acct:9/method:x")):
        _, dt = await timed(aw)
        elapsed.append(dt)
    return elapsed


def fallback_events(events: list[GuardEvent]) -> list[StorageFallback]:
    return [e for e in events if isinstance(e, StorageFallback)]


async def test_fallback_when_redis_pauses_dies_and_returns(
        private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="telethon_guard")
    events: list[GuardEvent] = []
    st = from_url(private_redis.url, prefix="outage", timeout=TIMEOUT, probe_interval=0.3,
                  events=EventBus([events.append]))
    other = from_url(private_redis.url, prefix="outage", timeout=TIMEOUT)  # "another process"
    try:
        assert (await st.reserve(SPEC)).delay == 0.0
        assert (await other.reserve(SPEC)).delay == 0.0
        assert st.available and not fallback_events(events)

        # 1. Redis stops answering (SIGSTOP: connections stay open, nothing comes back).
        assert private_redis.proc is not None
        private_redis.proc.send_signal(signal.SIGSTOP)
        try:
            res, dt = await timed(st.reserve(SPEC))
            assert dt < TIMEOUT + SLACK, dt  # bounded by the storage timeout
            assert not st.available and isinstance(res.token, float)  # served locally
            assert max(await all_ops(st)) < TIMEOUT + SLACK
        finally:
            private_redis.proc.send_signal(signal.SIGCONT)

        # 2. Redis killed: refused connections; still local, still said only once.
        await private_redis.astop()
        for _ in range(20):
            _, dt = await timed(st.reserve(SPEC))
            assert dt < TIMEOUT + SLACK
        assert max(await all_ops(st)) < TIMEOUT + SLACK
        downs = fallback_events(events)
        assert [e.active for e in downs] == [True], downs
        assert st.fallbacks == 1
        logged = [r for r in caplog.records if "StorageFallback" in r.getMessage()
                  or "unavailable" in r.getMessage()]
        assert len(logged) == 1, [r.getMessage() for r in logged]
        # a FLOOD_WAIT learned while Redis is away holds locally
        await st.flood_block("acct:9/method:messages.getHistory", 30.0)
        assert await st.flood_left("acct:9/method:messages.getHistory") > 29

        # 3. Redis back on the same port (empty: it kept nothing): shared state again once a
        # probe is due (probe_interval 0.3 s).
        await private_redis.astart()
        await asyncio.sleep(0.35)
        await st.reserve(SPEC)
        assert st.available
        ups = fallback_events(events)
        assert [e.active for e in ups] == [True, False]
        await asyncio.sleep(0.1)  # the local flood block is copied to Redis in the background
        assert await other.flood_left("acct:9/method:messages.getHistory") > 28
        # both "processes" share the limiter again: st's slot above + 1 = the window is full
        r = await other.reserve(SPEC)
        assert isinstance(r.token, bytes) and r.delay == 0.0
        r = await other.reserve(SPEC)
        assert r.delay > 0.5, r
    finally:
        await st.aclose()
        await other.aclose()


async def test_fail_policy_raises_storage_unavailable(private_redis: PrivateRedis) -> None:
    st = from_url(private_redis.url, prefix="outage", timeout=TIMEOUT, on_unavailable="fail",
                  probe_interval=0.3)
    try:
        assert (await st.reserve(SPEC)).delay == 0.0
        assert private_redis.proc is not None
        private_redis.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(StorageUnavailableError) as e:
                await asyncio.wait_for(st.flood_left("acct:9/method:m"), 5)
            assert time.monotonic() - t0 < TIMEOUT + SLACK
            assert isinstance(e.value, ConnectionError) and e.value.backend == "redis"
        finally:
            private_redis.proc.send_signal(signal.SIGCONT)
        await private_redis.astop()
        # between probes: raised at once, no network attempt
        t0 = time.monotonic()
        for _ in range(50):
            with pytest.raises(StorageUnavailableError):
                await asyncio.wait_for(st.reserve(SPEC), 5)
        assert time.monotonic() - t0 < TIMEOUT + SLACK
        await private_redis.astart()
        await asyncio.sleep(0.35)
        assert (await asyncio.wait_for(st.reserve(SPEC), 5)).delay == 0.0
        assert st.available
    finally:
        await st.aclose()


async def test_guarded_client_calls_do_not_hang_while_redis_is_paused(
        private_redis: PrivateRedis) -> None:
    """Through the whole pipeline (breaker, flood ledger, limiter on Redis): a paused Redis
    costs each call at most the storage timeout once, then the local fallback serves."""
    events: list[GuardEvent] = []
    storage = RedisStorage(url=private_redis.url, prefix="outage", timeout=TIMEOUT,
                           probe_interval=30.0)
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, storage=storage, account="acct-out",
                               rate_limits=((50, 1.0),), on_event=events.append, deadline=10)
        async with client:
            req = functions.users.GetUsersRequest([types.InputUserSelf()])
            await asyncio.wait_for(client(req), 5)
            assert storage.available
            assert private_redis.proc is not None
            private_redis.proc.send_signal(signal.SIGSTOP)
            try:
                for _ in range(3):
                    t0 = time.monotonic()
                    await asyncio.wait_for(client(req), 5)
                    # breaker + ledger + limiter + breaker: the first op times out, the rest
                    # go local at once
                    assert time.monotonic() - t0 < TIMEOUT + 1.0
                assert not storage.available
            finally:
                private_redis.proc.send_signal(signal.SIGCONT)
        await storage.aclose()
    assert any(isinstance(e, StorageFallback) and e.active for e in events)


async def test_the_guard_clock_times_the_probes_during_an_outage(
        private_redis: PrivateRedis) -> None:
    # The storage is given the guard clock (a fake one here): an outage's probe interval runs
    # on it, not on time.monotonic().
    clock = FakeClock(auto_advance=False)
    st = from_url(private_redis.url, prefix="clock", timeout=TIMEOUT, probe_interval=5.0,
                  clock=clock)
    scope = "acct:1/method:m"
    try:
        assert await asyncio.wait_for(st.flood_left(scope), 5) == 0.0 and st.available
        await private_redis.astop()
        await asyncio.wait_for(st.flood_left(scope), 5)  # refused: served locally
        assert not st.available
        await private_redis.astart()
        await asyncio.wait_for(st.flood_left(scope), 5)
        assert not st.available  # no probe before 5 s of the guard clock
        clock.advance(5.0)
        await asyncio.wait_for(st.flood_left(scope), 5)  # the probe: Redis answers again
        assert st.available
    finally:
        await st.aclose()
