"""File parts in flight per (account, method) (issue 15 item 4), on a fake clock.

The bound caps the parts in flight across every sender; a part queued for its slot while a
flood wait was recorded never goes out into the block; cancellation gives slots back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from guardfakes import Script, bounded, make_call, make_pipeline, send_call
from telethon import errors as te

from telethon_guard.config import GuardConfig
from telethon_guard.errors import GuardConfigError
from telethon_guard.keys import chat_flood_key


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
