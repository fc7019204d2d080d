"""Redis restarted (killed and started again empty, on its port) while a flood block is
active and calls are in flight, through a real Telethon client and the test server:

* no call hangs: every call ends within its deadline (most in well under a second);
* the fallback holds: the block learned from Redis before the outage still refuses calls
  (``FloodWaitBlocked``) while Redis is away, other methods are served locally;
* a FLOOD_WAIT learned during the outage holds locally too;
* once Redis is back, state converges within the documented bound (``probe_interval`` plus
  one operation's ``timeout`` after this process's next storage operation): another process
  sees both blocks, the one from before the outage (written back from this process's view:
  the restarted Redis had lost it) and the one learned during the outage.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import telethon.errors as te
from redis_helpers import PrivateRedis
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import FloodWaitBlocked
from telethon_guard.storage.redis import RedisStorage, from_url
from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

ME = functions.users.GetUsersRequest([types.InputUserSelf()])
STATE = functions.updates.GetStateRequest()
TIMEOUT = 0.2
PROBE = 0.5
DEADLINE = 3.0


async def test_redis_restart_during_a_flood_block(private_redis: PrivateRedis) -> None:
    storage = RedisStorage(url=private_redis.url, prefix="restart", timeout=TIMEOUT,
                           probe_interval=PROBE)
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, storage=storage, account="acct-rs",
                               max_flood_wait=1.0, deadline=DEADLINE, retry_max_attempts=2,
                               adaptive_pacing=False)
        async with client:
            await asyncio.wait_for(client(ME), 5)
            server.faults.add(ErrorOnCalls("users.getUsers", 420, "FLOOD_WAIT_60", times=1))
            with pytest.raises((te.FloodWaitError, FloodWaitBlocked)):
                await asyncio.wait_for(client(ME), 5)
            me_scope = next(iter(client.guard.stats()["blocked"]))

            # Redis dies with calls in flight
            calls = [asyncio.ensure_future(client(ME)) for _ in range(5)]
            calls += [asyncio.ensure_future(client(STATE)) for _ in range(5)]
            t0 = time.monotonic()
            await private_redis.astop()
            results = await asyncio.wait_for(
                asyncio.gather(*calls, return_exceptions=True), DEADLINE + 2)
            assert time.monotonic() - t0 < DEADLINE + 1
            assert all(isinstance(r, FloodWaitBlocked) for r in results[:5]), results
            assert not any(isinstance(r, BaseException) for r in results[5:]), results

            # during the outage: the old block holds, a new FLOOD_WAIT is learned locally
            for _ in range(3):
                t0 = time.monotonic()
                with pytest.raises(FloodWaitBlocked):
                    await asyncio.wait_for(client(ME), DEADLINE + 2)
                assert time.monotonic() - t0 < TIMEOUT + 1.0
            assert not storage.available
            server.faults.add(ErrorOnCalls("updates.getState", 420, "FLOOD_WAIT_30", times=1))
            with pytest.raises((te.FloodWaitError, FloodWaitBlocked)):
                await asyncio.wait_for(client(STATE), DEADLINE + 2)
            with pytest.raises(FloodWaitBlocked):
                await asyncio.wait_for(client(STATE), DEADLINE + 2)
            blocked = client.guard.stats()["blocked"]
            assert len(blocked) == 2, blocked

            # Redis back, empty: converged within probe_interval + timeout of the next call
            await private_redis.astart()
            await asyncio.sleep(PROBE + 0.05)
            with pytest.raises(FloodWaitBlocked):
                await asyncio.wait_for(client(ME), DEADLINE + 2)  # the probe: Redis answers
            assert storage.available
            other = from_url(private_redis.url, prefix="restart", storage_fallback="fail")
            try:
                deadline = time.monotonic() + TIMEOUT + 1.0  # the copy-back runs in background
                while True:
                    await other.refresh_view()
                    seen = other.flood_scopes()
                    if len(seen) == 2 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.02)
                assert set(seen) == set(blocked), (seen, blocked)
                assert 50 < seen[me_scope] <= 60, seen
                assert all(20 < left <= 30 for s, left in seen.items() if s != me_scope)
            finally:
                await other.aclose()
        await storage.aclose()


async def test_a_block_lost_in_a_quick_restart_is_written_back(
        private_redis: PrivateRedis) -> None:
    """Redis restarted between two operations (no operation failed, no outage noticed): the
    process that knew the block still refuses, and writes it back for the others."""
    st = from_url(private_redis.url, prefix="quick", timeout=TIMEOUT, probe_interval=PROBE)
    other = from_url(private_redis.url, prefix="quick", storage_fallback="fail")
    scope = "acct:q/method:messages.sendMessage"
    try:
        assert 59 < await st.flood_block(scope, 60.0) <= 60
        await private_redis.astop()
        await private_redis.astart()  # empty
        assert await other.flood_left(scope) == 0.0  # lost with the restart
        assert 58 < await st.flood_left(scope) <= 60  # this process still knows it
        assert 58 < await other.flood_left(scope) <= 60  # ... and wrote it back
        await private_redis.astop()
        await private_redis.astart()
        a = await st.admit("acct:q/dc:2", 60.0, [scope], [])  # the admission does the same
        assert a.flood_index == 0 and 57 < a.flood_left <= 60
        assert 57 < await other.flood_left(scope) <= 60
    finally:
        await st.aclose()
        await other.aclose()
