from __future__ import annotations

import asyncio
import random
import sys

import pytest
from guardfakes import Script, bounded, make_call, make_pipeline, send_call
from telethon import errors as te

from telethon_guard.errors import (
    AlreadyDelivered,
    AuthKeyInvalidError,
    GuardConnectionError,
    TransportFloodError,
)
from telethon_guard.events import RetriesExhausted, RetryScheduled
from telethon_guard.retry import backoff_delay


def test_full_jitter_bounds_and_seed() -> None:
    rng = random.Random(4)
    for attempt in range(1, 12):
        for _ in range(50):
            d = backoff_delay(rng, attempt, 0.5, 10.0)
            assert 0.0 <= d <= min(10.0, 0.5 * 2 ** (attempt - 1))
    a = [backoff_delay(random.Random(9), k, 1, 30) for k in range(1, 6)]
    b = [backoff_delay(random.Random(9), k, 1, 30) for k in range(1, 6)]
    assert a == b


async def test_rpc_call_fail_seven_times_gives_the_real_error_with_jittered_gaps() -> None:
    pipe, clock, rec = make_pipeline(retry_max_attempts=7, retry_base_delay=0.5,
                                     retry_max_delay=4.0, breaker_failure_threshold=100)
    send = Script(clock, default=te.RpcCallFailError(None))
    with pytest.raises(te.RpcCallFailError) as info:
        await bounded(pipe.invoke(make_call(), send))
    assert type(info.value) is te.RpcCallFailError  # the real error, not ValueError
    assert send.count == 7
    gaps = send.gaps()
    assert len(set(round(g, 6) for g in gaps)) == len(gaps)  # jittered, not flat
    for k, g in enumerate(gaps, start=1):
        assert 0 <= g <= min(4.0, 0.5 * 2 ** (k - 1)) + 1e-9
    assert [e.attempt for e in rec.of(RetryScheduled)] == [1, 2, 3, 4, 5, 6]
    assert rec.of(RetriesExhausted)[0].attempts == 7


async def test_minus_503_twice_then_ok() -> None:
    pipe, clock, _ = make_pipeline()
    timeout = te.TimedOutError(None, "Timeout", -503)
    send = Script(clock, [timeout, timeout], default="fine")
    assert await bounded(pipe.invoke(make_call(), send)) == "fine"
    assert send.count == 3


@pytest.mark.parametrize("exc", [te.RpcMcgetFailError(None), te.WorkerBusyTooLongRetryError(None),
                                 te.ServerError(None, "INTERNAL", 500)])
async def test_other_transient_errors_retried(exc: Exception) -> None:
    pipe, clock, _ = make_pipeline()
    send = Script(clock, [exc])
    assert await bounded(pipe.invoke(make_call(), send)) == "ok"
    assert send.count == 2


@pytest.mark.parametrize("exc", [te.PeerFloodError(None),
                                 te.BadRequestError(None, "MESSAGE_EMPTY", 400),
                                 te.ChatWriteForbiddenError(None),
                                 te.PhoneMigrateError(None, 4)])
async def test_peer_flood_and_4xx_never_retried(exc: Exception) -> None:
    pipe, clock, _ = make_pipeline()
    send = Script(clock, [exc])
    with pytest.raises(type(exc)):
        await pipe.invoke(send_call(5), send)
    assert send.count == 1


async def test_disconnect_retried_then_ok() -> None:
    pipe, clock, _ = make_pipeline()
    send = Script(clock, [ConnectionError("reset"), ConnectionResetError()], default="ok")
    assert await bounded(pipe.invoke(make_call(), send)) == "ok"
    assert send.count == 3


async def test_disconnect_ending_the_budget_is_guard_connection_error() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=3)
    send = Script(clock, default=ConnectionError("gone"))
    with pytest.raises(GuardConnectionError) as info:
        await bounded(pipe.invoke(make_call(), send))
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert send.count == 3


async def test_bare_transport_errors_never_reach_the_caller() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=2)
    s429 = Script(clock, default=te.InvalidBufferError(b"\x53\xfe\xff\xff"))
    with pytest.raises(TransportFloodError) as info:
        await bounded(pipe.invoke(make_call(), s429))
    assert info.value.code == -429 and s429.count == 2
    assert isinstance(info.value.__cause__, te.InvalidBufferError)
    s404 = Script(clock, default=te.InvalidBufferError(b"\x6c\xfe\xff\xff"))
    with pytest.raises(AuthKeyInvalidError):
        await bounded(pipe.invoke(make_call(dc_id=5), s404))
    assert s404.count == 1  # permanent: no retry


async def test_transport_recovery_errors_are_not_retried() -> None:
    pipe, clock, _ = make_pipeline()
    send = Script(clock, [TransportFloodError(-429, 5.0)])
    with pytest.raises(TransportFloodError):
        await pipe.invoke(make_call(), send)
    assert send.count == 1


async def test_backoff_never_sleeps_past_the_deadline() -> None:
    pipe, clock, _ = make_pipeline(deadline=3.0, retry_max_attempts=50, retry_base_delay=1.0,
                                   retry_max_delay=30.0, breaker_failure_threshold=100)
    send = Script(clock, default=te.RpcCallFailError(None))
    t0 = clock.now()
    with pytest.raises(te.RpcCallFailError):
        await bounded(pipe.invoke(make_call(), send))
    assert clock.now() < t0 + 3.0
    assert 1 <= send.count < 50


async def test_random_id_duplicate_after_lost_reply_is_delivered_once() -> None:
    """The first attempt reached the server (reply lost: disconnect), the re-send of the SAME
    request (same random_id) answers RANDOM_ID_DUPLICATE: delivered, never sent a third time."""
    pipe, clock, _ = make_pipeline()
    stored: list[int] = []
    requests: list[object] = []
    call = send_call(42, random_id=99)

    def deliver_then_lose() -> None:
        stored.append(call.request.random_id)
        requests.append(call.request)
        raise ConnectionError("reply lost")

    def duplicate() -> None:
        requests.append(call.request)
        raise te.RandomIdDuplicateError(call.request)

    send = Script(clock, [deliver_then_lose, duplicate])
    with pytest.raises(te.RandomIdDuplicateError) as info:
        await bounded(pipe.invoke(call, send))
    assert isinstance(info.value, AlreadyDelivered)
    assert info.value.random_id == 99 and info.value.attempts == 2
    assert stored == [99] and send.count == 2
    assert requests[0] is requests[1]  # the same request object was re-sent


needs_cancelling = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Task.cancelling() (3.11+) tells a disconnect from a caller's cancel; on 3.10 every "
           "CancelledError propagates (documented)")


@needs_cancelling
async def test_disconnect_cancel_is_retried_but_caller_cancel_propagates() -> None:
    pipe, _clock, _ = make_pipeline()
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[str]] = []

    async def telethon_like_send() -> str:
        fut: asyncio.Future[str] = loop.create_future()
        futures.append(fut)
        if len(futures) == 1:
            loop.call_soon(fut.cancel)  # Telethon's disconnect() cancels in-flight futures
        else:
            loop.call_soon(fut.set_result, "after reconnect")
        return await fut

    assert await bounded(pipe.invoke(make_call(), telethon_like_send)) == "after reconnect"
    assert len(futures) == 2

    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await loop.create_future()
        return "never"

    task = asyncio.create_task(pipe.invoke(make_call(), hang))
    await bounded(started.wait())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@needs_cancelling
async def test_disconnect_cancel_ending_budget_is_guard_connection_error() -> None:
    pipe, _clock, _ = make_pipeline(retry_max_attempts=2)
    loop = asyncio.get_running_loop()

    async def always_cancelled() -> str:
        fut: asyncio.Future[str] = loop.create_future()
        loop.call_soon(fut.cancel)
        return await fut

    with pytest.raises(GuardConnectionError) as info:
        await bounded(pipe.invoke(make_call(), always_cancelled))
    assert isinstance(info.value.__cause__, asyncio.CancelledError)


async def test_caller_cancel_propagates_unchanged_on_every_python() -> None:
    pipe, _clock, _ = make_pipeline()
    started = asyncio.Event()
    send_count = 0

    async def hang() -> str:
        nonlocal send_count
        send_count += 1
        started.set()
        await asyncio.get_running_loop().create_future()
        return "never"

    task = asyncio.create_task(pipe.invoke(make_call(), hang))
    await bounded(started.wait())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert send_count == 1  # no retry after the caller's cancel
