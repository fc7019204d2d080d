"""The same storage semantics, checked against MemoryStorage and RedisStorage.

Real time on both (the Redis backend takes its time from the Redis server): delays are compared
with a tolerance ``TOL`` that covers one round trip and scheduling on a busy machine, far below
the periods used (>= 0.2 s), so a wrong slot still fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from telethon_guard.storage import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    GuardStorage,
    LimitSpec,
)
from telethon_guard.storage.memory import MemoryStorage
from telethon_guard.storage.redis import RedisStorage, from_url

TOL = 0.05


@pytest.fixture(params=["memory", "redis"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[GuardStorage]:
    if request.param == "memory":
        yield MemoryStorage()
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("prefix")
    st = from_url(url, prefix=prefix, storage_fallback="fail", timeout=2.0)
    try:
        yield st
    finally:
        await st.aclose()


def near(value: float, expected: float) -> bool:
    return expected - TOL <= value <= expected + TOL


async def test_backend_protocol(storage: GuardStorage) -> None:
    assert isinstance(storage, GuardStorage)
    assert storage.is_local == isinstance(storage, MemoryStorage)
    assert storage.name in ("memory", "redis")


async def test_reserve_sliding_window(storage: GuardStorage) -> None:
    spec = [LimitSpec("acct:1/dc:2/method:m", ((3, 0.4),))]
    delays = [(await storage.reserve(spec)).delay for _ in range(7)]
    assert all(d == 0.0 for d in delays[:3]), delays
    # the 4th..6th wait for the 1st..3rd to leave the window; the 7th for the 4th
    assert all(near(d, 0.4) for d in delays[3:6]), delays
    assert near(delays[6], 0.8), delays


async def test_reserve_earliest_slot_common_to_all_keys_and_windows(
        storage: GuardStorage) -> None:
    a = LimitSpec("acct:1", ((2, 0.3), (3, 0.9)))
    b = LimitSpec("acct:1/sends", ((1, 0.2),))
    assert (await storage.reserve([a, b])).delay == 0.0
    r2 = await storage.reserve([a, b])  # b allows one per 0.2 s
    assert near(r2.delay, 0.2), r2
    r3 = await storage.reserve([a])  # a: 2 per 0.3 s -> after slot 1 + 0.3
    assert near(r3.delay, 0.3), r3
    r4 = await storage.reserve([a, b])  # a: 3 per 0.9 s -> after slot 1 + 0.9
    assert near(r4.delay, 0.9), r4
    # the slot was committed in b too: a b-only call now waits behind it
    r5 = await storage.reserve([b])
    assert near(r5.delay, 1.1), r5


async def test_reservations_are_fifo(storage: GuardStorage) -> None:
    spec = [LimitSpec("acct:1", ((1, 0.2),))]
    delays = [(await storage.reserve(spec)).delay for _ in range(5)]
    assert all(near(d, 0.2 * i) for i, d in enumerate(delays)), delays
    assert delays == sorted(delays)


async def test_concurrent_reservations_never_share_a_slot(storage: GuardStorage) -> None:
    spec = [LimitSpec("acct:1", ((2, 0.5),))]
    res = await asyncio.gather(*(storage.reserve(spec) for _ in range(6)))
    delays = sorted(r.delay for r in res)
    assert delays[:2] == [0.0, 0.0]
    assert all(near(d, 0.5) for d in delays[2:4]), delays
    assert all(near(d, 1.0) for d in delays[4:6]), delays
    assert len({repr(r.token) for r in res}) == 6


async def test_release_gives_the_slot_back(storage: GuardStorage) -> None:
    spec = [LimitSpec("acct:1", ((2, 1.0),)), LimitSpec("acct:1/peer:5", ((2, 1.0),), True)]
    await storage.reserve(spec)
    r2 = await storage.reserve(spec)
    r3 = await storage.reserve(spec)
    assert near(r3.delay, 1.0)
    await storage.release(spec, r3.token)
    await storage.release(spec, r2.token)
    assert (await storage.reserve(spec)).delay == 0.0
    await storage.release(spec, r3.token)  # already released: ignored
    r5 = await storage.reserve(spec)
    assert near(r5.delay, 1.0), r5


async def test_observe_records_now_and_reports_the_delay(storage: GuardStorage) -> None:
    spec = [LimitSpec("acct:1", ((1, 0.5),))]
    await storage.reserve(spec)
    r = await storage.reserve(spec, observe=True)
    assert near(r.delay, 0.5)
    r = await storage.reserve(spec, observe=True)  # recorded at now, not at the slot
    assert near(r.delay, 0.5)


async def test_seed_records_past_slots(storage: GuardStorage) -> None:
    spec = LimitSpec("acct:1/pace:m", ((2, 1.0),))
    await storage.seed(spec, [0.6, 0.3, 5.0])  # 5 s ago: outside the window, skipped
    r = await storage.reserve([spec])
    assert near(r.delay, 0.4), r  # the one 0.6 s ago leaves the window in 0.4 s


async def test_flood_block_left_clear(storage: GuardStorage) -> None:
    scope = "acct:1/method:messages.getHistory"
    assert await storage.flood_left(scope) == 0.0
    assert near(await storage.flood_block(scope, 30.0), 30.0)
    assert near(await storage.flood_block(scope, 2.0), 30.0)  # the later end is kept
    assert near(await storage.flood_left(scope), 30.0)
    assert await storage.flood_left("acct:1/method:other") == 0.0
    await storage.flood_clear(scope)
    assert await storage.flood_left(scope) == 0.0
    await storage.flood_clear(scope)  # clearing twice is fine
    assert near(await storage.flood_block(scope, 0.1), 0.1)
    await asyncio.sleep(0.15)
    assert await storage.flood_left(scope) == 0.0


async def test_breaker_transitions_with_one_probe(storage: GuardStorage) -> None:
    key = "acct:1/dc:2"
    policy = BreakerPolicy(threshold=2, open_seconds=0.2, growth=2.0, max_open=0.3)
    d = await storage.breaker_acquire(key, 10.0)
    assert (d.decision, d.state, d.failures) == ("allow", CLOSED, 0)
    d = await storage.breaker_failure(key, policy)
    assert (d.state, d.old, d.failures) == (CLOSED, CLOSED, 1)
    d = await storage.breaker_success(key)  # resets the count
    assert (d.state, d.failures) == (CLOSED, 0)
    await storage.breaker_failure(key, policy)
    d = await storage.breaker_failure(key, policy)
    assert (d.state, d.old, d.failures) == (OPEN, CLOSED, 2) and near(d.retry_after, 0.2)
    d = await storage.breaker_acquire(key, 10.0)
    assert (d.decision, d.state) == ("reject", OPEN) and 0 < d.retry_after <= 0.2
    d = await storage.breaker_success(key)  # a late answer does not close an OPEN breaker
    assert d.state == OPEN
    s = await storage.breaker_state(key)
    assert (s.decision, s.state, s.failures) == ("", OPEN, 2) and s.retry_after > 0
    await asyncio.sleep(0.25)
    d = await storage.breaker_acquire(key, 10.0)
    assert (d.decision, d.state, d.old) == ("probe", HALF_OPEN, OPEN)
    d2 = await storage.breaker_acquire(key, 10.0)  # exactly one probe
    assert (d2.decision, d2.state) == ("reject", HALF_OPEN) and near(d2.retry_after, 10.0)
    d = await storage.breaker_failure(key, policy)  # failed probe: open * growth, capped
    assert (d.state, d.old) == (OPEN, HALF_OPEN) and near(d.retry_after, 0.3)
    await asyncio.sleep(0.35)
    d = await storage.breaker_acquire(key, 10.0)
    assert d.decision == "probe"
    d = await storage.breaker_success(key)
    assert (d.state, d.old, d.failures) == (CLOSED, HALF_OPEN, 0)
    s = await storage.breaker_state(key)
    assert (s.state, s.failures, s.retry_after) == (CLOSED, 0, 0.0)
    d = await storage.breaker_acquire(key, 10.0)
    assert d.decision == "allow"


async def test_breaker_probe_release_and_lease(storage: GuardStorage) -> None:
    key = "acct:1/dc:4"
    policy = BreakerPolicy(threshold=1, open_seconds=0.05, growth=2.0, max_open=1.0)
    await storage.breaker_failure(key, policy)
    await asyncio.sleep(0.08)
    assert (await storage.breaker_acquire(key, 10.0)).decision == "probe"
    assert (await storage.breaker_acquire(key, 10.0)).decision == "reject"
    await storage.breaker_release_probe(key)  # the prober ended without a verdict
    assert (await storage.breaker_acquire(key, 0.1)).decision == "probe"
    assert (await storage.breaker_acquire(key, 0.1)).decision == "reject"
    await asyncio.sleep(0.15)  # the lease of a crashed prober runs out
    d = await storage.breaker_acquire(key, 10.0)
    assert (d.decision, d.state, d.old) == ("probe", HALF_OPEN, HALF_OPEN)
    await storage.breaker_release_probe("acct:1/dc:9")  # unknown key: nothing happens
    assert (await storage.breaker_state("acct:1/dc:9")).state == CLOSED


async def test_breaker_reconnected_makes_open_half_open(storage: GuardStorage) -> None:
    """The DC's connection is back: OPEN becomes HALF_OPEN with no probe out (the next acquire
    is the probe, long before the open time ends); a failed probe re-opens it with its
    backoff; CLOSED and unknown breakers are left as they are."""
    key = "acct:1/dc:5"
    policy = BreakerPolicy(threshold=1, open_seconds=30.0, growth=2.0, max_open=100.0)
    d = await storage.breaker_reconnected(key)  # unknown: CLOSED, nothing stored
    assert (d.state, d.old) == (CLOSED, CLOSED)
    await storage.breaker_failure(key, policy)
    assert (await storage.breaker_acquire(key, 10.0)).decision == "reject"
    d = await storage.breaker_reconnected(key)
    assert (d.state, d.old, d.failures) == (HALF_OPEN, OPEN, 1)
    s = await storage.breaker_state(key)
    assert (s.state, s.retry_after) == (HALF_OPEN, 0.0)
    d = await storage.breaker_acquire(key, 10.0)
    assert (d.decision, d.state, d.old) == ("probe", HALF_OPEN, HALF_OPEN)
    assert (await storage.breaker_acquire(key, 10.0)).decision == "reject"  # one probe
    d = await storage.breaker_reconnected(key)  # HALF_OPEN: no change, the probe stays out
    assert (d.state, d.old) == (HALF_OPEN, HALF_OPEN)
    assert (await storage.breaker_acquire(key, 10.0)).decision == "reject"
    d = await storage.breaker_failure(key, policy)  # failed probe: 30 s * growth
    assert (d.state, d.old) == (OPEN, HALF_OPEN) and near(d.retry_after, 60.0)
    await storage.breaker_reconnected(key)
    assert (await storage.breaker_acquire(key, 10.0)).decision == "probe"
    d = await storage.breaker_success(key)
    assert (d.state, d.old) == (CLOSED, HALF_OPEN)
    d = await storage.breaker_reconnected(key)
    assert (d.state, d.old, d.failures) == (CLOSED, CLOSED, 0)


async def test_two_redis_storages_share_state(redis_url: str, prefix: str) -> None:
    """Two storage objects (as in two processes) see each other's decisions."""
    a = from_url(redis_url, prefix=prefix, storage_fallback="fail")
    b = RedisStorage(url=redis_url, prefix=prefix, storage_fallback="fail")
    try:
        spec = [LimitSpec("acct:7", ((2, 1.0),))]
        await a.ping()  # both connected before the clock starts
        await b.ping()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert (await a.reserve(spec)).delay == 0.0
        assert (await b.reserve(spec)).delay == 0.0
        delay = (await a.reserve(spec)).delay
        # the first slot + 1 s, seen from the third call (time passed since the first:
        # milliseconds, or more on a loaded machine)
        assert 1.0 - (loop.time() - start) - TOL <= delay <= 1.0 + TOL, delay
        await a.flood_block("acct:7/method:m", 20.0)
        assert near(await b.flood_left("acct:7/method:m"), 20.0)
        policy = BreakerPolicy(1, 5.0, 2.0, 10.0)
        await b.breaker_failure("acct:7/dc:1", policy)
        d = await a.breaker_acquire("acct:7/dc:1", 10.0)
        assert (d.decision, d.state) == ("reject", OPEN)
    finally:
        await a.aclose()
        await b.aclose()
