from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest
from guardfakes import (
    Recorder,
    Script,
    bounded,
    history_request,
    make_call,
    make_pipeline,
    send_call,
    send_request,
)
from telethon import errors as te
from telethon.tl import types

from telethon_guard.call import CallInfo
from telethon_guard.clock import MonotonicClock
from telethon_guard.config import GuardConfig
from telethon_guard.errors import AttemptTimeoutError, DeadlineExceeded, MayHaveRunError
from telethon_guard.events import (
    DeadlineExceededEvent,
    EventBus,
    FloodWaitStarted,
    RetryScheduled,
)
from telethon_guard.fakeclock import FakeClock
from telethon_guard.keys import is_idempotent
from telethon_guard.pipeline import Pipeline
from telethon_guard.storage import CLOSED, OPEN
from telethon_guard.storage.memory import MemoryStorage

guard_mod = importlib.import_module("telethon_guard._client_call")


async def never() -> str:
    await asyncio.get_running_loop().create_future()
    return "never"


def _executed(pipe: Pipeline) -> tuple[list[object], Callable[..., Any]]:
    """A profile function recording, in order, each layer (and the attempt) whose entry point
    ran: what actually runs, whatever ``Pipeline.layers`` says."""
    ran: list[object] = []
    members = {id(x): x for x in (*pipe.layers, pipe.rate_layer, pipe.attempt)}

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name in ("handle", "run"):
            obj = frame.f_locals.get("self")
            if obj is not None and id(obj) in members and all(obj is not r for r in ran):
                ran.append(obj)

    return ran, profile


@pytest.mark.parametrize("cfg", [{}, {"rate_limits": ((100, 1.0),)}, {"adaptive_pacing": False}])
async def test_the_layers_run_in_the_order_pipeline_layers_lists(cfg: dict[str, Any]) -> None:
    pipe, clock, _ = make_pipeline(**cfg)
    ran, profile = _executed(pipe)
    sys.setprofile(profile)
    try:
        assert await bounded(pipe.invoke(make_call(), Script(clock))) == "ok"
    finally:
        sys.setprofile(None)
    assert ran == [*pipe.layers, pipe.attempt]
    assert [type(x).__name__ for x in ran[:3]] == ["DeadlineLayer", "CircuitBreaker",
                                                    "FloodLedger"]
    # The limiter is in the chain only when a window can apply (limits or adaptive pacing).
    assert (pipe.rate_layer in pipe.layers) == (cfg.get("adaptive_pacing", True)
                                                or "rate_limits" in cfg)


async def test_deadline_covers_limiter_flood_and_network() -> None:
    pipe, clock, rec = make_pipeline(deadline=10, rate_limits=((1, 2.0),), max_flood_wait=60)
    await pipe.invoke(make_call("help.getConfig"), Script(clock))  # uses the 1-per-2 s slot
    await pipe.ledger.record_block("acct:a1/method:messages.getHistory", 3)
    t0 = clock.now()
    send = Script(clock, default=never)
    with pytest.raises(DeadlineExceeded) as info:
        await bounded(pipe.invoke(make_call(), send))
    # flood wait 3 s, then the limiter slot is already free (t0+2), the network hangs:
    # the deadline fires exactly 10 s after the call started.
    assert send.times == [t0 + 3]
    assert clock.now() == t0 + 10
    assert isinstance(info.value, TimeoutError) and info.value.deadline == 10
    ev = rec.of(DeadlineExceededEvent)
    assert ev and ev[-1].stage == "network"
    # Deadline hit during the network attempt counts as a timeout for the breaker.
    assert (await pipe.breaker.state("acct:a1/dc:2")).failures == 1


async def test_limiter_wait_beyond_deadline_fails_at_once() -> None:
    pipe, clock, rec = make_pipeline(deadline=5, rate_limits=((1, 60.0),))
    await pipe.invoke(make_call(), Script(clock))
    t0 = clock.now()
    send = Script(clock)
    with pytest.raises(DeadlineExceeded):
        await pipe.invoke(make_call(), send)
    assert clock.now() == t0 and send.count == 0
    assert rec.of(DeadlineExceededEvent)[-1].stage == "limiter"


async def test_explicit_deadline_at_is_respected_and_passed_deadline_fails() -> None:
    pipe, clock, _ = make_pipeline(deadline=60)
    send = Script(clock, default=never)
    with pytest.raises(DeadlineExceeded):
        await bounded(pipe.invoke(make_call(deadline_at=clock.now() + 2), send))
    assert send.count == 1
    with pytest.raises(DeadlineExceeded):
        await pipe.invoke(make_call(deadline_at=clock.now() - 1), send)
    assert send.count == 1


async def test_deadline_filled_from_config() -> None:
    pipe, clock, _ = make_pipeline(deadline=7)
    call = make_call()
    await pipe.invoke(call, Script(clock))
    assert call.deadline_at == clock.now() + 7
    assert call.attempt == 1


async def test_attempt_timeout_retries_then_real_timeout() -> None:
    pipe, clock, _ = make_pipeline(attempt_timeout=2, retry_max_attempts=3,
                                   breaker_failure_threshold=100)
    send = Script(clock, [never], default="second try")
    assert await bounded(pipe.invoke(make_call(), send)) == "second try"
    hang = Script(clock, default=never)
    with pytest.raises(AttemptTimeoutError) as info:
        await bounded(pipe.invoke(make_call(), hang))
    assert hang.count == 3 and isinstance(info.value, TimeoutError)


async def test_attempt_timeout_of_a_request_that_may_have_run_is_not_sent_again() -> None:
    # auth.sendCode has no random_id and is not a read: after a timeout it may have run (a
    # second send would text a second code). The guard raises MayHaveRunError, sends nothing
    # more; a read (getHistory) and a request with a random_id are still retried.
    pipe, clock, rec = make_pipeline(attempt_timeout=2, retry_max_attempts=3,
                                     breaker_failure_threshold=100)
    unsafe = make_call("auth.sendCode")
    unsafe.idempotent = is_idempotent(unsafe.method, unsafe.random_id)
    hang = Script(clock, default=never)
    with pytest.raises(MayHaveRunError) as info:
        await bounded(pipe.invoke(unsafe, hang))
    assert hang.count == 1
    assert isinstance(info.value, AttemptTimeoutError) and isinstance(info.value, TimeoutError)
    assert not rec.of(RetryScheduled)
    for safe in (make_call(), send_call(5)):
        safe.idempotent = is_idempotent(safe.method, safe.random_id)
        again = Script(clock, [never], default="second try")
        assert await bounded(pipe.invoke(safe, again)) == "second try"
        assert again.count == 2


def test_the_client_marks_only_safe_requests_idempotent() -> None:
    from telethon.sessions import StringSession
    from telethon.tl import functions

    from telethon_guard import GuardedTelegramClient

    client = GuardedTelegramClient(StringSession(), 1, "0" * 32, account="x")
    send_code = functions.auth.SendCodeRequest("+100", 1, "0" * 32, types.CodeSettings())
    calls = [guard_mod.make_call(client, client.guard, client._sender, r)
             for r in (send_code, history_request(), send_request())]
    assert [c.idempotent for c in calls] == [False, True, True]


async def test_caller_cancel_in_limiter_releases_the_slot() -> None:
    pipe, clock, _ = make_pipeline(rate_limits=((1, 1.0),), rate_margin=0.0)
    await pipe.invoke(make_call(), Script(clock))
    t0 = clock.now()
    waiting = asyncio.create_task(pipe.invoke(make_call(), Script(clock)))
    await asyncio.sleep(0)
    assert pipe.limiter.queue_length == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pipe.limiter.queue_length == 0
    after = Script(clock)
    await bounded(pipe.invoke(make_call(), after))
    assert after.times == [t0 + 1]  # the cancelled caller's slot was given back


async def test_wait_for_timeout_cancels_cleanly_and_holds_nothing() -> None:
    pipe, clock, _ = make_pipeline(breaker_failure_threshold=1, retry_max_attempts=1)
    # Open then half-open, so the call holds the single probe while it hangs.
    with pytest.raises(te.RpcCallFailError):
        await pipe.invoke(make_call(), Script(clock, [te.RpcCallFailError(None)]))
    clock.advance(10)
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):  # distinct types on 3.10
        await asyncio.wait_for(pipe.invoke(make_call(), Script(clock, default=never)), 0.05)
    # Nothing left held: the next caller gets the probe and closes the breaker.
    assert await pipe.invoke(make_call(), Script(clock)) == "ok"
    assert (await pipe.breaker.state("acct:a1/dc:2")).state == CLOSED


async def test_real_clock_deadline_with_real_timers() -> None:
    pipe = Pipeline(GuardConfig(deadline=0.05), clock=MonotonicClock())
    with pytest.raises(DeadlineExceeded):
        await bounded(pipe.invoke(make_call(), never), 5)


async def test_callback_failures_never_break_a_call(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[object] = []

    def bad(ev: object) -> None:
        raise RuntimeError("boom")

    async def good_async(ev: object) -> None:
        seen.append(ev)

    clock = FakeClock()
    bus = EventBus([bad, good_async])
    pipe = Pipeline(GuardConfig(deadline=None, max_flood_wait=10), events=bus, clock=clock)
    with caplog.at_level(logging.INFO, logger="telethon_guard"):
        r = await bounded(pipe.invoke(make_call(), Script(clock, [te.FloodWaitError(None, 2)])))
    await bus.drain()
    assert r == "ok"
    assert any(isinstance(e, FloodWaitStarted) for e in seen)
    assert "on_event callback" in caplog.text and "boom" in caplog.text
    lines = [r for r in caplog.records if r.getMessage().startswith("FloodWaitStarted")]
    assert len(lines) == 1  # one line per event


async def test_peer_ids_not_in_events_or_logs_by_default(
        caplog: pytest.LogCaptureFixture) -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=100, peer_limits_group=((1, 10.0),))
    with caplog.at_level(logging.DEBUG, logger="telethon_guard"):
        await bounded(pipe.invoke(send_call(-123456), Script(clock, [
            te.SlowModeWaitError(None, 5)])))
        await bounded(pipe.invoke(send_call(-123456), Script(clock)))
    assert rec.events
    assert all("123456" not in repr(e) for e in rec.events)
    assert "123456" not in caplog.text


async def test_peer_ids_when_opted_in() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=100, log_peer_ids=True)
    await bounded(pipe.invoke(send_call(-77), Script(clock, [te.SlowModeWaitError(None, 5)])))
    assert any("peer:-77" in repr(e) for e in rec.events)


async def test_no_secrets_in_events() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=100)
    call = CallInfo("auth.signIn", object(), "a1", 2)  # type: ignore[arg-type]
    with pytest.raises(te.FloodWaitError):
        await pipe.invoke(call, Script(clock, [te.FloodWaitError(None, 1000)]))
    text = " ".join(e.describe() for e in rec.events)
    assert "+1555" not in text and "auth_key" not in text.lower()


async def test_storage_defaults_to_memory_on_the_pipeline_clock() -> None:
    pipe, clock, _ = make_pipeline()
    assert isinstance(pipe.storage, MemoryStorage)
    await pipe.ledger.record_block("x", 5)
    clock.advance(5)
    assert await pipe.storage.flood_left("x") == 0


async def test_shared_storage_between_pipelines() -> None:
    clock = FakeClock()
    shared = MemoryStorage(clock)
    rec = Recorder()
    a = Pipeline(GuardConfig(deadline=None, retry_max_attempts=1, breaker_failure_threshold=1),
                 shared, EventBus([rec]), clock)
    b = Pipeline(GuardConfig(deadline=None), shared, EventBus([rec]), clock)
    with pytest.raises(te.RpcCallFailError):
        await a.invoke(make_call(), Script(clock, [te.RpcCallFailError(None)]))
    assert (await b.breaker.state("acct:a1/dc:2")).state == OPEN
    with pytest.raises(te.FloodWaitError):
        await a.invoke(make_call("x.y", dc_id=4), Script(clock, [te.FloodWaitError(None, 999)]))
    send = Script(clock)
    with pytest.raises(te.FloodWaitError):
        await b.invoke(make_call("x.y", dc_id=3), send)
    assert send.count == 0


async def test_observe_only_measures_without_delaying() -> None:
    pipe, clock, rec = make_pipeline(observe_only=True, rate_limits=((1, 10.0),))
    send = Script(clock)
    for _ in range(3):
        await pipe.invoke(make_call(), send)
    assert send.times == [clock.now()] * 3
    assert len([e for e in rec.events if type(e).__name__ == "ObservedDelay"]) == 2


async def test_stats_snapshot() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=1,
                                   max_flood_wait=0)
    await pipe.invoke(make_call(), Script(clock))
    with pytest.raises(te.RpcCallFailError):
        await pipe.invoke(make_call(), Script(clock, [te.RpcCallFailError(None)]))
    with pytest.raises(te.SlowModeWaitError):
        await pipe.invoke(send_call(-55, dc_id=3), Script(clock, [te.SlowModeWaitError(None, 9)]))
    st = pipe.stats()
    assert st["calls"]["messages.getHistory"] == {"ok": 1, "server_error": 1}
    assert st["calls"]["messages.sendMessage"] == {"flood_wait": 1}
    assert st["breakers"] == {"acct:a1/dc:2": OPEN}  # healthy DCs leave no state behind
    assert list(st["blocked"].values()) == [9.0]
    assert "-55" not in repr(st)
    assert st["limiter_queue"] == 0


async def test_per_call_max_flood_wait_overrides_config() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=60)
    call = make_call()
    call.max_flood_wait = 5
    send = Script(clock, [te.FloodWaitError(None, 10)])
    with pytest.raises(te.FloodWaitError):
        await pipe.invoke(call, send)
    assert send.count == 1


async def test_redis_url_builds_the_redis_backend_with_guard_options() -> None:
    redis_mod = pytest.importorskip("telethon_guard.storage.redis")
    cfg = GuardConfig(storage="redis://127.0.0.1:6379/0", storage_timeout=0.2,
                      storage_fallback="fail")
    pipe = Pipeline(cfg, clock=FakeClock())
    st = pipe.storage
    assert isinstance(st, redis_mod.RedisStorage) and not st.is_local
    assert st.on_unavailable == "fail"
    await st.aclose()


async def test_deadline_during_network_is_not_reported_as_retry_exhaustion() -> None:
    pipe, clock, rec = make_pipeline(deadline=3)
    with pytest.raises(DeadlineExceeded):
        await bounded(pipe.invoke(make_call(), Script(clock, default=never)))
    names = {type(e).__name__ for e in rec.events}
    assert "RetriesExhausted" not in names and "DeadlineExceededEvent" in names


async def test_nested_call_under_a_tight_rate_limit_waits_its_slot_no_deadlock() -> None:
    pipe, clock, _ = make_pipeline(rate_limits=((1, 1.0),), deadline=10, rate_margin=0.0)
    t0 = clock.now()

    async def outer_send() -> str:
        # Telethon resolving a username inside the request, on the same task.
        inner_send = Script(clock)
        inner = await pipe.invoke(make_call("contacts.resolveUsername"), inner_send)
        assert inner_send.times == [t0 + 1]  # waited for its own slot, nothing held
        return inner

    assert await bounded(pipe.invoke(make_call(), outer_send)) == "ok"
