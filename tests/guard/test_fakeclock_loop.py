"""FakeClock asks the loop whether callbacks are ready through one named function.

``ready_callback_count`` prefers a loop's public ``ready_callback_count()`` (the protocol a test
event loop can implement), reads asyncio's private ready queue only as the fallback, and says
"unknown" for a loop with neither, where the driver only steps.
"""

from __future__ import annotations

import asyncio
import types

from telethon_guard.fakeclock import FakeClock, ready_callback_count


class CountingLoop(asyncio.SelectorEventLoop):
    """A test event loop answering the protocol (and counting how often it is asked)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def ready_callback_count(self) -> int:
        self.asked += 1
        return len(self._ready)  # type: ignore[attr-defined]


async def _sleep_a_minute(clock: FakeClock) -> float:
    start = clock.now()
    await asyncio.wait_for(clock.sleep(60.0), timeout=5.0)  # real bound: never hangs
    return clock.now() - start


def test_a_loop_with_the_protocol_is_asked_and_time_jumps() -> None:
    loop = CountingLoop()
    try:
        moved = loop.run_until_complete(_sleep_a_minute(FakeClock()))
    finally:
        loop.close()
    assert moved == 60.0
    assert loop.asked > 0


def test_the_default_loop_auto_advances() -> None:
    assert asyncio.run(_sleep_a_minute(FakeClock())) == 60.0


def test_a_loop_with_neither_is_unknown() -> None:
    assert ready_callback_count(types.SimpleNamespace()) is None  # type: ignore[arg-type]
    answering = types.SimpleNamespace(ready_callback_count=lambda: 3, _ready=[1])
    assert ready_callback_count(answering) == 3  # type: ignore[arg-type]
    assert ready_callback_count(types.SimpleNamespace(_ready=[1, 2])) == 2  # type: ignore[arg-type]
