"""The process connection budget after a short transport -429 storm, real Telethon over real
sockets: recovery is bounded by the budget's normal windows (not one client per second), and
a client waiting for a budget slot still gives up after ``max_reconnect_seconds`` with
``TransportFloodError`` (new-user trial: 50 clients reconnected one per second; a slot wait
never ran the give-up check).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from telethon import functions

from telethon_guard.budget import DEFAULT_BUDGET_WINDOWS, ConnectionBudget, set_process_budget
from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import TransportFloodError
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import Latency, Transport429Storm

METHOD = "help.getNearestDc"
HOLD = 1.0  # the server holds each call this long, so calls are pending when the storm hits


async def counted_call(client: GuardedTelegramClient, outcome: Counter[str]) -> None:
    """One ``help.getNearestDc``; its outcome ("ok" or the error's name) counted in
    ``outcome`` (the tests assert on the counts)."""
    try:
        await client(functions.help.GetNearestDcRequest())
        outcome["ok"] += 1
    except Exception as e:  # counted and asserted by the caller
        outcome[type(e).__name__] += 1


@pytest.fixture
def fresh_budget() -> Iterator[ConnectionBudget]:
    """A default process budget with no history from other tests."""
    mine = ConnectionBudget()
    previous = set_process_budget(mine)
    try:
        yield mine
    finally:
        set_process_budget(previous)


async def test_clients_recover_from_a_short_storm_at_the_normal_pace(
        fresh_budget: ConnectionBudget) -> None:
    n_clients, calls_each, storm = 30, 3, 1.0
    async with TelegramTestServer() as server:
        clients = [server.client(GuardedTelegramClient, deadline=60.0) for _ in range(n_clients)]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), 30)
            server.faults.add(Latency(METHOD, HOLD))
            outcome: Counter[str] = Counter()

            tasks = [asyncio.ensure_future(counted_call(c, outcome))
                     for c in clients for _ in range(calls_each)]
            await asyncio.sleep(0.3)
            server.faults.add(Transport429Storm(start=server.faults.now(), duration=storm))
            t0 = time.monotonic()
            # Bound: the storm, the storm pace's hold after the last refusal (5 s), the normal
            # windows for every client (10 per 1 s, 60 per 10 s -> ceil(30 / 10) s), the held
            # call, plus slack for each client's own pacer and a busy machine. One client per
            # second (the regression) would need 30 s and more.
            per_second = DEFAULT_BUDGET_WINDOWS[0][0]
            bound = storm + 5.0 + math.ceil(n_clients / per_second) + HOLD + 8.0
            _, pending = await asyncio.wait(tasks, timeout=bound)
            took = time.monotonic() - t0
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert not pending, (f"{len(pending)} calls still pending {took:.1f} s after the "
                                 f"storm began: {dict(outcome)}")
            assert outcome == Counter(ok=n_clients * calls_each), dict(outcome)
            assert fresh_budget.refusals, "the storm never reached the budget"
        finally:
            await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients),
                                                  return_exceptions=True), 30)


async def test_a_client_waiting_for_a_budget_slot_gives_up_after_max_reconnect_seconds(
        fresh_budget: ConnectionBudget) -> None:
    n_clients, give_up, storm = 5, 2.0, 0.5
    async with TelegramTestServer() as server:
        clients = [server.client(GuardedTelegramClient, max_reconnect_seconds=give_up,
                                 deadline=30.0) for _ in range(n_clients)]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), 30)
            # From now on one new connection per 60 s for the whole process: after the storm
            # at most one client gets a slot in this test; the others wait for one.
            set_process_budget(ConnectionBudget(((1, 60.0),), storm_windows=()))
            server.faults.add(Latency(METHOD, HOLD))
            ended: list[tuple[str, float]] = []
            t0 = time.monotonic()

            async def call(client: GuardedTelegramClient) -> None:
                try:
                    await client(functions.help.GetNearestDcRequest())
                    ended.append(("ok", time.monotonic() - t0))
                except Exception as e:  # asserted below
                    ended.append((type(e).__name__, time.monotonic() - t0))

            tasks = [asyncio.ensure_future(call(c)) for c in clients]
            await asyncio.sleep(0.3)
            server.faults.add(Transport429Storm(start=server.faults.now(), duration=storm))
            # Before the call deadline (30 s) and the next slot (60 s): only the give-up
            # (2 s after the -429) can end the waiting clients' calls this early.
            _, pending = await asyncio.wait(tasks, timeout=give_up + 10.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert not pending, f"{len(pending)} calls still waiting: {ended}"
            flood = [t for name, t in ended if name == TransportFloodError.__name__]
            assert len(flood) >= n_clients - 1, ended
            assert all(t < give_up + 10.0 for t in flood), ended
        finally:
            await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients),
                                                  return_exceptions=True), 30)


async def test_the_storm_pace_ends_when_a_connection_is_answered_again() -> None:
    """The storm pace (1 new connection per second for the whole process) holds only while
    the DC refuses: the first new connection it answers after the storm lifts it, although
    the refusal mark would hold for ``storm_seconds`` more (120 s here; the default is 5 s,
    which made recovery take storm + 5 s + N/10 s). Every call succeeds; the mark is gone
    when they are done, and the lift was counted."""
    n_clients, storm = 20, 1.0
    mine = ConnectionBudget(storm_seconds=120.0)
    previous = set_process_budget(mine)
    try:
        async with TelegramTestServer() as server:
            clients = [server.client(GuardedTelegramClient, deadline=90.0)
                       for _ in range(n_clients)]
            try:
                await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), 30)
                server.faults.add(Latency(METHOD, HOLD))
                outcome: Counter[str] = Counter()

                tasks = [asyncio.ensure_future(counted_call(c, outcome)) for c in clients]
                await asyncio.sleep(0.3)
                server.faults.add(Transport429Storm(start=server.faults.now(), duration=storm))
                _, pending = await asyncio.wait(tasks, timeout=100.0)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                assert not pending, dict(outcome)
                assert outcome == Counter(ok=n_clients), dict(outcome)
                assert len(mine.refusals) == 1, mine.refusals
                (target,) = mine.refusals
                assert mine.refusals[target] >= 2  # the storm reached the budget ...
                assert mine.lifted.get(target, 0) >= 1, mine.stats()  # ... and was lifted
                assert await mine.refusing_for(target) == 0.0  # not held for 120 s
            finally:
                await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients),
                                                      return_exceptions=True), 30)
    finally:
        set_process_budget(previous)
