"""The reconnect pacer's windows count connection attempts from when they start, after the
wait for a slot of the process connection budget, not from the pacer turn before that wait
(fake clock; ``await_slot`` is the step between the two in the guarded sender).

Before the fix the turn was recorded when it was granted: a client that then waited 5 s for a
budget slot (a -429 storm paces the whole process at 1 per second) had its attempt counted
5 s early, so TDLib's windows let its next attempt go that much sooner after a real one.
"""

from __future__ import annotations

import asyncio

import pytest
from guardfakes import ZeroRandom

from telethon_guard._sender_reconnect import await_slot
from telethon_guard.fakeclock import FakeClock
from telethon_guard.reconnect import ReconnectPacer

T0 = 1000.0
SLOT_WAIT = 5.0


def _pacer(clock: FakeClock) -> ReconnectPacer:
    # one window of 1 connection per 10 s; a backoff far below it, so the window decides
    return ReconnectPacer(((1, 10.0),), backoff_base=0.5, backoff_cap=0.5, jitter=0.0,
                          clock=clock.now, sleep=clock.sleep, rng=ZeroRandom())


async def _slot_after(clock: FakeClock, seconds: float) -> float:
    await clock.sleep(seconds)
    return seconds


async def test_window_counts_from_the_connection_not_the_turn() -> None:
    clock = FakeClock(T0)
    pacer = _pacer(clock)
    turn = await pacer.take_turn()
    assert turn == T0
    await await_slot(asyncio.ensure_future(_slot_after(clock, SLOT_WAIT)), pacer, turn, None,
                     lambda: None)
    assert clock.now() == T0 + SLOT_WAIT  # the connection starts now
    pacer.record_failure()  # ... and is refused
    # the 1-per-10-s window runs from the connection at T0 + 5, not from the turn at T0
    assert pacer.next_turn_at() == pytest.approx(T0 + SLOT_WAIT + 10.0)
    assert await pacer.take_turn() == pytest.approx(T0 + SLOT_WAIT + 10.0)


async def test_a_slot_granted_at_once_changes_nothing() -> None:
    clock = FakeClock(T0)
    pacer = _pacer(clock)
    turn = await pacer.take_turn()
    assert turn is not None
    await await_slot(asyncio.ensure_future(_slot_after(clock, 0.0)), pacer, turn, None,
                     lambda: None)
    pacer.record_failure()
    assert pacer.next_turn_at() == pytest.approx(T0 + 10.0)
    assert pacer.attempts_total == 1


async def test_shared_pacer_still_hands_out_one_turn_per_window() -> None:
    """Two senders sharing one pacer: the second waits for the window after the first's turn
    even while the first is still waiting for its slot (the turn holds its place)."""
    clock = FakeClock(T0)
    pacer = _pacer(clock)
    first = await pacer.take_turn()
    second = asyncio.ensure_future(pacer.take_turn())
    await asyncio.sleep(0)
    assert not second.done()
    assert first is not None
    await await_slot(asyncio.ensure_future(_slot_after(clock, SLOT_WAIT)), pacer, first, None,
                     lambda: None)
    # the first attempt now counts from T0 + 5: the second turn comes 10 s after that
    assert await asyncio.wait_for(second, 60) == pytest.approx(T0 + SLOT_WAIT + 10.0)


async def test_give_up_runs_once_when_the_slot_is_late_and_the_wait_goes_on() -> None:
    pacer = ReconnectPacer(clock=asyncio.get_running_loop().time)
    turn = pacer.record_attempt()
    gave_up: list[float] = []
    slot = asyncio.ensure_future(asyncio.sleep(0.2, result=0.2))
    await asyncio.wait_for(
        await_slot(slot, pacer, turn, pacer.now() + 0.05, lambda: gave_up.append(pacer.now())),
        10)
    assert len(gave_up) == 1 and slot.done()


async def test_cancel_while_waiting_cancels_the_slot_and_records_no_start() -> None:
    clock = FakeClock(T0)
    pacer = _pacer(clock)
    turn = await pacer.take_turn()
    slot = asyncio.ensure_future(_slot_after(clock, SLOT_WAIT))
    waiter = asyncio.ensure_future(await_slot(slot, pacer, turn, None, lambda: None))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slot.cancelled()
    pacer.record_failure()
    assert pacer.next_turn_at() == pytest.approx(T0 + 10.0)  # still the turn's time
