"""The process connection budget across many clients, real Telethon over real sockets:
a transport -429 storm refusing every connection hits 40 pooled clients at once; the
connection attempts the server sees stay within the budget, every client recovers, and no call
hangs (issue 12: 40 guarded clients made 40 opened + 80 refused connections in ~10 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from telethon_guard.budget import ConnectionBudget, set_process_budget
from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import GuardError
from telethon_guard.pool import GuardedClientPool
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import Transport429Storm
from telethon_guard.testing.log import ServerLog

from ._client_helpers import bounded

N_CLIENTS = 40
STORM = 2.0  # seconds every connection is refused with -429
NORMAL = ((20, 1.0),)  # the budget: 20 new connections per second...
STORM_PACE = ((3, 1.0),)  # ...3 per second while the DC refuses...
STORM_HOLD = 2.0  # ...until 2 s after the last refusal (longer than the pace period)


@pytest.fixture
def budget() -> Iterator[ConnectionBudget]:
    # storm_sources=1: every refusal renews the storm pace (the default needs two clients
    # refused within the hold).
    mine = ConnectionBudget(NORMAL, storm_windows=STORM_PACE, storm_seconds=STORM_HOLD,
                            storm_sources=1)
    previous = set_process_budget(mine)
    try:
        yield mine
    finally:
        set_process_budget(previous)


def attempts(log: ServerLog) -> list[float]:
    """Server-clock times of every connection attempt (served or refused), sorted."""
    return sorted(e.time for e in log.entries if e.kind in ("opened", "refused"))


def max_in_window(times: list[float], seconds: float) -> int:
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - seconds:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_a_429_storm_on_40_clients_reconnects_them_within_the_budget(
        budget: ConnectionBudget) -> None:
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        sessions = {f"u{i}": server.session() for i in range(N_CLIENTS)}

        def factory(tenant: str) -> Any:
            return server.client(
                GuardedTelegramClient, session=sessions[tenant], storage=pool.storage,
                # a compressed TDLib schedule per client, so the test runs in seconds
                reconnect_pacing=((1, 0.1),), reconnect_backoff_base=0.1,
                reconnect_backoff_cap=0.5, max_reconnect_seconds=30.0, deadline=40.0)

        pool = GuardedClientPool(factory, max_concurrent_connects=N_CLIENTS)
        async with pool:

            async def get_me(name: str) -> int:
                async with pool.lease(name) as client:
                    return int((await client.get_me()).id)

            await bounded(asyncio.gather(*(get_me(n) for n in sessions)), 30)
            connected_at = time.monotonic()
            before = len(attempts(server.log))
            assert before == N_CLIENTS
            assert plan.started_at is not None
            storm_start = time.monotonic() - plan.started_at
            plan.add(Transport429Storm(start=storm_start, duration=STORM))
            await asyncio.sleep(0.2)  # every live connection gets the -429 now
            # Calls made during and after the storm: each either answers after the paced
            # reconnect or ends with a typed error; none hangs (bounded by wait_for).
            results = await bounded(asyncio.gather(
                *(get_me(n) for n in sessions), return_exceptions=True), 60)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert all(isinstance(e, GuardError) for e in errors), errors
            assert len(errors) == 0, errors  # max_reconnect_seconds (30) outlasts the storm
            # Every client recovered: a call right now answers at once on every one of them.
            again = await bounded(asyncio.gather(*(get_me(n) for n in sessions)), 30)
            assert len(set(again)) == N_CLIENTS

        times = [t for t in attempts(server.log)][before:]
        refused = server.log.connections_refused()
        # The budget held at the server: never more than the storm pace within any second
        # while refusing (3 + a grant in flight at the boundary), never more than NORMAL.
        # While the server refuses (the storm): every refusal the client reads as -429 renews
        # the storm pace for STORM_HOLD s. (Afterwards the hold may end earlier than
        # STORM_HOLD after the server's last refusal: a refused connection can also surface
        # as a plain EOF, which marks nothing; so only the storm itself is checked.)
        storm_end = plan.started_at + storm_start + STORM
        during = [t for t in times if t < storm_end]
        assert max_in_window(during, 0.95) <= STORM_PACE[0][0] + 1, during
        assert max_in_window(times, 0.95) <= NORMAL[0][0] + 1
        assert refused <= (STORM + 1) * STORM_PACE[0][0] + 1, refused
        assert budget.refusals and budget.max_wait > 0
        assert time.monotonic() - connected_at < 60
