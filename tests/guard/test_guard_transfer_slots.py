"""File parts in flight per (account, method) (issue 15 item 4), on a fake clock.

The bound caps the parts in flight across every sender; a part queued for its slot while a
flood wait was recorded never goes out into the block; cancellation gives slots back.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from guardfakes import Script, bounded, make_call, make_pipeline, send_call
from telethon import errors as te

from telethon_guard.config import GuardConfig
from telethon_guard.errors import FloodWaitBlocked, GuardConfigError
from telethon_guard.keys import chat_flood_key
from telethon_guard.transfer_slots import IDLE_RESET


class Parts:
    """A fake send of file parts: each takes ``latency`` s on the fake clock; counts the parts
    in flight (the most at once) and the send times. ``floods``: outcomes for the first sends."""

    def __init__(self, clock: Any, latency: float = 1.0, floods: list[Any] | None = None):
        self.clock = clock
        self.latency = latency
        self.now = 0
        self.most = 0
        self.times: list[float] = []
        self.floods = list(floods or [])

    async def __call__(self) -> str:
        self.times.append(self.clock.now())
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await self.clock.sleep(self.latency)  # the answer comes one latency later
        finally:
            self.now -= 1
        if self.floods:
            raise self.floods.pop(0)
        return "part"


def part_call(method: str = "upload.getFile", account: str = "a1", dc_id: int = 2) -> Any:
    return make_call(method, account=account, dc_id=dc_id, transfer=True)


async def test_parts_in_flight_are_bounded_per_account_and_method_across_dcs() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=3)
    parts = Parts(clock)
    t0 = clock.now()
    calls = [pipe.invoke(part_call(dc_id=2 + i % 2), parts) for i in range(10)]  # two DCs
    assert await bounded(asyncio.gather(*calls)) == ["part"] * 10
    assert parts.most == 3
    assert sorted(parts.times)[:3] == [t0] * 3 and max(parts.times) == t0 + 3
    assert pipe.transfers.in_flight("a1", "upload.getFile") == 0
    # Another account and another method have their own slots; other calls are not bounded.
    other = Parts(clock)
    more = [pipe.invoke(part_call(account="a2"), other) for _ in range(3)]
    more += [pipe.invoke(part_call("upload.saveFilePart"), other) for _ in range(3)]
    more += [pipe.invoke(make_call("messages.getHistory"), other) for _ in range(4)]
    await bounded(asyncio.gather(*more))
    assert other.most == 10


async def test_unbounded_when_switched_off() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=None)
    parts = Parts(clock)
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), parts) for _ in range(20))))
    assert parts.most == 20


async def test_unbounded_in_observe_only_mode() -> None:
    pipe, clock, _ = make_pipeline(observe_only=True)  # transfer_concurrency 16, start 4
    parts = Parts(clock)
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), parts) for _ in range(20))))
    assert parts.most == 20 and pipe.transfers.window("a1", "upload.getFile") is None


async def test_a_part_queued_while_a_flood_is_recorded_waits_it_out_and_draws_no_flood() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=1, max_flood_wait=10)
    parts = Parts(clock, latency=0.1, floods=[te.FloodWaitError(None, 5)])
    t0 = clock.now()
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), parts) for _ in range(4))))
    # The 3 others queued for the slot while the first part was in flight; its FLOOD_WAIT_5
    # (answered at t0 + 0.1) was recorded before they got the slot: none went out before
    # t0 + 5.1, so one flood was drawn.
    assert parts.times[0] == t0 and len(parts.times) == 5
    assert all(t >= t0 + 5.1 for t in parts.times[1:]), parts.times


async def test_cancelled_queued_and_running_parts_give_their_slots_back() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=2)
    parts = Parts(clock, latency=3)
    tasks = [asyncio.create_task(pipe.invoke(part_call(), parts)) for _ in range(5)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    tasks[0].cancel()  # running
    tasks[3].cancel()  # queued
    done = await bounded(asyncio.gather(*tasks, return_exceptions=True))
    assert [isinstance(d, asyncio.CancelledError) for d in done] == [
        True, False, False, True, False]
    assert pipe.transfers.in_flight("a1", "upload.getFile") == 0
    assert parts.most == 2


async def test_a_write_queued_in_the_limiter_never_goes_into_its_chats_flood() -> None:
    pipe, clock, _ = make_pipeline(peer_limits_group=((1, 2.0),), max_flood_wait=60)
    first = Script(clock)
    t0 = clock.now()
    await bounded(pipe.invoke(send_call(-5, random_id=1), first))
    queued = Script(clock)
    task = asyncio.create_task(pipe.invoke(send_call(-5, random_id=2), queued))
    for _ in range(5):  # let it pass the ledger (nothing blocked yet) into the limiter's wait
        await asyncio.sleep(0)
    assert not queued.times and not task.done()
    clock.advance(1.0)  # queued for its slot (t0 + 2.05) when the chat's flood is recorded
    await pipe.ledger.record_block(chat_flood_key("a1", "peer:-5"), 10)
    await bounded(task)
    assert queued.times == [t0 + 11]


@pytest.mark.parametrize("value", [0, -1, 2.5, "16", True])
def test_nonsensical_transfer_concurrency_is_refused(value: object) -> None:
    with pytest.raises(GuardConfigError) as e:
        GuardConfig(transfer_concurrency=value)  # type: ignore[arg-type]
    assert "transfer_concurrency" in str(e.value)
    assert GuardConfig(transfer_concurrency=None).transfer_concurrency is None


# ---- the AIMD window: opens small, grows per second while full, halves on a flood -----------


def _per_instant(times: list[float], t0: float) -> dict[float, int]:
    """Parts sent at each instant (seconds after ``t0``, rounded to the microsecond)."""
    return dict(sorted(Counter(round(t - t0, 6) for t in times).items()))


async def test_the_window_opens_at_the_start_parts_and_doubles_per_full_second() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=16)  # transfer_start_parts: 4
    assert pipe.transfers.window("a1", "upload.getFile") == 4
    parts = Parts(clock, latency=0.25)
    t0 = clock.now()
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), parts) for _ in range(40))))
    # 4 in flight through the first second (16 parts), then 8 once that full second ended.
    assert _per_instant(parts.times, t0) == {
        0.0: 4, 0.25: 4, 0.5: 4, 0.75: 4, 1.0: 8, 1.25: 8, 1.5: 8}
    assert pipe.transfers.window("a1", "upload.getFile") == 8
    # It doubles again after the next full second, and stops at transfer_concurrency.
    more = Parts(clock, latency=0.25)
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), more) for _ in range(100))))
    assert more.most == 16 and pipe.transfers.window("a1", "upload.getFile") == 16


async def _grown_to(pipe: Any, clock: Any, size: int) -> None:
    """Run parts until the window of a1 / upload.getFile is ``size`` (8 or 16)."""
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), Parts(clock, latency=0.25))
                                   for _ in range(40 if size == 8 else 140))))
    assert pipe.transfers.window("a1", "upload.getFile") == size


async def test_a_flood_halves_the_window_once_and_it_grows_by_one_part_per_second() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=16, max_flood_wait=10,
                                   adaptive_pacing=False)
    await _grown_to(pipe, clock, 16)
    parts = Parts(clock, latency=0.1, floods=[te.FloodWaitError(None, 2)] * 16)
    t0 = clock.now()
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), parts) for _ in range(40))))
    # The 16 parts in flight are refused: one flood event, halved once (16 -> 8, not 16 -> 4).
    # The ledger held every part until t0 + 2.1; then 8 at a time.
    assert _per_instant(parts.times, t0) == {
        0.0: 16, 2.1: 8, 2.2: 8, 2.3: 8, 2.4: 8, 2.5: 8}
    assert pipe.transfers.window("a1", "upload.getFile") == 8
    # After a flood it grows by one part per full second (additive increase), not doubling:
    # the round after the flood ends at t0 + 3.1 (t1 + 0.5).
    more = Parts(clock, latency=0.4)
    t1 = clock.now()
    assert t1 == pytest.approx(t0 + 2.6)
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), more) for _ in range(30))))
    assert _per_instant(more.times, t1) == {0.0: 8, 0.4: 8, 0.8: 9, 1.2: 5}
    assert pipe.transfers.window("a1", "upload.getFile") == 9


async def test_the_window_never_halves_below_the_start_window() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=16, max_flood_wait=10)
    parts = Parts(clock, latency=0.1, floods=[te.FloodWaitError(None, 1)] * 4)
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), parts) for _ in range(12))))
    assert parts.most == 4 and pipe.transfers.window("a1", "upload.getFile") == 4


async def test_local_flood_refusals_do_not_halve_the_window() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=16, max_flood_wait=10)
    await _grown_to(pipe, clock, 8)
    local = FloodWaitBlocked(None, 5, method="upload.getFile",
                             scope="acct:a1/method:upload.getFile", from_server=False)
    with pytest.raises(FloodWaitBlocked):
        await bounded(pipe.invoke(part_call(), Parts(clock, latency=0.1, floods=[local])))
    assert pipe.transfers.window("a1", "upload.getFile") == 8
    # The same from the server halves it.
    server = te.FloodWaitError(None, 50)
    with pytest.raises(te.FloodWaitError):
        await bounded(pipe.invoke(part_call(), Parts(clock, latency=0.1, floods=[server])))
    assert pipe.transfers.window("a1", "upload.getFile") == 4


async def test_a_premium_flood_halves_the_window_too() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=16, max_flood_wait=10)
    await _grown_to(pipe, clock, 8)
    premium = te.FloodPremiumWaitError(None, 50)
    with pytest.raises(te.FloodPremiumWaitError):
        await bounded(pipe.invoke(part_call(), Parts(clock, latency=0.1, floods=[premium])))
    assert pipe.transfers.window("a1", "upload.getFile") == 4


async def test_an_idle_window_opens_afresh_after_15_seconds() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=16)
    parts = Parts(clock, latency=0.25)
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), parts) for _ in range(40))))
    assert pipe.transfers.window("a1", "upload.getFile") == 8
    clock.advance(14.0)
    await bounded(pipe.invoke(part_call(), parts))
    # 14 s idle: kept (and grown: the round in which it was last full had no flood)
    assert pipe.transfers.window("a1", "upload.getFile") == 16
    clock.advance(IDLE_RESET)
    await bounded(pipe.invoke(part_call(), parts))
    assert pipe.transfers.window("a1", "upload.getFile") == 4  # 15 s idle: opens afresh


async def test_without_slow_start_the_window_is_the_fixed_bound() -> None:
    pipe, clock, _ = make_pipeline(transfer_concurrency=6, transfer_start_parts=None)
    parts = Parts(clock, latency=0.25)
    await bounded(asyncio.gather(*(pipe.invoke(part_call(), parts) for _ in range(12))))
    assert parts.most == 6 and pipe.transfers.window("a1", "upload.getFile") == 6
    # A start above the bound is the bound.
    pipe2, _, _ = make_pipeline(transfer_concurrency=2, transfer_start_parts=4)
    assert pipe2.transfers.window("a1", "upload.getFile") == 2


@pytest.mark.parametrize("value", [0, -1, 2.5, "4", True])
def test_nonsensical_transfer_start_parts_is_refused(value: object) -> None:
    with pytest.raises(GuardConfigError) as e:
        GuardConfig(transfer_start_parts=value)  # type: ignore[arg-type]
    assert "transfer_start_parts" in str(e.value)
    assert GuardConfig(transfer_start_parts=None).transfer_start_parts is None
