"""Shared by the update tests (tests/integration, tests/testing): a bounded poll."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def poll_until(cond: Callable[[], bool], timeout: float) -> None:
    """Wait until ``cond()`` holds, polling every 20 ms; ``AssertionError`` after ``timeout``
    seconds (event-loop clock)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
