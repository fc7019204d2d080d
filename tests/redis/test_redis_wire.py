"""The admission's own wire path (``storage/redis_wire.py``) on a real ``redis-server``:

* a Redis that stops answering (SIGSTOP) fails the admission within ``timeout`` (the
  watchdog's ``TimeoutError`` -> ``StorageUnavailableError`` under ``"fail"``), the caller's
  task is not left cancelled, and a cancellation from elsewhere stays a ``CancelledError``;
* the late replies of those calls are never read as another call's answer once Redis is back;
* closing the storage closes the admission's connections, also on a client passed in (whose
  own pool is left alone).
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import redis.asyncio as aioredis
from redis_helpers import PrivateRedis

from telethon_guard.errors import StorageUnavailableError
from telethon_guard.storage import LimitSpec
from telethon_guard.storage.redis import RedisStorage, from_url

BR = "acct:w/dc:2"
SCOPE = "acct:w/method:m"
OTHER = "acct:w/method:other"
SPECS = (LimitSpec("acct:w", ((1000, 1.0),)),)


async def test_paused_redis_times_out_and_late_replies_answer_nobody(
        private_redis: PrivateRedis) -> None:
    st = from_url(private_redis.url, prefix="w", storage_fallback="fail", timeout=0.3,
                  probe_interval=0.05)
    assert st._wire is not None  # a plain client: the admission takes the wire path
    proc = private_redis.proc
    assert proc is not None
    try:
        await st.flood_block(OTHER, 30.0)
        a = await st.admit(BR, 60.0, [SCOPE], SPECS)
        assert a.flood_index == -1 and a.reservation is not None

        proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(StorageUnavailableError):
                await asyncio.wait_for(st.admit(BR, 60.0, [SCOPE], SPECS), 5)
            assert time.monotonic() - t0 < 2.0  # 0.3 s timeout, loaded machine
            await asyncio.sleep(0)  # the watchdog's cancellation was taken back
            await asyncio.sleep(0.1)  # a probe is due: the next call tries Redis again

            # cancelled from elsewhere while waiting for Redis: a CancelledError
            task = asyncio.ensure_future(st.admit(BR, 60.0, [SCOPE], SPECS))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        finally:
            proc.send_signal(signal.SIGCONT)

        # Redis now runs the EVALSHAs it had buffered; their replies must reach nobody: the
        # next answers are the questions' own (a blocked scope, then a free one)
        deadline = time.monotonic() + 10
        while True:
            try:
                a = await st.admit(BR, 60.0, [OTHER], SPECS)
                break
            except StorageUnavailableError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert a.flood_index == 0 and 25.0 < a.flood_left <= 30.0 and a.reservation is None
        a = await st.admit(BR, 60.0, [SCOPE], SPECS)
        assert a.flood_index == -1 and a.reservation is not None
        assert 25.0 < await st.flood_left(OTHER) <= 30.0
    finally:
        await st.aclose()


async def _named(url: str, name: str) -> int:
    admin = aioredis.Redis.from_url(url)
    try:
        return sum(1 for c in await admin.client_list() if c.get("name") == name)
    finally:
        await admin.aclose()


async def test_aclose_closes_the_admissions_connections_not_the_clients(
        private_redis: PrivateRedis) -> None:
    client = aioredis.Redis.from_url(private_redis.url, client_name="wire-test")
    st = RedisStorage(client, prefix="w2", storage_fallback="fail", timeout=2.0)
    try:
        await st.admit(BR, 60.0, [SCOPE], SPECS)  # NOSCRIPT: loaded through the client
        await asyncio.gather(*(st.admit(BR, 60.0, [SCOPE], SPECS) for _ in range(3)))
        own = len(client.connection_pool._available_connections)  # the client's pool
        assert own >= 1
        wire = await _named(private_redis.url, "wire-test") - own
        assert wire >= 1  # the admission's own connections, same client name
        await st.aclose()
        deadline = time.monotonic() + 5
        while await _named(private_redis.url, "wire-test") != own:  # the server sees closes
            assert time.monotonic() < deadline, "the admission's connections stayed open"
            await asyncio.sleep(0.05)
        assert await client.ping()  # the client passed in still works
    finally:
        await client.aclose()


async def test_beyond_its_connections_the_admission_takes_the_clients_path(
        redis_url: str, prefix: str) -> None:
    st = from_url(redis_url, prefix=prefix, storage_fallback="fail", timeout=5.0)
    wire = st._wire
    assert wire is not None
    wire.max_connections = 2
    spec = (LimitSpec("acct:w/cap", ((1000, 60.0),)),)
    try:
        replies = await asyncio.wait_for(
            asyncio.gather(*(st.admit(BR, 60.0, [SCOPE], spec) for _ in range(12))), 10)
        assert all(a.reservation is not None and a.reservation.delay == 0.0 for a in replies)
        assert 1 <= len(wire._conns) <= 2  # the others went through redis-py's pool
        assert await st.client.zcard(f"{prefix}:rl:{{acct:w}}/cap") == 12  # all 12 counted
    finally:
        await st.client.delete(f"{prefix}:rl:{{acct:w}}/cap")
        await st.aclose()
