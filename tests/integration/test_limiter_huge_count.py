"""A client with a huge rate-limit count keeps a bounded limiter log, over real sockets.

``rate_limits=((10**9, 1.0),)`` ("effectively unlimited") kept one slot per call for ever in
the in-memory limiter (+33 bytes per call): the log was trimmed only past ``2 * count + 64``
entries. Now it is trimmed by the window's age too.
"""

from __future__ import annotations

import asyncio
import time

from telethon import functions

from telethon_guard import GuardedTelegramClient
from telethon_guard.storage.memory import MemoryStorage
from telethon_guard.testing import TelegramTestServer

BOUND = 60.0


async def test_the_log_of_a_huge_count_stays_within_its_window() -> None:
    storage = MemoryStorage()
    async with TelegramTestServer() as server:
        client = server.client(GuardedTelegramClient,
                               session=server.session(server.world.user_id("alice")),
                               rate_limits=((10**9, 1.0),), storage=storage)
        async with client:
            request = functions.updates.GetStateRequest()
            calls = 0
            start = time.monotonic()
            done: list[float] = []

            async def worker() -> None:
                nonlocal calls
                while calls < 3000 or time.monotonic() - start < 4.0:
                    assert time.monotonic() - start < BOUND
                    await client(request)
                    calls += 1
                    done.append(time.monotonic())

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(8))), BOUND + 5)
        logs = {key: kl for key, kl in storage._keys.items() if kl.log}
        assert logs, "the limiter recorded no slot"
        # The most calls answered in any 1.1 s (the 1 s window, with room for a reservation
        # made before its answer; the run lasts 4 s, so one slot per call would exceed it):
        # a trim keeps at most twice the live slots, and live slots never exceed that. (Not
        # the last second's: on a loaded host the rate can halve between the last trim and the
        # end, and the log then holds twice an earlier rate.)
        peak, lo = 0, 0
        for hi, t in enumerate(done):
            while done[lo] < t - 1.1:
                lo += 1
            peak = max(peak, hi - lo + 1)
        for key, kl in logs.items():
            live = len(storage.slots(key))
            assert live < calls  # the run outlasted the 1 s window
            assert len(kl.log) <= max(2 * 512 + 64, 2 * peak) + 1, (key, len(kl.log), calls,
                                                                      peak)
