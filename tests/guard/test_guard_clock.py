from __future__ import annotations

import asyncio
import time

from telethon_guard.clock import Clock, MonotonicClock
from telethon_guard.fakeclock import FakeClock


async def test_fake_clock_auto_advances_concurrent_sleepers() -> None:
    clock = FakeClock(start=0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, d: float) -> None:
        await clock.sleep(d)
        woke.append((name, clock.now()))

    await asyncio.wait_for(asyncio.gather(sleeper("b", 5), sleeper("a", 2), sleeper("c", 5)), 5)
    assert woke == [("a", 2), ("b", 5), ("c", 5)]


async def test_fake_clock_manual_advance_fires_timers_in_order() -> None:
    clock = FakeClock(start=0, auto_advance=False)
    fired: list[float] = []
    clock.call_at(3, lambda: fired.append(clock.now()))
    h = clock.call_at(1, lambda: fired.append(-1))
    clock.call_at(2, lambda: fired.append(clock.now()))
    h.cancel()
    clock.advance(10)
    assert fired == [2, 3] and clock.now() == 10


async def test_two_fake_clocks_on_one_loop_do_not_livelock() -> None:
    c1, c2 = FakeClock(), FakeClock()
    await asyncio.wait_for(asyncio.gather(c1.sleep(100), c2.sleep(50), c1.sleep(7)), 5)
    assert c1.now() == 1100 and c2.now() == 1050


async def test_monotonic_clock() -> None:
    clock: Clock = MonotonicClock()
    assert abs(clock.now() - time.monotonic()) < 1
    fired = asyncio.Event()
    clock.call_at(clock.now() + 0.01, fired.set)
    await asyncio.wait_for(fired.wait(), 5)
    await clock.sleep(0)
