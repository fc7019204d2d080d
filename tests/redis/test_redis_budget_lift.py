"""The early end of the storm pace on Redis: a process whose new connection is answered again
lifts the "refusing" mark for every process sharing the budget (real Redis), and only a
process that saw the target refusing asks Redis at all (``note_connected``)."""

from __future__ import annotations

import asyncio

from telethon_guard.budget import ConnectionBudget
from telethon_guard.storage.redis import from_url


async def test_a_process_answered_again_lifts_the_storm_for_every_process(
        redis_url: str, prefix: str) -> None:
    first_storage = from_url(redis_url, prefix=prefix)
    second_storage = from_url(redis_url, prefix=prefix)  # another process's connection
    try:
        first = ConnectionBudget(((10, 1.0),), storm_windows=((1, 2.0),), storm_seconds=30.0,
                                 storage=first_storage)
        second = ConnectionBudget(((10, 1.0),), storm_windows=((1, 2.0),), storm_seconds=30.0,
                                  storage=second_storage)
        target = "127.0.0.1:4001"
        await asyncio.wait_for(first.record_refused(target), 5)
        assert await asyncio.wait_for(second.refusing_for(target), 5) > 25.0
        # the second process has not seen the storm yet: its hook does not ask Redis
        second.note_connected(target)
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(first.refusing_for(target), 5) > 25.0
        assert second.lifted == {}
        # once it has (a slot asked while refusing), its first answered connection lifts it
        assert await asyncio.wait_for(second.acquire(target), 5) == 0.0
        second.note_connected(target)
        for _ in range(100):
            if second.lifted:
                break
            await asyncio.sleep(0.02)
        assert second.lifted == {target: 1}
        assert await asyncio.wait_for(first.refusing_for(target), 5) == 0.0
        # the normal windows only, in both processes
        assert await asyncio.wait_for(first.acquire(target), 5) == 0.0
        await asyncio.sleep(0.05)
        # a refusal after the lift puts the storm pace back, for both
        await asyncio.wait_for(first.record_refused(target), 5)
        assert await asyncio.wait_for(second.refusing_for(target), 5) > 25.0
    finally:
        await first_storage.aclose()
        await second_storage.aclose()
