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


_ENTRY_POINTS = ("handle", "enter", "run", "on_success", "recover")


def _executed(pipe: Pipeline) -> tuple[list[tuple[object, str]], Callable[..., Any]]:
    """A profile function recording, in order, each entry point of a layer (or the attempt)
    that ran, as ``(layer, name)``: what actually runs, whatever ``Pipeline.layers`` says."""
    ran: list[tuple[object, str]] = []
    members = {id(x): x for x in (*pipe.layers, pipe.rate_layer, pipe.attempt)}

    def profile(frame: Any, event: str, arg: Any) -> None:
        name = frame.f_code.co_name
        if event == "call" and name in _ENTRY_POINTS:
            obj = frame.f_locals.get("self")
            if obj is not None and id(obj) in members:
                ran.append((obj, name))

    return ran, profile


def _layers_in_order(ran: list[tuple[object, str]]) -> list[object]:
    out: list[object] = []
    for obj, _ in ran:
        if all(obj is not r for r in out):
            out.append(obj)
    return out


async def _run_profiled(pipe: Pipeline, call: CallInfo, send: Any,
                        ) -> tuple[Any, list[tuple[object, str]]]:
    ran, profile = _executed(pipe)
    sys.setprofile(profile)
    try:
        result = await bounded(pipe.invoke(call, send))
    finally:
        sys.setprofile(None)
    return result, ran


@pytest.mark.parametrize("cfg", [{}, {"rate_limits": ((100, 1.0),)}, {"adaptive_pacing": False}])
async def test_the_layers_run_in_the_order_pipeline_layers_lists(cfg: dict[str, Any]) -> None:
    pipe, clock, _ = make_pipeline(**cfg)
    assert pipe._fast is not None
    result, ran = await _run_profiled(pipe, make_call(), Script(clock))
    assert result == "ok"
    assert _layers_in_order(ran) == [*pipe.layers, pipe.attempt]
    assert [type(x).__name__ for x in pipe.layers[:3]] == ["DeadlineLayer", "CircuitBreaker",
                                                          "FloodLedger"]
    # The fast path: each layer's synchronous enter, in order, ONE attempt, then the success
    # bookkeeping of the layers around it, nothing else (no handle frame).
    assert ran == [*((layer, "enter") for layer in pipe.layers), (pipe.attempt, "run"),
                   (pipe.ledger, "on_success")]
    # The limiter is in the chain only when a window can apply (limits or adaptive pacing).
    assert (pipe.rate_layer in pipe.layers) == (cfg.get("adaptive_pacing", True)
                                                or "rate_limits" in cfg)
    # The composed chain (what the fast path hands over to) runs the same layers' handle.
    pipe._fast = None
    result, ran = await _run_profiled(pipe, make_call(), Script(clock))
    assert result == "ok"
    assert _layers_in_order(ran) == [*pipe.layers, pipe.attempt]
    assert [name for obj, name in ran if name == "handle"] == ["handle"] * len(pipe.layers)


async def test_the_fast_path_hands_a_waiting_call_to_the_layer_and_the_chain_after_it() -> None:
    pipe, clock, _ = make_pipeline(rate_limits=((1, 1.0),))
    assert await bounded(pipe.invoke(make_call(), Script(clock))) == "ok"  # takes the slot
    send = Script(clock)
    result, ran = await _run_profiled(pipe, make_call(), send)
    assert result == "ok" and send.count == 1
    assert _layers_in_order(ran) == [*pipe.layers, pipe.attempt]
    i = pipe.layers.index(pipe.rate_layer)
    # Entered up to the limiter, which waits in its own coroutine; the layers after it run
    # through the composed chain (handle), the ledger around it records the success.
    assert ran[:i + 1] == [(layer, "enter") for layer in pipe.layers[:i + 1]]
    assert (pipe.retry, "handle") in ran and (pipe.retry, "enter") not in ran
    assert ran[-1] == (pipe.ledger, "on_success")
    # A retried attempt: the retry policy's recover, then handle for the next attempt.
    pipe2, clock2, _ = make_pipeline(retry_base_delay=0.01)
    send2 = Script(clock2, [te.RpcCallFailError(None)])
    result, ran = await _run_profiled(pipe2, make_call(), send2)
    assert result == "ok" and send2.count == 2
    names = [(type(o).__name__, n) for o, n in ran]
    assert names[-4:] == [("RetryPolicy", "recover"), ("RetryPolicy", "handle"),
                          ("Attempt", "run"), ("FloodLedger", "on_success")]


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


# ---- the fast path and the composed chain give the same results ---------------------------

async def _hang() -> str:
    await asyncio.get_running_loop().create_future()
    return "never"


# Each scenario: config, then steps (a call's send outcomes); every step is one call.
_SCENARIOS: dict[str, tuple[dict[str, Any], list[list[Any]]]] = {
    "success": ({"rate_limits": ((100, 1.0),)}, [["ok"], ["ok"]]),
    "flood_wait_fits": ({"max_flood_wait": 10}, [[te.FloodWaitError(None, capture=3)], ["ok"]]),
    "flood_wait_too_long": ({"max_flood_wait": 10},
                            [[te.FloodWaitError(None, capture=100)], ["ok"]]),
    "transport_error_retried": ({"retry_base_delay": 0.5},
                                [[ConnectionError("reset"), "ok"]]),
    "transport_errors_exhausted": ({"retry_max_attempts": 2, "retry_base_delay": 0.5},
                                   [[ConnectionError("a"), ConnectionError("b")], ["ok"]]),
    "server_error_then_flood": ({"retry_base_delay": 0.5, "max_flood_wait": 10},
                                [[te.RpcCallFailError(None), te.FloodWaitError(None, capture=2),
                                  "ok"]]),
    "deadline_in_network": ({"deadline": 5}, [[_hang], ["ok"]]),
    "breaker_opens": ({"breaker_failure_threshold": 2, "retry_max_attempts": 1},
                      [[ConnectionError("a")], [ConnectionError("b")], ["ok"]]),
    "limiter_waits": ({"rate_limits": ((1, 2.0),)}, [["ok"], ["ok"], ["ok"]]),
    "not_a_flood_4xx": ({}, [[te.BadRequestError(None, "PEER_ID_INVALID")], ["ok"]]),
    # file parts through the transfer slots (the layer's own coroutine on both paths)
    "transfer_parts": ({"transfer_concurrency": 2, "max_flood_wait": 10},
                       [["ok"], [te.FloodWaitError(None, capture=2), "ok"], ["ok"]]),
    # the pace learned from a flood counts the successes recorded before it
    "pace_learned": ({"max_flood_wait": 10},
                     [*(["ok"] for _ in range(12)), [te.FloodWaitError(None, capture=2), "ok"],
                      ["ok"]]),
}


async def _play(fast: bool, cfg: dict[str, Any], steps: list[list[Any]]) -> dict[str, Any]:
    pipe, clock, rec = make_pipeline(**cfg)
    if not fast:
        pipe._fast = None
    outcomes: list[str] = []
    sends: list[float] = []
    for outcomes_of_call in steps:
        send = Script(clock, list(outcomes_of_call))
        call = (make_call("upload.saveFilePart", transfer=True) if "transfer_concurrency" in cfg
                else make_call())
        try:
            outcomes.append(repr(await bounded(pipe.invoke(call, send))))
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__} {type(exc.__cause__).__name__}")
        sends.extend(send.times)
        outcomes.append(f"attempts={call.attempt} stage={call.stage}")
    return {
        "outcomes": outcomes,
        "sends": sends,
        "events": [repr(e) for e in rec.events],
        "stats": pipe.stats(),
        "breaker": (await pipe.breaker.state("acct:a1/dc:2")),
        "blocked": await pipe.ledger.blocked_for(make_call()),
        "now": clock.now(),
    }


@pytest.mark.parametrize("name", sorted(_SCENARIOS))
async def test_the_fast_path_gives_what_the_composed_chain_gives(name: str) -> None:
    cfg, steps = _SCENARIOS[name]
    fast = await _play(True, cfg, steps)
    chain = await _play(False, cfg, steps)
    assert fast == chain
    assert fast["events"] or name == "success"  # the scenarios do reach the layers
