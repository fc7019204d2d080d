"""The network budget (telethon_guard.network_budget) and the ledger/limiter checks."""

from __future__ import annotations

import asyncio

import pytest
from guardfakes import Script, bounded, make_call, make_pipeline
from telethon import errors as te

from telethon_guard.errors import DeadlineExceeded, FloodWaitBlocked
from telethon_guard.events import DeadlineExceededEvent, FloodWaitStarted
from telethon_guard.network_budget import network_budget
from telethon_guard.storage import CLOSED


async def never() -> str:
    await asyncio.Event().wait()
    return "never"


def test_network_budget_is_a_share_of_the_deadline_capped() -> None:
    assert network_budget(5.0, None) == pytest.approx(0.5)
    assert network_budget(60.0, None) == 1.0  # capped at NETWORK_BUDGET_MAX
    assert network_budget(60.0, 3.0) == 3.0  # or at the attempt timeout
    assert network_budget(60.0, 0.2) == 0.2
    assert network_budget(0.0, None) == 0.0


async def test_limiter_slot_leaving_too_little_time_fails_at_once_without_breaker() -> None:
    # The slot is free 9.5 s from now; the deadline (10 s) would leave the attempt 0.5 s,
    # less than its budget min(1 s, 10 % of 10 s) = 1 s.
    pipe, clock, rec = make_pipeline(deadline=10, rate_limits=((1, 9.5),), rate_margin=0.0,
                                     breaker_failure_threshold=1)
    await pipe.invoke(make_call(), Script(clock))
    t0 = clock.now()
    send = Script(clock, default=never)
    with pytest.raises(DeadlineExceeded):
        await bounded(pipe.invoke(make_call(), send))
    assert send.count == 0 and clock.now() == t0  # nothing waited, nothing sent
    assert rec.of(DeadlineExceededEvent)[-1].stage == "limiter"
    state = await pipe.breaker.state("acct:a1/dc:2")
    assert state.failures == 0 and state.state == CLOSED
    # The breaker (threshold 1) stayed closed: the next call goes through once the slot is free.
    clock.advance(9.5)
    assert await bounded(pipe.invoke(make_call(), Script(clock))) == "ok"


async def test_limiter_slot_leaving_the_budget_waits_and_sends() -> None:
    pipe, clock, _ = make_pipeline(deadline=10, rate_limits=((1, 8.5),), rate_margin=0.0)
    await pipe.invoke(make_call(), Script(clock))
    t0 = clock.now()
    send = Script(clock)
    assert await bounded(pipe.invoke(make_call(), send)) == "ok"
    assert send.times == [t0 + 8.5]


async def test_flood_wait_leaving_too_little_time_sends_nothing_and_counts_nothing() -> None:
    pipe, clock, rec = make_pipeline(deadline=10, max_flood_wait=60,
                                     breaker_failure_threshold=1)
    await pipe.ledger.record_block("acct:a1/method:messages.getHistory", 9.5)
    t0 = clock.now()
    send = Script(clock, default=never)
    # 9.5 s fits the 10 s deadline but not with the attempt's network budget (1 s): waiting
    # could only end in DeadlineExceeded at the deadline (it did, after 9.5 s: a new-user
    # trial). Refused at once, as a FLOOD_WAIT the deadline cannot take (README).
    with pytest.raises(FloodWaitBlocked) as info:
        await bounded(pipe.invoke(make_call(), send))
    assert send.count == 0 and clock.now() == t0
    assert info.value.seconds == 10 and not info.value.from_server
    assert not rec.of(DeadlineExceededEvent)
    assert (await pipe.breaker.state("acct:a1/dc:2")).failures == 0


async def test_deadline_timeout_with_the_budget_still_counts_for_the_breaker() -> None:
    pipe, clock, _ = make_pipeline(deadline=10, rate_limits=((1, 5.0),), rate_margin=0.0)
    await pipe.invoke(make_call(), Script(clock))
    send = Script(clock, default=never)
    with pytest.raises(DeadlineExceeded):
        await bounded(pipe.invoke(make_call(), send))
    assert send.count == 1  # waited 5 s, then 5 s of network: a real timeout
    assert (await pipe.breaker.state("acct:a1/dc:2")).failures == 1


async def test_ledger_blocks_only_the_calls_of_the_blocked_scope() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=60)
    t0 = clock.now()
    send = Script(clock)
    await pipe.ledger.record_block("acct:a1/method:other.method", 5)
    assert await bounded(pipe.invoke(make_call(), send)) == "ok"  # another scope: no wait
    await pipe.ledger.record_block("acct:a1/method:messages.getHistory", 5)
    assert await bounded(pipe.invoke(make_call(), send)) == "ok"  # this call's scope: waits
    assert await bounded(pipe.invoke(make_call(), send)) == "ok"  # block over: no wait
    assert send.times == [t0, t0 + 5, t0 + 5]


async def test_limiter_consumes_a_free_slot_and_a_queued_call_keeps_one_slot() -> None:
    pipe, clock, _ = make_pipeline(rate_limits=((2, 1.0),), rate_margin=0.0)
    t0 = clock.now()
    send = Script(clock)
    for _ in range(3):
        assert await bounded(pipe.invoke(make_call(), send)) == "ok"
    assert send.times == [t0, t0, t0 + 1.0]
    # the queued call holds exactly one slot (the t0 ones left the 1 s window)
    assert pipe.storage.slots("acct:a1") == [t0 + 1.0]  # type: ignore[attr-defined]
    unlimited, uclock, _ = make_pipeline()
    assert await bounded(unlimited.invoke(make_call(), Script(uclock))) == "ok"


async def test_server_flood_wait_on_the_fast_path_is_recorded_waited_and_retried() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=60)
    t0 = clock.now()
    send = Script(clock, [te.FloodWaitError(None, capture=3)])
    assert await bounded(pipe.invoke(make_call(), send)) == "ok"
    assert send.times == [t0, t0 + 3]
    assert [e.from_server for e in rec.of(FloodWaitStarted)] == [True]


async def test_backoff_leaving_too_little_time_ends_with_the_real_error() -> None:
    for seed in range(1, 21):
        pipe, clock, _ = make_pipeline(deadline=3.0, retry_max_attempts=50,
                                       retry_base_delay=0.5, retry_max_delay=30.0,
                                       breaker_failure_threshold=100, seed=seed)
        send = Script(clock, default=te.RpcCallFailError(None))
        t0 = clock.now()
        with pytest.raises(te.RpcCallFailError):  # never DeadlineExceeded after a backoff
            await bounded(pipe.invoke(make_call(), send))
        # Every attempt had at least its network budget, 10 % of 3 s.
        assert send.times and max(send.times) <= t0 + 3.0 - 0.3


async def test_server_flood_wait_just_under_the_deadline_is_refused_at_once() -> None:
    # FLOOD_WAIT_5 with a 5.3 s deadline: waiting would leave 0.3 s for the retry, under the
    # attempt's network budget (0.53 s): FloodWaitBlocked at once (the README's
    # `except FloodWaitBlocked` catches it), not DeadlineExceeded after 5 s.

    pipe, clock, _ = make_pipeline(deadline=5.3, max_flood_wait=60)
    t0 = clock.now()
    send = Script(clock, [te.FloodWaitError(None, 5)])
    with pytest.raises(FloodWaitBlocked) as info:
        await bounded(pipe.invoke(make_call(), send))
    assert send.count == 1 and clock.now() == t0
    assert info.value.seconds == 5 and info.value.from_server
