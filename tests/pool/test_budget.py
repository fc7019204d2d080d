"""ConnectionBudget: pure logic on a fake clock (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from telethon_guard.budget import (
    DEFAULT_STORM_WINDOWS,
    ConnectionBudget,
    connection_target,
    note_refused,
    process_budget,
    set_process_budget,
    take_connection_slot,
)
from telethon_guard.clock import FakeClock
from telethon_guard.errors import GuardConfigError
from telethon_guard.storage.memory import MemoryStorage


async def grant_times(budget: ConnectionBudget, clock: FakeClock, names: list[str],
                      target: str = "dc1") -> list[tuple[str, float]]:
    """Every name asks for a slot at the same instant; (name, grant time) in grant order."""
    start = clock.now()
    out: list[tuple[str, float]] = []

    async def one(name: str) -> None:
        await budget.acquire(target)
        out.append((name, round(clock.now() - start, 6)))

    await asyncio.wait_for(asyncio.gather(*(one(n) for n in names)), 5)
    return out


async def test_slots_follow_every_window_first_come_first_served() -> None:
    clock = FakeClock()
    budget = ConnectionBudget(((3, 1.0), (5, 10.0)), storm_windows=(), clock=clock, margin=0.0)
    names = [f"c{i}" for i in range(7)]
    out = await grant_times(budget, clock, names)
    # 3 at once, 2 more after 1 s (5 per 10 s), the rest after 10 s: in the order asked.
    assert out == [("c0", 0.0), ("c1", 0.0), ("c2", 0.0), ("c3", 1.0), ("c4", 1.0),
                   ("c5", 10.0), ("c6", 10.0)]
    assert budget.granted == {"dc1": 7}
    assert budget.max_wait == pytest.approx(10.0)
    assert budget.waiting == 0


async def test_targets_have_separate_budgets() -> None:
    clock = FakeClock()
    budget = ConnectionBudget(((1, 1.0),), storm_windows=(), clock=clock, margin=0.0)
    assert await budget.acquire("a:1") == 0.0
    assert await budget.acquire("b:2") == 0.0  # another DC: not delayed by a:1
    assert await budget.acquire("a:1") == pytest.approx(1.0)


async def test_a_refusal_switches_the_target_to_the_storm_pace_for_storm_seconds() -> None:
    clock = FakeClock()
    assert ConnectionBudget().storm_windows == DEFAULT_STORM_WINDOWS == ((1, 1.0),)
    tdlib = ((1, 1.0), (2, 4.0), (3, 8.0))  # TDLib's per-client ConnectionCreator schedule
    budget = ConnectionBudget(((10, 1.0),), storm_windows=tdlib, storm_seconds=10.0,
                              clock=clock, margin=0.0)
    await budget.record_refused("dc1")
    assert await budget.refusing_for("dc1") == pytest.approx(10.0)
    assert await budget.refusing_for("dc2") == 0.0
    out = await grant_times(budget, clock, ["a", "b", "c"])
    # TDLib's schedule for the whole process: 1 per 1 s, 2 per 4 s, 3 per 8 s.
    assert out == [("a", 0.0), ("b", 1.0), ("c", 4.0)]
    clock.advance(10.0)  # the refusal mark expired: the normal windows only
    assert await budget.refusing_for("dc1") == 0.0
    out = await grant_times(budget, clock, ["d", "e", "f", "g"])
    assert [t for _, t in out] == [0.0, 0.0, 0.0, 0.0]
    assert budget.refusals == {"dc1": 1}


async def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    clock = FakeClock(auto_advance=False)
    budget = ConnectionBudget(((1, 1.0),), storm_windows=(), clock=clock, margin=0.0)
    await budget.acquire("dc1")
    waiter = asyncio.ensure_future(budget.acquire("dc1"))
    await asyncio.sleep(0)
    assert budget.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.waiting == 0
    clock.advance(1.0)
    # The cancelled caller's slot (t+1 s) is free again: the next caller gets it at once.
    assert await budget.acquire("dc1") == 0.0
    assert budget.granted == {"dc1": 2}


async def test_budgets_on_one_storage_share_the_slots() -> None:
    # Two processes on one shared storage (what RedisStorage gives) draw from one budget.
    clock = FakeClock()
    storage = MemoryStorage(clock)
    first = ConnectionBudget(((2, 1.0),), storage=storage, clock=clock, margin=0.0)
    second = ConnectionBudget(((2, 1.0),), storage=storage, clock=clock, margin=0.0)
    assert await first.acquire("dc1") == 0.0
    assert await second.acquire("dc1") == 0.0
    assert await first.acquire("dc1") == pytest.approx(1.0)
    await second.record_refused("dc1")
    assert await first.refusing_for("dc1") > 0  # the refusing mark is shared too


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"windows": ()}, "windows"),
    ({"windows": ((0, 1.0),)}, "windows"),
    ({"windows": ((1, -1.0),)}, "windows"),
    ({"windows": "fast"}, "windows"),
    ({"storm_windows": ((1, 0.0),)}, "storm_windows"),
    ({"storm_seconds": -1}, "storm_seconds"),
    ({"storm_seconds": float("nan")}, "storm_seconds"),
    ({"storm_sources": 0}, "storm_sources"),
    ({"storage": object()}, "storage"),
    ({"clock": object()}, "clock"),
    ({"prefix": ""}, "prefix"),
])
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(GuardConfigError) as info:
        ConnectionBudget(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_process_budget_can_be_replaced_and_switched_off() -> None:
    original = set_process_budget(None)
    try:
        assert process_budget() is None
        mine = ConnectionBudget(((1, 1.0),), margin=0.0)
        assert set_process_budget(mine) is None
        assert process_budget() is mine
        with pytest.raises(GuardConfigError):
            set_process_budget("fast")  # type: ignore[arg-type]
    finally:
        set_process_budget(original)
    if original is not None:
        assert process_budget() is original


class _Conn:
    """What the hooks read of a Telethon Connection: its DC address."""

    def __init__(self, ip: str, port: int) -> None:
        self._ip = ip
        self._port = port
        self._dc_id = 2


async def test_sender_hooks_use_the_process_budget_per_dc_address() -> None:
    clock = FakeClock()
    mine = ConnectionBudget(((1, 1.0),), storm_windows=((1, 5.0),), storm_seconds=10.0,
                            clock=clock, margin=0.0)
    original = set_process_budget(mine)
    try:
        a, b = _Conn("127.0.0.1", 4001), _Conn("127.0.0.1", 4002)
        assert connection_target(a) == "127.0.0.1:4001"
        assert connection_target(object()) == "dc:None"
        assert await take_connection_slot(a) == 0.0
        assert await take_connection_slot(b) == 0.0  # another DC address
        assert await take_connection_slot(a) == pytest.approx(1.0)
        note_refused(a)  # synchronous: a -429 seen in the sender's receive loop
        assert mine.refusals == {"127.0.0.1:4001": 1}
        # One client refused alone: its own pacer paces it, the process is not in storm mode.
        assert await mine.refusing_for("127.0.0.1:4001") == 0.0
        note_refused(a)
        assert await mine.refusing_for("127.0.0.1:4001") == 0.0
        other = _Conn("127.0.0.1", 4001)  # a second client to the same DC refused too
        note_refused(other)
        assert mine.refusals == {"127.0.0.1:4001": 3}
        assert await mine.refusing_for("127.0.0.1:4001") == pytest.approx(10.0)
        assert await take_connection_slot(a) == pytest.approx(5.0)  # storm window now
        set_process_budget(None)
        assert await take_connection_slot(a) == 0.0  # switched off
        note_refused(a)
    finally:
        set_process_budget(original)


async def test_storm_mode_needs_refusals_from_several_sources_within_storm_seconds() -> None:
    clock = FakeClock()
    budget = ConnectionBudget(((10, 1.0),), storm_seconds=5.0, storm_sources=3, clock=clock,
                              margin=0.0)
    for _ in range(4):
        await budget.record_refused("dc1", source="c1")  # the same client, again and again
    await budget.record_refused("dc1", source="c2")
    assert await budget.refusing_for("dc1") == 0.0
    clock.advance(6.0)  # c1 and c2's refusals are older than storm_seconds now
    await budget.record_refused("dc1", source="c3")
    await budget.record_refused("dc1", source="c4")
    assert await budget.refusing_for("dc1") == 0.0
    await budget.record_refused("dc1", source="c5")  # 3 sources within 5 s
    assert await budget.refusing_for("dc1") == pytest.approx(5.0)


async def test_a_queue_built_during_a_storm_drains_at_the_normal_pace_after_it() -> None:
    clock = FakeClock()
    budget = ConnectionBudget(((10, 1.0),), storm_windows=((1, 1.0),), storm_seconds=2.0,
                              clock=clock, margin=0.0)
    await budget.record_refused("dc1")  # refusing for 2 s: 1 per second
    out = await grant_times(budget, clock, [f"c{i}" for i in range(8)])
    times = [t for _, t in out]
    # 1 per second while refusing (0, 1 s), then the rest right after the mark expired
    # (2 s), not one per second up to 7 s as reserved at the start.
    assert times[:2] == [0.0, 1.0], times
    assert all(t <= 2.0 + 1e-6 for t in times[2:]), times
    assert len(out) == 8 and budget.waiting == 0


async def test_the_default_margin_spaces_slots_by_the_period_plus_the_margin() -> None:
    # A slot is granted when the connection starts; the server counts it a handshake later:
    # slots one window apart must not arrive inside one window (18 connections in one second
    # were seen under 10 per 1 s without it), so every period gets DEFAULT_BUDGET_MARGIN.
    from telethon_guard.budget import DEFAULT_BUDGET_MARGIN

    clock = FakeClock()
    budget = ConnectionBudget(((2, 1.0),), storm_windows=(), clock=clock)
    assert budget.windows == ((2, 1.0),)  # as configured
    out = await grant_times(budget, clock, ["c0", "c1", "c2", "c3"])
    assert DEFAULT_BUDGET_MARGIN == 0.05
    assert out == [("c0", 0.0), ("c1", 0.0), ("c2", 1.05), ("c3", 1.05)]
    with pytest.raises(GuardConfigError, match="margin"):
        ConnectionBudget(margin=-0.1)
