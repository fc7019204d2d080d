"""Redis-specific properties: key layout and expiry, bounded growth, one round trip per
decision, NOSCRIPT reload, construction from URLs / clients / GuardConfig, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_helpers import PrivateRedis

from telethon_guard.config import GuardConfig
from telethon_guard.errors import GuardConfigError
from telethon_guard.events import EventBus
from telethon_guard.pipeline import Pipeline
from telethon_guard.storage import BreakerPolicy, LimitSpec, open_storage
from telethon_guard.storage.redis import RedisStorage, from_url

POLICY = BreakerPolicy(1, 5.0, 2.0, 10.0)


async def test_keys_are_namespaced_and_all_expire(redis_url: str, prefix: str) -> None:
    st = from_url(redis_url, prefix=prefix, account_namespace="app1")
    try:
        specs = [LimitSpec("acct:42", ((5, 1.0), (100, 60.0))),
                 LimitSpec("acct:42/peer:-100123", ((1, 3.0),), True)]
        await st.reserve(specs)
        await st.flood_block("acct:42/method:messages.getHistory", 30.0)
        await st.breaker_failure("acct:42/dc:2", POLICY)
        await st.breaker_failure("acct:42/dc:4", BreakerPolicy(5, 5.0, 2.0, 10.0))
        keys = sorted([k.decode() async for k in st.client.scan_iter(match=f"{prefix}:*")])
        assert keys == [
            f"{prefix}:app1:br:{{acct:42}}/dc:2",
            f"{prefix}:app1:br:{{acct:42}}/dc:4",
            f"{prefix}:app1:fl:{{acct:42}}/method:messages.getHistory",
            f"{prefix}:app1:rl:{{acct:42}}",
            f"{prefix}:app1:rl:{{acct:42}}/peer:-100123",
        ]
        ttl = {k: await st.client.pttl(k) for k in keys}
        assert all(v > 0 for v in ttl.values()), ttl  # every key expires
        assert 59_000 < ttl[keys[3]] <= 61_000  # longest period + 1 s
        assert 3_000 < ttl[keys[4]] <= 4_000  # per-peer key: its own period
        assert 29_000 < ttl[keys[2]] <= 30_000  # flood entry: when the block ends
        assert 3_590_000 < ttl[keys[1]] <= 3_600_000  # breaker_ttl after the last write
        assert 3_590_000 < ttl[keys[0]] <= 3_605_000  # OPEN: its period + breaker_ttl
        await st.breaker_success("acct:42/dc:4")  # CLOSED with no failures == no key
        assert not await st.client.exists(keys[1])
    finally:
        await st.aclose()


async def test_sorted_sets_are_trimmed_to_the_longest_period(redis_url: str,
                                                            prefix: str) -> None:
    """Trimming is lazy (as MemoryStorage's log): stale slots (older than the longest period)
    are kept until the set holds more than 2 * (largest count) + 64 = 74 here, then all of
    them go at once: the set stays bounded, most reservations skip the trim."""
    st = from_url(redis_url, prefix=prefix)
    try:
        spec = [LimitSpec("acct:1", ((5, 0.1),))]
        key = f"{prefix}:rl:{{acct:1}}"
        for _ in range(75):  # observe: recorded now, nobody waits
            await st.reserve(spec, observe=True)
        await asyncio.sleep(0.15)  # every slot is stale now
        assert await st.client.zcard(key) == 75  # at most 74 before each call: no trim
        r = await st.reserve(spec)
        assert r.delay == 0.0  # 75 stale slots delay nothing
        assert await st.client.zcard(key) == 1  # 75 > 74: the stale ones are cut
    finally:
        await st.aclose()


class CommandCounter:
    """Counts commands this client sends (each a round trip: no pipelining here)."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        self.names: list[str] = []
        original = client.execute_command

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.names.append(str(args[0]))
            return await original(*args, **kwargs)

        client.execute_command = counted


async def commandstats(client: Any) -> dict[str, int]:
    info = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in info.items()}


async def test_exactly_one_round_trip_per_decision(private_redis: PrivateRedis) -> None:
    """Counted on both ends: commands sent by the client, EVALSHA calls seen by the server
    (a private redis-server, so nobody else's commands are counted)."""
    st = from_url(private_redis.url, prefix="rt")
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        specs = [LimitSpec("acct:1", ((1000, 1.0),)),
                 LimitSpec("acct:1/dc:2/method:messages.getHistory", ((30, 30.0),)),
                 LimitSpec("acct:1/peer:5", ((1, 1.0),), True)]
        await st.reserve(specs)  # loads the script (NOSCRIPT -> SCRIPT LOAD -> EVALSHA)
        await st.flood_left("acct:1/method:x")
        await st.breaker_acquire("acct:1/dc:2", 5.0)
        await st.breaker_success("acct:1/dc:2")
        counter = CommandCounter(st.client)
        before = await commandstats(admin)
        n = 200
        for _ in range(n):
            await st.flood_left("acct:1/method:messages.getHistory")
            await st.breaker_acquire("acct:1/dc:2", 5.0)
            await st.reserve(specs)
            await st.breaker_success("acct:1/dc:2")
        after = await commandstats(admin)
        assert counter.count == 4 * n and set(counter.names) == {"EVALSHA"}
        assert after["evalsha"] - before["evalsha"] == 4 * n
        assert after.get("script|load", 0) == before.get("script|load", 0)
    finally:
        await st.aclose()
        await admin.aclose()


async def test_scripts_reloaded_after_script_flush(private_redis: PrivateRedis) -> None:
    # On a private redis-server: SCRIPT FLUSH on the shared one would hit everyone's scripts.
    st = from_url(private_redis.url, prefix="flush", storage_fallback="fail")
    other = aioredis.Redis.from_url(private_redis.url)
    try:
        spec = [LimitSpec("acct:1", ((1, 1.0),))]
        await st.reserve(spec)
        await other.script_flush()  # e.g. a Redis restart or failover
        r = await st.reserve(spec)  # NOSCRIPT -> reloaded, still shared state
        assert 0.9 < r.delay <= 1.0
    finally:
        await st.aclose()
        await other.aclose()


async def test_url_options_and_client_wrapping(redis_url: str, prefix: str) -> None:
    with pytest.warns(DeprecationWarning, match="on_unavailable"):  # the old name still works
        st = from_url(f"{redis_url}?prefix={prefix}&timeout=0.5&on_unavailable=fail"
                      "&probe_interval=3&account_namespace=ns")
    try:
        assert (st.prefix, st.timeout, st.on_unavailable, st.probe_interval) == (
            f"{prefix}:ns", 0.5, "fail", 3.0)
        await st.flood_block("acct:1/method:m", 5.0)
        assert await st.client.exists(f"{prefix}:ns:fl:{{acct:1}}/method:m")
    finally:
        await st.aclose()
    client = aioredis.Redis.from_url(redis_url)
    with pytest.warns(DeprecationWarning, match="on_unavailable"):
        wrapped = open_storage(client, on_unavailable="fail", timeout=1.0)
    try:
        assert isinstance(wrapped, RedisStorage) and wrapped.client is client
        assert (wrapped.on_unavailable, wrapped.timeout) == ("fail", 1.0)
        await wrapped.aclose()  # a client passed in is not closed
        assert await client.ping()
    finally:
        await client.aclose()


async def test_guard_config_storage_url_builds_a_redis_pipeline(redis_url: str,
                                                                prefix: str) -> None:
    events: list[Any] = []
    cfg = GuardConfig(storage=f"{redis_url}?prefix={prefix}", storage_fallback="fail",
                      storage_timeout=0.75, account="a1", on_event=events.append)
    pipe = Pipeline(cfg)
    st = pipe.storage
    try:
        assert isinstance(st, RedisStorage) and not st.is_local
        assert (st.on_unavailable, st.timeout, st.prefix) == ("fail", 0.75, prefix)
        assert any(b is pipe.events for b in st.fallback.buses)  # StorageFallback reaches on_event
    finally:
        await st.aclose()
    client = aioredis.Redis.from_url(redis_url)
    try:
        cfg2 = GuardConfig(storage=client)
        st2 = Pipeline(cfg2).storage
        assert isinstance(st2, RedisStorage) and st2.client is client
        assert st2.on_unavailable == "fallback"
    finally:
        await client.aclose()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"prefix": ""}, "prefix"),
    ({"prefix": "a{b}"}, "prefix"),
    ({"account_namespace": ""}, "account_namespace"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": float("inf")}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"probe_interval": -1.0}, "probe_interval"),
    ({"on_unavailable": "retry"}, "on_unavailable"),
])
def test_bad_arguments_raise_at_construction(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(GuardConfigError) as e:
        RedisStorage(url="redis://127.0.0.1:6379/0", **kwargs)
    assert e.value.args[0].startswith(field)


def test_bad_urls_raise_at_construction() -> None:
    with pytest.raises(GuardConfigError):
        from_url("http://127.0.0.1:6379/0")
    with pytest.raises(GuardConfigError):
        from_url("redis://127.0.0.1:6379/0?timeout=soon")
    with pytest.raises(GuardConfigError):
        RedisStorage(object())
    with pytest.raises(GuardConfigError):
        GuardConfig(storage="redis:/nope")


async def test_events_bus_gets_one_fallback_event(private_redis: PrivateRedis) -> None:
    got: list[Any] = []
    st = from_url(private_redis.url, timeout=0.25, probe_interval=60.0)
    st.bind_events(EventBus([got.append]))
    try:
        await private_redis.astop()
        for _ in range(5):
            await st.breaker_state("acct:1/dc:1")
        assert len(got) == 1 and got[0].active and got[0].backend == "redis"
    finally:
        await st.aclose()


async def test_client_with_decode_responses(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    st = RedisStorage(client, prefix=prefix, storage_fallback="fail")
    try:
        spec = [LimitSpec("acct:3", ((1, 1.0),))]
        assert (await st.reserve(spec)).delay == 0.0
        r = await st.reserve(spec)
        assert 0.9 < r.delay <= 1.0
        await st.release(spec, r.token)
        assert 0.9 < (await st.reserve(spec)).delay <= 1.0
        d = await st.breaker_failure("acct:3/dc:1", POLICY)
        assert (d.state, d.old, d.failures) == ("OPEN", "CLOSED", 1)
        assert 4 < await st.flood_block("acct:3/method:m", 5.0) <= 5
    finally:
        await st.aclose()
        await client.aclose()
