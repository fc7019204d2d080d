"""A pace's storage interface (pure logic, fake clocks): what one process exports, another adopts
and then runs on the same schedule, although their clocks read differently."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from telethon_guard import shared_pace
from telethon_guard.fakeclock import FakeClock
from telethon_guard.keys import pace_key
from telethon_guard.pacing import AdaptivePacer
from telethon_guard.shared_pace import SharedPaces

M = "messages.getHistory"


def _learned(clock: FakeClock, *, repeated: bool = False) -> AdaptivePacer:
    """A pacer that saw 10 calls in 5 s, then FLOOD_WAIT_3 (a hypothesis; and, ``repeated``,
    another after calls answered during the ramp: a held pace)."""
    pacer = AdaptivePacer(clock, relax=5.0, recover=2.0)
    for _ in range(10):
        pacer.on_success("a", M)
        clock.advance(0.5)
    assert pacer.on_flood("a", M, 3.0) is not None
    if repeated:
        clock.advance(3.2)
        for _ in range(3):
            pacer.on_success("a", M)
            clock.advance(0.05)
        assert pacer.on_flood("a", M, 2.0) is not None
        assert pacer.is_held("a", M)
    return pacer


@pytest.mark.parametrize("repeated", [False, True])
def test_adopted_pace_runs_on_the_publishers_schedule(repeated: bool) -> None:
    a_clock, b_clock = FakeClock(1000.0, auto_advance=False), FakeClock(52.5, auto_advance=False)
    a = _learned(a_clock, repeated=repeated)
    state = a.export("a", M)
    assert state is not None and state["ttl"] > 0
    state = json.loads(json.dumps(state))  # it crosses the wire as JSON
    b = AdaptivePacer(b_clock, relax=5.0, recover=2.0)
    assert b.window("a", M) is None
    assert b.adopt("a", M, state)
    assert b.is_held("a", M) == a.is_held("a", M) == repeated
    # the same window and the same changes, relative to each clock, until it is dropped
    for _ in range(200):
        wa, wb = a.window("a", M), b.window("a", M)
        assert (wa is None) == (wb is None)
        if wa is None:
            break
        assert wb is not None and wa[0][0] == wb[0][0]
        assert wa[0][1] == pytest.approx(wb[0][1], rel=1e-9)
        ca, cb = a.changes_at("a", M), b.changes_at("a", M)
        assert ca is not None and cb is not None
        assert ca - a_clock.now() == pytest.approx(cb - b_clock.now(), abs=1e-6)
        assert a.drain("a", M, 5) == pytest.approx(b.drain("a", M, 5), abs=1e-6)
        a_clock.advance(0.25)
        b_clock.advance(0.25)
    else:
        pytest.fail("the pace was never dropped")
    assert b.learned() == {} and a.learned() == {}


def test_a_newer_local_pace_is_not_replaced_by_an_older_record() -> None:
    clock = FakeClock(auto_advance=False)
    old = _learned(FakeClock(auto_advance=False)).export("a", M)
    assert old is not None
    b = _learned(clock)  # learned at the same relative time: ...
    clock.advance(0.5)  # ... and the record is now older than b's own flood by 0.5 s
    old["flood_at"] -= 0.5 + 1.0
    before = b.window("a", M)
    assert not b.adopt("a", M, old)
    assert b.window("a", M) == before


def test_no_pace_exports_nothing_and_malformed_state_raises() -> None:
    pacer = AdaptivePacer(FakeClock(auto_advance=False))
    assert pacer.export("a", M) is None
    with pytest.raises(KeyError):
        pacer.adopt("a", M, {"count": 3})
    with pytest.raises(ValueError):
        pacer.adopt("a", M, {"count": 0, "base": 1.0, "flood_at": 0.0})


def test_on_change_is_called_when_a_flood_sets_a_pace() -> None:
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock)
    seen: list[tuple[str, str]] = []
    pacer.on_change = lambda acct, method: seen.append((acct, method))
    assert pacer.on_flood("a", "other", 3.0) is None  # nothing learned (no calls): no change
    assert seen == []
    for _ in range(5):
        pacer.on_success("a", M)
        clock.advance(0.1)
    clock.advance(3.0)
    assert pacer.on_flood("a", M, 3.0) is not None
    assert seen == [("a", M)]


class _FlakyPaceStorage:
    """A pace storage whose server is up or down (``up``): stores records while up, answers
    ``False`` (served locally) while down; calls its recovery listeners when set up again."""

    def __init__(self) -> None:
        self.up = False
        self.records: dict[str, bytes] = {}
        self.listeners: list[Callable[[], None]] = []
        self.registrations = 0

    async def pace_publish(self, key: str, record: bytes, ttl: float) -> bool:
        if self.up:
            self.records[key] = record
        return self.up

    def on_recovery(self, listener: Callable[[], None]) -> None:
        self.registrations += 1
        self.listeners.append(listener)

    def recover(self) -> None:
        self.up = True
        listeners, self.listeners = self.listeners, []
        for listener in listeners:
            listener()


async def test_unpublished_paces_are_bounded_and_published_once_at_recovery(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_pace, "_MAX_UNPUBLISHED", 3)
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=30.0, recover=30.0)
    storage = _FlakyPaceStorage()
    share = SharedPaces(pacer, storage)
    methods = [f"m.n{i}" for i in range(5)]
    for _ in range(10):
        for m in methods:
            pacer.on_success("a", m)
        clock.advance(0.5)
    for m in methods:
        assert pacer.on_flood("a", m, 3.0) is not None
    await share.drain()
    assert share.published == 0 and storage.registrations == 1  # one listener per outage
    storage.recover()
    await share.drain()
    # the 3 most recent keys (the oldest 2 forgotten: their paces stay local), once each
    assert sorted(storage.records) == [pace_key("a", m) for m in methods[2:]]
    assert (share.republished, share.published) == (3, 3)
    storage.recover()  # nothing left to publish
    await share.drain()
    assert (share.republished, share.published) == (3, 3)
