from __future__ import annotations

import asyncio
from collections import deque

import pytest
from guardfakes import Script, bounded, make_call, make_pipeline, send_call
from telethon import errors as te

from telethon_guard.classify import FloodScope
from telethon_guard.errors import FloodPremiumBlocked, FloodWaitBlocked, SlowModeBlocked
from telethon_guard.events import (
    FloodBlocked,
    FloodWaitEnded,
    FloodWaitStarted,
    ObservedDelay,
    PaceLearned,
)
from telethon_guard.flood import scope_key, scopes_of

HELD = "upload.getFile"
"""A file-part method: a burst's pace on it holds on the pace_relax schedule at once (other
methods' burst paces go on the probe schedule), the held pace the tests below exercise."""


async def test_flood_wait_zero_four_times_then_ok() -> None:
    pipe, clock, _ = make_pipeline()
    send = Script(clock, [te.FloodWaitError(None, 0)] * 4, default="done")
    assert await bounded(pipe.invoke(make_call(), send)) == "done"
    assert send.count == 5
    assert all(g >= 1.0 for g in send.gaps())


async def test_flood_wait_120_with_max_60_raises_at_once_keeping_type() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=60)
    send = Script(clock, [te.FloodWaitError(None, 120)])
    t0 = clock.now()
    with pytest.raises(te.FloodWaitError) as info:
        await bounded(pipe.invoke(make_call(), send))
    err = info.value
    assert isinstance(err, FloodWaitBlocked)
    assert err.seconds == 120 and err.from_server and err.retry_after == pytest.approx(120)
    assert isinstance(err.__cause__, te.FloodWaitError)
    assert clock.now() == t0 and send.count == 1
    assert rec.of(FloodBlocked)[0].from_server is True


async def test_resolve_username_blocked_48038_fails_locally_and_other_methods_flow() -> None:
    pipe, clock, _ = make_pipeline()
    resolve = Script(clock, [te.FloodWaitError(None, 48038)])
    with pytest.raises(FloodWaitBlocked) as first:
        await pipe.invoke(make_call("contacts.resolveUsername"), resolve)
    assert first.value.seconds == 48038 and first.value.from_server
    for _ in range(49):
        clock.advance(1.0)
        with pytest.raises(te.FloodWaitError) as info:
            await pipe.invoke(make_call("contacts.resolveUsername"), resolve)
        assert info.value.from_server is False
        assert 47900 < info.value.seconds <= 48038
    assert resolve.count == 1  # the server saw exactly one call
    other = Script(clock)
    for _ in range(5):
        assert await pipe.invoke(make_call("messages.getHistory"), other) == "ok"
    assert other.count == 5
    # Other accounts are not blocked.
    assert await pipe.invoke(make_call("contacts.resolveUsername", account="a2"), other) == "ok"


async def test_waited_once_for_all() -> None:
    pipe, clock, rec = make_pipeline()
    first = Script(clock, [te.FloodWaitError(None, 30)])
    t0 = clock.now()
    # One call learns the wait (and waits itself, 30 <= max_flood_wait).
    sends = [Script(clock) for _ in range(10)]
    lead = asyncio.create_task(pipe.invoke(make_call("messages.getDialogs"), first))
    await asyncio.sleep(0)
    followers = [asyncio.create_task(pipe.invoke(make_call("messages.getDialogs"), s))
                 for s in sends]
    await bounded(asyncio.gather(lead, *followers))
    assert first.count == 2 and first.times[1] == t0 + 30
    # Every follower sent once, all at the same moment T: nobody hit the server before T.
    assert {s.times[0] for s in sends} == {t0 + 30}
    assert all(s.count == 1 for s in sends)
    starts = rec.of(FloodWaitStarted)
    assert len(starts) == 11
    assert len(rec.of(FloodWaitEnded)) == 11


async def test_flood_wait_22_on_every_call_ends_when_wait_cannot_fit_deadline() -> None:
    pipe, clock, _ = make_pipeline(deadline=60, flood_max_retries=10)
    send = Script(clock, default=te.FloodWaitError(None, 22))
    t0 = clock.now()
    with pytest.raises(FloodWaitBlocked) as info:
        await bounded(pipe.invoke(make_call("messages.getDialogs"), send))
    # Sends at 0, 22, 44; the third wait (until 66) cannot fit the 60 s deadline.
    assert send.times == [t0, t0 + 22, t0 + 44]
    assert clock.now() == t0 + 44
    assert info.value.seconds == 22 and info.value.from_server


async def test_local_block_beyond_deadline_raises_at_once() -> None:
    pipe, clock, _ = make_pipeline()
    await pipe.ledger.record_block("acct:a1/method:messages.getHistory", 30)
    send = Script(clock)
    t0 = clock.now()
    with pytest.raises(FloodWaitBlocked) as info:
        await pipe.invoke(make_call(deadline_at=t0 + 10), send)
    assert send.count == 0 and clock.now() == t0
    assert info.value.from_server is False and info.value.seconds == 30


async def test_flood_max_retries_bounds_a_server_loop() -> None:
    pipe, clock, _ = make_pipeline(flood_max_retries=2)
    send = Script(clock, default=te.FloodWaitError(None, 1))
    with pytest.raises(FloodWaitBlocked):
        await bounded(pipe.invoke(make_call(), send))
    assert send.count == 3


async def test_slow_mode_blocks_one_chat_only() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=10)
    a = Script(clock, [te.SlowModeWaitError(None, 60)])
    with pytest.raises(te.SlowModeWaitError) as info:
        await pipe.invoke(send_call(-100), a)
    assert isinstance(info.value, SlowModeBlocked) and info.value.from_server
    # Chats B and C go out at once; reading chat A is not a send.
    other = Script(clock)
    t0 = clock.now()
    await pipe.invoke(send_call(-200), other)
    await pipe.invoke(send_call(-300), other)
    await pipe.invoke(make_call("messages.getHistory", peer="peer:-100"), other)
    assert other.times == [t0, t0, t0]
    # A second send to A fails locally without touching the network.
    with pytest.raises(SlowModeBlocked) as again:
        await pipe.invoke(send_call(-100), a)
    assert a.count == 1 and again.value.from_server is False
    assert "peer:-100" not in again.value.scope  # peer ids redacted by default


async def test_slow_mode_that_fits_is_waited() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=60)
    a = Script(clock, [te.SlowModeWaitError(None, 20)])
    t0 = clock.now()
    assert await bounded(pipe.invoke(send_call(-100), a)) == "ok"
    assert a.times == [t0, t0 + 20]


async def test_premium_wait_scoped_to_transfers_of_one_dc() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=5)
    up = Script(clock, [te.FloodPremiumWaitError(None, 6)])
    with pytest.raises(FloodPremiumBlocked):
        await pipe.invoke(make_call("upload.saveBigFilePart", transfer=True), up)
    free = Script(clock)
    await pipe.invoke(make_call("upload.saveBigFilePart", transfer=True, dc_id=4), free)
    await pipe.invoke(make_call("messages.getHistory"), free)
    assert free.count == 2
    with pytest.raises(te.FloodPremiumWaitError):
        await pipe.invoke(make_call("upload.getFile", transfer=True), free)
    assert free.count == 2


async def test_premium_workers_share_one_pause() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=60)
    t0 = clock.now()
    hit = {"done": False}

    def part() -> str:
        if not hit["done"]:
            hit["done"] = True
            raise te.FloodPremiumWaitError(None, 6)
        return "ok"

    scripts = [Script(clock, default=part) for _ in range(4)]

    async def worker(s: Script) -> None:
        for _ in range(5):
            await pipe.invoke(make_call("upload.saveBigFilePart", transfer=True), s)

    await bounded(asyncio.gather(*(worker(s) for s in scripts)))
    total = sum(s.count for s in scripts)
    assert total == 21  # 20 parts + the one flooded attempt
    # After the flood no worker sent before T = t0 + 6.
    after = sorted(t for s in scripts for t in s.times if t > t0)
    assert after and min(after) == t0 + 6
    assert clock.now() == t0 + 6  # one shared pause, not four


async def test_per_request_flood_errors_raised_unchanged() -> None:
    pipe, clock, _ = make_pipeline()
    send = Script(clock, [te.FloodTestPhoneWaitError(None, 30)])
    with pytest.raises(te.FloodTestPhoneWaitError) as info:
        await pipe.invoke(make_call("auth.sendCode"), send)
    assert info.value.seconds == 30 and not isinstance(info.value, FloodWaitBlocked)
    again = Script(clock)
    await pipe.invoke(make_call("auth.sendCode"), again)  # nothing recorded
    assert again.count == 1


async def test_observe_only_does_not_block_locally() -> None:
    pipe, clock, rec = make_pipeline(observe_only=True)
    await pipe.ledger.record_block("acct:a1/method:messages.getHistory", 3600)
    send = Script(clock)
    assert await pipe.invoke(make_call(), send) == "ok"
    obs = rec.of(ObservedDelay)
    assert obs and obs[0].layer == "flood" and obs[0].would_block


def test_scopes_of_calls() -> None:
    assert scopes_of(make_call()) == [FloodScope.METHOD]
    assert scopes_of(send_call(-5)) == [FloodScope.METHOD, FloodScope.PEER, FloodScope.CHAT]
    assert scopes_of(make_call("upload.getFile", transfer=True))[-1] is FloodScope.TRANSFERS
    assert scope_key(send_call(-5), FloodScope.PEER) == "acct:a1/slowmode:peer:-5"
    assert scope_key(send_call(-5), FloodScope.CHAT) == "acct:a1/writes:peer:-5"


class SlidingServer:
    """A server limit of ``count`` calls per ``period`` s; answers FLOOD_WAIT with the seconds
    until the oldest call leaves the window (like Telegram's per-method limits)."""

    def __init__(self, clock: object, count: int, period: float) -> None:
        self.clock = clock
        self.count = count
        self.period = period
        self.calls: deque[float] = deque()
        self.floods = 0
        self.sent = 0

    def __call__(self) -> str:
        now = self.clock.now()  # type: ignore[attr-defined]
        self.sent += 1
        while self.calls and self.calls[0] <= now - self.period:
            self.calls.popleft()
        if len(self.calls) >= self.count:
            self.floods += 1
            raise te.FloodWaitError(None, int(self.calls[0] + self.period - now) + 1)
        self.calls.append(now)
        return "ok"


async def _loop(adaptive: bool) -> tuple[SlidingServer, list[int]]:
    pipe, clock, _ = make_pipeline(adaptive_pacing=adaptive, max_flood_wait=120)
    server = SlidingServer(clock, 30, 30.0)
    send = Script(clock, default=server)
    flood_at: list[int] = []
    for i in range(600):
        before = server.floods
        clock.advance(0.1)  # the loop's own pace: 10 calls/s when nothing stops it
        await pipe.invoke(make_call("messages.getHistory"), send)
        if server.floods > before:
            flood_at.append(i)
    return server, flood_at


async def test_adaptive_pacing_converges_on_unknown_limit() -> None:
    learned, flood_at = await bounded(_loop(True))
    plain, _ = await bounded(_loop(False))
    # Without pacing every window ends in a FLOOD_WAIT; with it they stop after learning.
    assert plain.floods >= 15
    assert learned.floods <= 6
    late = [i for i in flood_at if i >= 300]
    assert len(late) <= 1


async def test_pace_learned_event_and_window() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=120)
    ok = Script(clock)
    for _ in range(10):
        await pipe.invoke(make_call(HELD), ok)
        clock.advance(0.1)
    flood = Script(clock, [te.FloodWaitError(None, 7)])
    await bounded(pipe.invoke(make_call(HELD), flood))
    ev = rec.of(PaceLearned)[-1]
    # 10 calls answered over 1.0 s, then "wait 7 s": the window is (10, 1.0 + 7) ...
    assert ev.count == 10 and ev.period == pytest.approx(1.0 + 7, abs=0.01)
    assert pipe.ledger.pacer is not None
    # ... applied as evenly spaced calls, one per 0.8 s
    assert pipe.ledger.pacer.window("a1", HELD) == ((1, pytest.approx(0.8)),)
    assert pipe.ledger.pacer.max_wait("a1", HELD) == 7.0  # Telegram's X


async def test_no_pace_learned_without_history() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=120)
    await bounded(pipe.invoke(make_call(), Script(clock, [te.FloodWaitError(None, 30)])))
    assert rec.of(PaceLearned) == []


async def test_learned_pace_starts_with_its_history() -> None:
    """After learning, the pace already holds the calls it was learned from, so the first call
    after the wait is not followed by a burst."""
    pipe, clock, _ = make_pipeline(max_flood_wait=120)
    ok = Script(clock)
    for _ in range(5):
        await pipe.invoke(make_call(HELD), ok)
        clock.advance(1.0)
    t_flood = clock.now()
    await bounded(pipe.invoke(make_call(HELD), Script(clock, [te.FloodWaitError(None, 10)])))
    # Learned (5, 5 + 10) from calls at t_flood-5 .. t_flood-1: one call per 3 s, seeded with
    # the calls of the last 3 s; the retry went when the server's wait ended.
    assert clock.now() == t_flood + 10
    slots = pipe.storage.slots(f"acct:a1/pace:{HELD}")  # type: ignore[attr-defined]
    assert slots == pytest.approx([t_flood + 10])
    nxt = Script(clock)
    for _ in range(3):
        await bounded(pipe.invoke(make_call(HELD), nxt))
    assert nxt.times == pytest.approx([t_flood + 13, t_flood + 16, t_flood + 19])


async def test_flood_while_a_pace_holds_stretches_it_bounded() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=120)
    ok = Script(clock)
    for _ in range(4):
        await pipe.invoke(make_call(HELD), ok)
    await bounded(pipe.invoke(make_call(HELD), Script(clock, [te.FloodWaitError(None, 10)])))
    first = rec.of(PaceLearned)[-1]
    assert (first.count, first.period) == (4, pytest.approx(10.0))
    periods = [first.period]
    for _ in range(12):
        clock.advance(1.0)
        await bounded(pipe.invoke(make_call(HELD), Script(clock, [te.FloodWaitError(None, 1)])))
        periods.append(rec.of(PaceLearned)[-1].period)
    assert periods[1] == pytest.approx(first.period * 1.1, rel=0.01)  # multiplicative ...
    # ... and bounded: never beyond twice the widest window (span + X) the server showed
    assert max(periods) == pytest.approx(2 * 10.0, rel=0.01)


async def test_replies_to_calls_sent_before_the_wait_ended_teach_nothing() -> None:
    """Calls in flight when the first FLOOD_WAIT arrives get the same answer: one event, one
    lesson (the old design stretched the pace once per sibling, 1.5x each)."""
    pipe, clock, rec = make_pipeline(max_flood_wait=120)
    ok = Script(clock)
    for _ in range(10):
        await pipe.invoke(make_call(), ok)
        clock.advance(0.1)
    assert pipe.ledger.pacer is not None
    pacer = pipe.ledger.pacer
    assert pacer.on_flood("a1", "messages.getHistory", 2.0) is not None
    for _ in range(3):
        clock.advance(0.01)
        assert pacer.on_flood("a1", "messages.getHistory", 2.0) is None
    assert len(rec.of(PaceLearned)) == 1


async def test_pace_relaxes_by_time_and_is_dropped() -> None:
    """No FLOOD_WAIT for hold = max(pace_relax, 2 * period) s: the period halves every further
    hold, and the pace is gone at a quarter of it: recovery needs no successful call."""
    pipe, clock, rec = make_pipeline(max_flood_wait=120, pace_relax=5.0)
    pacer = pipe.ledger.pacer
    assert pacer is not None
    for _ in range(20):
        pacer.on_success("a1", HELD)
        clock.advance(0.01)
    # 20 answers from t0 to t0 + 0.19, FLOOD_WAIT_2 at t0 + 0.2: a burst under a second,
    # the window taken as whole seconds, 2, plus PACE_JITTER: (20, 2 + 0.05)
    base = (2 + 0.05) / 20
    assert pacer.on_flood("a1", HELD, 2.0) == ((1, pytest.approx(base)),)
    clock.advance(4.9)
    assert pacer.window("a1", HELD) == ((1, pytest.approx(base)),)  # held
    clock.advance(5.0 + 0.2)  # one hold into relaxing: half the period
    assert pacer.window("a1", HELD) == ((1, pytest.approx(base / 2, rel=0.1)),)
    assert pacer.learned()["a1/" + HELD][0] == 20
    clock.advance(5.0)
    assert pacer.window("a1", HELD) is None and pacer.learned() == {}
    assert rec.of(PaceLearned)[-1].count == 0  # "dropped" is reported


async def test_flood_on_a_relaxing_pace_restores_it_and_holds_longer() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=120, pace_relax=5.0)
    pacer = pipe.ledger.pacer
    assert pacer is not None
    for _ in range(20):
        pacer.on_success("a1", HELD)
        clock.advance(0.01)
    pacer.on_flood("a1", HELD, 2.0)
    learned = rec.of(PaceLearned)[-1].period
    clock.advance(7.0)  # relaxing
    for _ in range(20):
        pacer.on_success("a1", HELD)
        clock.advance(0.05)
    assert pacer.window("a1", HELD)[0][1] < learned / 20  # type: ignore[index]
    pacer.on_flood("a1", HELD, 1.0)
    assert rec.of(PaceLearned)[-1].period == pytest.approx(learned)  # the pace that held
    clock.advance(9.0)  # the hold doubled to 10 s: still the learned pace
    assert pacer.window("a1", HELD) == ((1, pytest.approx(learned / 20)),)


async def test_wait_from_a_learned_pace_that_cannot_fit_is_a_flood_error_at_once() -> None:
    """A pace learned from a server FLOOD_WAIT makes the next call wait; when that wait does
    not fit the deadline the caller gets the flood family (not DeadlineExceeded), at once,
    for that call only."""
    pipe, clock, rec = make_pipeline(max_flood_wait=60)
    ok = Script(clock)
    for _ in range(5):
        await pipe.invoke(make_call(HELD), ok)
        clock.advance(1.0)
    t_flood = clock.now()
    await bounded(pipe.invoke(make_call(HELD), Script(clock, [te.FloodWaitError(None, 10)])))
    # Learned (5, 15 s): one call per 3 s; the retry went at t_flood + 10.
    assert clock.now() == t_flood + 10
    slots = pipe.storage.slots(f"acct:a1/pace:{HELD}")  # type: ignore[attr-defined]
    send = Script(clock)
    t0 = clock.now()
    with pytest.raises(FloodWaitBlocked) as info:
        await bounded(pipe.invoke(make_call(HELD, deadline_at=t0 + 0.5), send))
    e = info.value
    wait = e.retry_after
    assert wait is not None and wait == pytest.approx(3.0, abs=0.05)
    assert e.from_server is False
    assert e.scope == scope_key(make_call(HELD), FloodScope.METHOD)
    assert send.count == 0 and clock.now() == t0  # no network call, nothing waited
    after = pipe.storage.slots(f"acct:a1/pace:{HELD}")  # type: ignore[attr-defined]
    assert max(after) == max(slots) <= t0  # the refused future slot was given back
    assert rec.of(FloodBlocked)[-1].from_server is False
    # with room in the deadline the next call waits for its pace slot and goes
    await bounded(pipe.invoke(make_call(HELD, deadline_at=t0 + 5.0), send))
    assert send.times == [pytest.approx(t0 + wait)]


async def test_calls_queued_in_the_limiter_when_a_flood_wait_arrives_do_not_send_into_it(
        ) -> None:
    """The ledger is checked before the limiter: a call already waiting for its slot when a
    FLOOD_WAIT is recorded checks the ledger again after its wait and waits out the block."""
    pipe, clock, _ = make_pipeline(max_flood_wait=60, rate_limits=((1, 1.0),), rate_margin=0.0)
    lead = Script(clock, [te.FloodWaitError(None, 10)])
    queued = Script(clock)
    t0 = clock.now()
    first = asyncio.create_task(pipe.invoke(make_call(), lead))
    await asyncio.sleep(0)
    second = asyncio.create_task(pipe.invoke(make_call(), queued))  # slot at t0 + 1
    await bounded(asyncio.gather(first, second))
    assert lead.times[0] == t0 and lead.times[1] >= t0 + 10
    assert queued.times[0] >= t0 + 10  # not at t0 + 1, inside the server's wait


async def test_answers_arriving_during_a_new_paces_wait_refine_it() -> None:
    """With latency, a FLOOD_WAIT can overtake the answers of calls the server accepted just
    before it (a backlog released after an outage): those answers, arriving during the wait,
    are evidence of the rate the server accepted, and the pace speeds up to it."""
    pipe, clock, rec = make_pipeline(max_flood_wait=120)
    pacer = pipe.ledger.pacer
    assert pacer is not None
    for _ in range(5):  # a few calls long ago (before an outage)
        pacer.on_success("a1", "m")
        clock.advance(0.1)
    clock.advance(8.0)
    pacer.on_flood("a1", "m", 2.0)
    first = rec.of(PaceLearned)[-1]
    assert first.count / first.period < 1.0  # the old calls alone: a slow estimate
    for _ in range(20):  # the accepted backlog's answers, during the 2 s wait
        clock.advance(0.01)
        pacer.on_success("a1", "m")
    last = rec.of(PaceLearned)[-1]
    assert (last.count, last.period) == (20, pytest.approx(2.0 + 0.2))
    clock.advance(2.0)  # after the wait, answers are ordinary again
    pacer.on_success("a1", "m")
    assert rec.of(PaceLearned)[-1] is last
