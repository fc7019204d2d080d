from __future__ import annotations

import asyncio

import pytest
from guardfakes import Script, bounded, make_call, make_pipeline, start_hanging_call
from telethon import errors as te

from telethon_guard.errors import CircuitOpenError
from telethon_guard.events import BreakerStateChanged, ObservedDelay
from telethon_guard.storage import CLOSED, HALF_OPEN, OPEN

KEY = "acct:a1/dc:2"


def transitions(rec: object) -> list[tuple[str, str]]:
    return [(e.old, e.new) for e in rec.of(BreakerStateChanged)]  # type: ignore[attr-defined]


async def fail_n(pipe: object, clock: object, n: int, exc: Exception | None = None) -> None:
    for _ in range(n):
        with pytest.raises(Exception):  # noqa: B017
            await pipe.invoke(make_call(), Script(clock, [exc or te.RpcCallFailError(None)]))  # type: ignore[attr-defined]


async def test_opens_after_threshold_and_fails_fast_without_network() -> None:
    pipe, clock, rec = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=5,
                                     breaker_open_seconds=10)
    await fail_n(pipe, clock, 4)
    assert (await pipe.breaker.state(KEY)).state == CLOSED
    await fail_n(pipe, clock, 1)
    assert (await pipe.breaker.state(KEY)).state == OPEN
    send = Script(clock)
    t0 = clock.now()
    with pytest.raises(CircuitOpenError) as info:
        await pipe.invoke(make_call(), send)
    assert isinstance(info.value, ConnectionError)
    assert info.value.key == KEY and info.value.retry_after == pytest.approx(10)
    assert send.count == 0 and clock.now() == t0
    # Another DC of the same account is independent.
    assert await pipe.invoke(make_call(dc_id=4), send) == "ok"
    assert transitions(rec) == [(CLOSED, OPEN)]


@pytest.mark.parametrize("exc", [te.FloodWaitError(None, 3), te.PeerFloodError(None),
                                 te.BadRequestError(None, "X", 400),
                                 te.RandomIdDuplicateError(None)])
async def test_flood_and_4xx_never_open_it(exc: Exception) -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=2,
                                   max_flood_wait=0, flood_max_retries=0)
    await fail_n(pipe, clock, 6, exc)
    assert (await pipe.breaker.state(KEY)).state == CLOSED


async def test_success_resets_consecutive_failures() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=3)
    for _ in range(3):
        await fail_n(pipe, clock, 2)
        await pipe.invoke(make_call(), Script(clock))
    assert (await pipe.breaker.state(KEY)).state == CLOSED


async def test_transport_errors_and_timeouts_open_it() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=3)
    for exc in (ConnectionError(), te.TimedOutError(None, "Timeout", -503), TimeoutError()):
        await fail_n(pipe, clock, 1, exc)
    assert (await pipe.breaker.state(KEY)).state == OPEN


async def test_half_open_lets_exactly_one_probe_then_closes() -> None:
    pipe, clock, rec = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=1,
                                     breaker_open_seconds=5)
    await fail_n(pipe, clock, 1)
    clock.advance(5)
    gate = asyncio.Event()
    probe_send = Script(clock, default=gate.wait)
    probe = asyncio.create_task(pipe.invoke(make_call(), probe_send))
    await asyncio.sleep(0)
    assert probe_send.count == 1
    assert (await pipe.breaker.state(KEY)).state == HALF_OPEN
    others = Script(clock)
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            await pipe.invoke(make_call(), others)
    assert others.count == 0
    gate.set()
    await bounded(probe)
    assert (await pipe.breaker.state(KEY)).state == CLOSED
    assert await pipe.invoke(make_call(), others) == "ok"
    assert transitions(rec) == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


async def test_failed_probe_reopens_for_longer() -> None:
    pipe, clock, rec = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=1,
                                     breaker_open_seconds=5, breaker_open_growth=2,
                                     breaker_max_open_seconds=15)
    await fail_n(pipe, clock, 1)
    clock.advance(5)
    await fail_n(pipe, clock, 1)  # the probe fails
    d = await pipe.breaker.state(KEY)
    assert d.state == OPEN and d.retry_after == pytest.approx(10)
    clock.advance(10)
    await fail_n(pipe, clock, 1)
    assert (await pipe.breaker.state(KEY)).retry_after == pytest.approx(15)  # capped
    assert transitions(rec)[-2:] == [(OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]


async def test_cancelled_probe_frees_the_probe() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=1,
                                   breaker_open_seconds=5)
    await fail_n(pipe, clock, 1)
    clock.advance(5)
    probe = await start_hanging_call(pipe)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    # The next caller becomes the probe and closes the breaker.
    assert await pipe.invoke(make_call(), Script(clock)) == "ok"
    assert (await pipe.breaker.state(KEY)).state == CLOSED


async def test_nested_call_on_probing_task_is_reentrant() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=1,
                                   breaker_open_seconds=5)
    await fail_n(pipe, clock, 1)
    clock.advance(5)

    async def outer_send() -> str:
        # e.g. Telethon resolving a username / exporting auth inside the request
        inner = await pipe.invoke(make_call("contacts.resolveUsername"), Script(clock))
        return f"outer+{inner}"

    assert await bounded(pipe.invoke(make_call(), outer_send)) == "outer+ok"
    assert (await pipe.breaker.state(KEY)).state == CLOSED


async def test_retries_stop_when_the_breaker_opens() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=10, breaker_failure_threshold=3)
    send = Script(clock, default=te.RpcCallFailError(None))
    with pytest.raises(CircuitOpenError) as info:
        await bounded(pipe.invoke(make_call(), send))
    assert send.count == 3  # the retry refused once the breaker opened
    # The caller is told the breaker refused it, from the real last error; Telegram answered
    # that attempt (an RPC error), so it did not run.
    assert isinstance(info.value.__cause__, te.RpcCallFailError)
    assert info.value.may_have_run is False and info.value.retry_after > 0


async def test_observe_only_reports_instead_of_failing_fast() -> None:
    pipe, clock, rec = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=1,
                                     observe_only=True)
    await fail_n(pipe, clock, 1)
    assert await pipe.invoke(make_call(), Script(clock)) == "ok"
    assert any(e.layer == "breaker" and e.would_block for e in rec.of(ObservedDelay))
