"""The connection budget on Redis: budgets of several processes (one RedisStorage each) share
one set of slots and the "refusing" mark per DC address."""

from __future__ import annotations

import asyncio

from telethon_guard.budget import ConnectionBudget
from telethon_guard.storage.redis import from_url


async def test_budgets_on_one_redis_share_slots_and_the_refusing_mark(
        redis_url: str, prefix: str) -> None:
    first_storage = from_url(redis_url, prefix=prefix)
    second_storage = from_url(redis_url, prefix=prefix)  # another process's connection
    try:
        first = ConnectionBudget(((2, 1.0),), storm_windows=((1, 2.0),), storm_seconds=5.0,
                                 storage=first_storage)
        second = ConnectionBudget(((2, 1.0),), storm_windows=((1, 2.0),), storm_seconds=5.0,
                                  storage=second_storage)
        target = "127.0.0.1:4001"
        assert await asyncio.wait_for(first.acquire(target), 5) == 0.0
        assert await asyncio.wait_for(second.acquire(target), 5) == 0.0
        # Two slots per second across both processes: the third waits for the window.
        waited = await asyncio.wait_for(second.acquire(target), 5)
        assert 0.5 < waited <= 1.1
        assert await asyncio.wait_for(first.acquire("127.0.0.1:4002"), 5) == 0.0  # other DC
        await first.record_refused(target)
        assert 4.0 < await second.refusing_for(target) <= 5.0
        # Refusing: the storm window (1 per 2 s) counts the attempts made before it too.
        waited = await asyncio.wait_for(second.acquire(target), 5)
        assert 1.0 < waited <= 2.1
    finally:
        await first_storage.aclose()
        await second_storage.aclose()
