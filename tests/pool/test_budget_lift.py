"""The connection budget leaves storm mode as soon as the target answers a new connection
again (``record_connected`` / ``note_connected``), not ``storm_seconds`` after the last
refusal; a later refusal puts the storm pace back; storm-paced waiters are woken by the lift
and served in the order they asked (fake clock).

Measured before (issue 12): recovery from a -429 storm was bounded by storm + 5 s (the storm
pace held after the last refusal) + N/10 s; the lift removes the 5 s hold.
"""

from __future__ import annotations

import asyncio

import pytest

from telethon_guard.budget import (
    ConnectionBudget,
    connection_target,
    note_connected,
    set_process_budget,
)
from telethon_guard.fakeclock import FakeClock
from telethon_guard.storage.memory import MemoryStorage


async def test_a_connection_answered_lifts_the_storm_and_a_refusal_puts_it_back() -> None:
    clock = FakeClock()
    budget = ConnectionBudget(((10, 1.0),), storm_seconds=5.0, clock=clock, margin=0.0)
    await budget.record_refused("dc1", source="c1")
    await budget.record_refused("dc1", source="c2")
    assert await budget.refusing_for("dc1") == pytest.approx(5.0)
    clock.advance(1.0)
    budget.note_connected("dc1")
    assert await budget.refusing_for("dc1") == 0.0
    assert budget.lifted == {"dc1": 1}
    assert budget.stats()["lifted"] == {"dc1": 1}
    # c1 and c2 were refused within storm_seconds: one more refusal is a storm again
    await budget.record_refused("dc1", source="c3")
    assert await budget.refusing_for("dc1") == pytest.approx(5.0)


async def test_connected_without_a_storm_changes_nothing() -> None:
    clock = FakeClock()
    budget = ConnectionBudget(((1, 1.0),), clock=clock, margin=0.0)
    budget.note_connected("dc1")
    await budget.record_connected("dc1")
    assert budget.lifted == {}
    assert await budget.acquire("dc1") == 0.0
    assert await budget.acquire("dc1") == pytest.approx(1.0)  # the normal windows still hold


async def test_storm_waiters_are_woken_by_the_lift_in_the_order_they_asked() -> None:
    clock = FakeClock(auto_advance=False)
    budget = ConnectionBudget(((10, 1.0),), storm_windows=((1, 1.0),), storm_seconds=5.0,
                              clock=clock, margin=0.0)
    await budget.record_refused("dc1")
    start = clock.now()
    granted: list[tuple[str, float]] = []

    async def one(name: str) -> None:
        await budget.acquire("dc1")
        granted.append((name, round(clock.now() - start, 6)))

    names = [f"c{i}" for i in range(6)]
    tasks = []
    for name in names:
        tasks.append(asyncio.ensure_future(one(name)))
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert granted == [("c0", 0.0)]  # the storm pace: one per second
    clock.advance(0.5)
    budget.note_connected("dc1")  # a connection answered: the storm is over
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    # all at the lift (the normal windows allow 10 per second), first come first served;
    # before: one per second until the mark expired (5 s after the refusal)
    assert granted == [(n, 0.0 if n == "c0" else 0.5) for n in names]
    assert budget.waiting == 0


async def test_the_lift_reaches_every_budget_on_a_shared_storage() -> None:
    clock = FakeClock()
    storage = MemoryStorage(clock)
    first = ConnectionBudget(((2, 1.0),), storage=storage, clock=clock, margin=0.0)
    second = ConnectionBudget(((2, 1.0),), storage=storage, clock=clock, margin=0.0)
    await first.record_refused("dc1")
    assert await second.refusing_for("dc1") > 0
    await second.record_connected("dc1")
    assert await first.refusing_for("dc1") == 0.0
    assert second.lifted == {"dc1": 1}


class _Conn:
    """What ``connection_target`` reads of a Telethon ``Connection``."""

    def __init__(self, ip: str, port: int) -> None:
        self._ip, self._port, self._dc_id = ip, port, 2


async def test_sender_hook_lifts_the_process_budget_for_that_address() -> None:
    clock = FakeClock()
    mine = ConnectionBudget(((10, 1.0),), clock=clock, margin=0.0)
    original = set_process_budget(mine)
    try:
        conn = _Conn("127.0.0.1", 4001)
        target = connection_target(conn)
        await mine.record_refused(target)
        await mine.record_refused("127.0.0.1:4002")
        note_connected(conn)
        assert await mine.refusing_for(target) == 0.0
        assert await mine.refusing_for("127.0.0.1:4002") > 0  # another DC address
        set_process_budget(None)
        note_connected(conn)  # switched off: a no-op
    finally:
        set_process_budget(original)
