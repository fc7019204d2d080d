"""``deadline_scope`` reaches calls timed on the guard clock, whatever that clock's origin.

A guarded client may run on its own clock (``GuardedTelegramClient(clock=...)``: a fake clock
in tests, any monotonic source). A scope opened with ``time.monotonic()`` must give the calls
inside the same time left on the guard clock, and a scope can be opened on the guard clock
itself (``guard=client`` / ``clock=``). Real Telethon against the test server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import DeadlineExceeded
from telethon_guard.fakeclock import FakeClock
from telethon_guard.health import current_deadline, deadline_scope
from telethon_guard.testing import TelegramTestServer

BOUND = 10.0  # seconds: no call here may take longer


class OffsetClock:
    """``time.monotonic()`` shifted by ``offset`` seconds: a valid guard clock (monotonic,
    real timers) whose origin differs from ``time.monotonic()``'s."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_at(self, when: float, callback: Callable[[], Any]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, when - self.now()), callback)


def dialogs_request() -> Any:
    return functions.messages.GetDialogsRequest(
        offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(),
        limit=10, hash=0)


@pytest.mark.parametrize("offset", [1e6, -1e6])
async def test_a_monotonic_scope_bounds_calls_on_an_offset_guard_clock(offset: float) -> None:
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, clock=OffsetClock(offset),
                               method_limits={"messages.getDialogs": ((1, 0.5),)})
        async with client:
            with deadline_scope(5.0):  # plenty: the call is answered at once
                await asyncio.wait_for(client(dialogs_request()), BOUND)
            with deadline_scope(0.05):  # the next slot is ~0.5 s away: fails at once
                t = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    await asyncio.wait_for(client(dialogs_request()), BOUND)
                assert time.monotonic() - t < 0.3
        assert server.log.count("messages.getDialogs") == 1


async def test_a_scope_on_the_guard_clock() -> None:
    clock = FakeClock(start=50.0, auto_advance=False)
    with deadline_scope(2.0, clock=clock) as at:
        assert at == 52.0 == current_deadline(clock.now) == current_deadline()
        clock.advance(1.5)
        # on time.monotonic() the same 0.5 s is left
        left = current_deadline(time.monotonic)
        assert left is not None and abs(left - time.monotonic() - 0.5) < 0.05
        with deadline_scope(10.0) as inner:  # a longer monotonic scope inside only keeps it
            assert abs(inner - time.monotonic() - 0.5) < 0.05
            assert abs(current_deadline(clock.now) - 52.0) < 0.05  # type: ignore[operator]


async def test_with_fallback_and_guard_use_the_client_clock() -> None:
    client = GuardedTelegramClient(None, 1, "x", clock=OffsetClock(1e6))
    with deadline_scope(3.0, guard=client) as at:
        assert abs(at - (time.monotonic() + 1e6 + 3.0)) < 0.05
        assert abs(current_deadline(time.monotonic) - time.monotonic() - 3.0) < 0.05  # type: ignore[operator]
