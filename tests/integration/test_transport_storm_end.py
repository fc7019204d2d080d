"""After a short transport -429 storm the guarded sender is back as soon as TDLib's windows
allow (issue 13 item 3, the demo's storm): real Telethon over real sockets against the test
server, times scaled by ``F`` like ``test_transport_recovery``."""

from __future__ import annotations

import asyncio

from telethon import types

from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import Latency, Transport429Storm

from .test_transport_recovery import (
    BOUND,
    F,
    assert_typed,
    attempts_in,
    first_opened_after,
    guarded,
    no_strays,
    plan_now,
)


@no_strays
async def test_back_one_window_after_a_3s_storm_that_hit_a_live_connection() -> None:
    """The demo's incident, scaled: the connection opens, 1 s later (calls in flight) every
    live connection gets -429 and new ones are accepted then answered -429 for 3 s. TDLib
    counts the -429s in its windows (1 per 1 s, 2 per 4 s, 3 per 8 s): reconnects at ~2 s
    and ~5 s after the connection opened, back ~1 s after the storm. Before issue 13 the
    windows counted the connection's opening instead: ~1.8 s, ~4.0 s (inside the storm's
    last instant) and ~8 s, back ~4 s after it."""
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        client, sender = guarded(server)
        async with client:
            opened = plan_now(plan)  # the connection opened just now
            me = await asyncio.wait_for(client.get_me(), BOUND)
            plan.add(Latency("users.getUsers", 0.5 * F))
            await asyncio.sleep(max(0.0, opened + 1.0 * F - plan_now(plan)))
            calls = [asyncio.ensure_future(client.get_me()) for _ in range(3)]
            await asyncio.sleep(0.1 * F)  # in flight at the server
            storm = Transport429Storm(start=plan_now(plan), duration=3.0 * F)
            plan.add(storm)
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True),
                                             BOUND)
            assert_typed(results)
            assert all(isinstance(r, types.User) and r.id == me.id for r in results), results
            assert storm.begin is not None
            end = storm.begin + 3.0 * F
            back = first_opened_after(server.log, end)
            assert back is not None
            during = attempts_in(server.log, storm.begin, end)
            assert 1 <= len(during) <= 2, during  # within TDLib's windows
            assert back - end <= 1.0 * F + 0.5 * F, (back - end, during)
            assert sender.transport_errors[-429] >= 2
