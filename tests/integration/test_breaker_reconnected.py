"""A breaker opened by an outage does not outlive it: when the guarded sender's reconnect is
answered (``ReconnectSucceeded``), the OPEN breaker of that (account, DC) goes HALF_OPEN at once
and the next call is its probe, so calls are served long before ``breaker_open_seconds`` ends.

Found by a new-user trial (b3_deadline, ``deadline=3``, sends every 0.1 s through a reset or a
-429 storm): calls whose whole deadline passed while they waited for the paced reconnect opened
the breaker, and it kept refusing calls on the healthy new connection for the rest of its 5 s
(ok 33-36 of 80, CircuitOpenError 34-36; plain Telethon 79/80).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.events import (
    BreakerStateChanged,
    GuardEvent,
    ReconnectSucceeded,
    RequestFinished,
)
from telethon_guard.storage import CLOSED, HALF_OPEN, OPEN
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import (
    OnLiveConnections,
    OnNewConnections,
    Transport429Storm,
)

BOUND = 30.0


def plan_now(plan: FaultPlan) -> float:
    assert plan.started_at is not None
    return time.monotonic() - plan.started_at


@pytest.mark.parametrize("fault", ["reset", "storm"])
async def test_breaker_opened_by_an_outage_serves_calls_once_reconnected(fault: str) -> None:
    """deadline 1 s, breaker OPEN for 60 s: sends every 0.1 s through a 1.5 s outage (live
    connection reset + new ones closed, or a transport -429 storm) time out waiting for the
    paced reconnect and open the breaker; once the reconnect is answered, the next sends are
    served (the first one the probe, OPEN -> HALF_OPEN -> CLOSED), not refused for 60 s.
    Before: every send after the reconnect raised CircuitOpenError."""
    events: list[GuardEvent] = []
    reconnected = asyncio.Event()

    def on_event(e: GuardEvent) -> None:
        events.append(e)
        if isinstance(e, ReconnectSucceeded):
            reconnected.set()

    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        client: GuardedTelegramClient = server.client(
            cls=GuardedTelegramClient, deadline=1.0, breaker_open_seconds=60.0,
            on_event=[on_event])
        async with client:
            await asyncio.wait_for(client.get_input_entity("alice"), BOUND)
            start = plan_now(plan) + 0.2
            if fault == "reset":
                plan.add(OnLiveConnections("reset", start=start))
                plan.add(OnNewConnections("close", start=start, duration=1.5))
            else:
                plan.add(Transport429Storm(start=start, duration=1.5))

            async def send(text: str) -> str:
                try:
                    await asyncio.wait_for(client.send_message("alice", text), BOUND)
                    return "ok"
                except Exception as e:  # the assertions name it
                    return type(e).__name__

            during: list[asyncio.Task[str]] = []
            for i in range(200):  # 20 s at most
                if reconnected.is_set():
                    break
                during.append(asyncio.create_task(send(f"d{i}")))
                await asyncio.sleep(0.1)
            assert reconnected.is_set(), [type(e).__name__ for e in events
                                          if not isinstance(e, RequestFinished)][:40]
            outcomes = await asyncio.gather(*during)
            assert "DeadlineExceeded" in outcomes and "CircuitOpenError" in outcomes, outcomes
            # The breaker opened during the outage (the fix must not hide that).
            opened = [e for e in events if isinstance(e, BreakerStateChanged) and e.new == OPEN]
            assert opened, events
            after = [await send(f"a{i}") for i in range(5)]
            assert after == ["ok"] * 5, after
            state = await client.guard.pipeline.breaker.state(opened[0].key)
            assert state.state == CLOSED
    changes = [(e.old, e.new) for e in events if isinstance(e, BreakerStateChanged)]
    assert changes[-2:] == [(OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)], changes
