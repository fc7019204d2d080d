"""The per-call fast paths keep the pipeline's semantics: shared attempt-deadline timer,
per-class request descriptions, direct await of Telethon's future, bounded stats outcomes."""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

import pytest
from telethon import errors as te
from telethon.tl import functions, types

from telethon_guard import _tl
from telethon_guard.call import CallInfo
from telethon_guard.clock import LoopDeadlines
from telethon_guard.config import GuardConfig
from telethon_guard.errors import DeadlineExceeded, GuardConnectionError
from telethon_guard.events import OUTCOMES, GuardEvent, RequestFinished
from telethon_guard.pipeline import Pipeline

guard_mod = importlib.import_module("telethon_guard._send_once")

BOUND = 5.0  # seconds: bound of every wait below (far above the timers under test)


# ---- LoopDeadlines ----------------------------------------------------------------------


async def test_loop_deadlines_fire_in_order_at_their_time_and_skip_cancelled() -> None:
    loop = asyncio.get_running_loop()
    timers = LoopDeadlines(loop)
    fired: list[tuple[str, float]] = []
    done = loop.create_future()
    start = loop.time()

    def at(name: str, when: float) -> Any:
        def cb() -> None:
            fired.append((name, loop.time()))
            if name == "last":
                done.set_result(None)
        return timers.add(when, cb)

    at("c", start + 0.06)
    at("a", start + 0.02)  # earlier than the armed one: re-arms
    cancelled = at("x", start + 0.03)
    at("b", start + 0.04)
    at("last", start + 0.08)
    cancelled.cancel()
    await asyncio.wait_for(done, BOUND)
    assert [n for n, _ in fired] == ["a", "b", "c", "last"]
    wanted = {"a": 0.02, "b": 0.04, "c": 0.06, "last": 0.08}
    for name, t in fired:
        assert t >= start + wanted[name]  # never early
    assert len(timers) == 0


async def test_loop_deadlines_sweep_keeps_the_heap_bounded() -> None:
    loop = asyncio.get_running_loop()
    timers = LoopDeadlines(loop)
    for i in range(10_000):  # far deadlines, all done long before: like calls answered
        timers.add(loop.time() + 60 + i, lambda: None).cancel()
    assert len(timers) <= 130
    fired = loop.create_future()
    timers.add(loop.time() + 0.01, lambda: fired.set_result(True))
    assert await asyncio.wait_for(fired, BOUND) is True


async def test_loop_deadlines_in_order_entries_behind_a_live_one_stay_bounded() -> None:
    # Deadlines of one attempt timeout arrive in order (the FIFO): a slow call's entry at the
    # front must not keep every later, cancelled entry alive, and it still fires on time.
    loop = asyncio.get_running_loop()
    timers = LoopDeadlines(loop)
    fired = loop.create_future()
    timers.add(loop.time() + 0.05, lambda: fired.set_result("slow"))
    for i in range(10_000):
        timers.add(loop.time() + 60 + i, lambda: None).cancel()
    assert len(timers) <= 130
    assert await asyncio.wait_for(fired, BOUND) == "slow"
    later = loop.create_future()
    timers.add(loop.time() + 0.01, lambda: later.set_result(True))  # after the sweep
    assert await asyncio.wait_for(later, BOUND) is True


async def test_loop_deadline_callback_error_goes_to_the_loop_handler() -> None:
    loop = asyncio.get_running_loop()
    timers = LoopDeadlines(loop)
    seen: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    after = loop.create_future()
    try:
        def boom() -> None:
            raise RuntimeError("boom")
        timers.add(loop.time(), boom)
        timers.add(loop.time(), lambda: after.set_result(None))
        await asyncio.wait_for(after, BOUND)
    finally:
        loop.set_exception_handler(old)
    assert [type(c["exception"]) for c in seen] == [RuntimeError]


# ---- the pipeline's attempt deadline on the real loop -------------------------------------


def _call(deadline_in: float, method: str = "updates.getState") -> CallInfo:
    return CallInfo(method=method, request=functions.updates.GetStateRequest(),
                    account="a", dc_id=1, deadline_at=time.monotonic() + deadline_in)


async def test_many_in_flight_calls_each_end_at_their_own_deadline() -> None:
    pipe = Pipeline(GuardConfig(breaker_failure_threshold=1000))
    never = asyncio.get_running_loop().create_future()

    async def hang() -> Any:
        return await asyncio.shield(never)

    async def answer() -> str:
        await asyncio.sleep(0)
        return "ok"

    async def timed(deadline_in: float) -> tuple[float, float, BaseException | None]:
        call = _call(deadline_in)
        dl = call.deadline_at
        assert dl is not None
        try:
            await pipe.invoke(call, hang)
        except BaseException as e:  # collected and checked below
            return dl, time.monotonic(), e
        return dl, time.monotonic(), None

    deadlines = [0.15, 0.05, 0.25, 0.1, 0.2]
    runs = [asyncio.create_task(timed(d)) for d in deadlines]
    answered = [await asyncio.wait_for(pipe.invoke(_call(60), answer), BOUND)
                for _ in range(50)]  # answered calls leave their entries behind, cancelled
    results = await asyncio.wait_for(asyncio.gather(*runs), BOUND)
    assert answered == ["ok"] * 50
    for dl, ended, exc in results:
        assert isinstance(exc, DeadlineExceeded)
        assert ended >= dl  # not before its deadline
    never.cancel()


async def test_caller_cancel_during_the_attempt_propagates_unchanged() -> None:
    pipe = Pipeline(GuardConfig())
    started = asyncio.Event()

    async def hang() -> Any:
        started.set()
        await asyncio.sleep(BOUND * 10)

    task = asyncio.create_task(pipe.invoke(_call(60), hang))
    await asyncio.wait_for(started.wait(), BOUND)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, BOUND)
    assert pipe.stats()["calls"]["updates.getState"] == {"cancelled": 1}


# ---- stats outcomes are the metrics' outcomes --------------------------------------------


async def test_stats_outcomes_match_request_finished_outcomes() -> None:
    events: list[GuardEvent] = []
    pipe = Pipeline(GuardConfig(on_event=(events.append,), retry_max_attempts=1,
                                breaker_failure_threshold=1000))
    errors: list[BaseException | None] = [
        None, te.RpcCallFailError(None), te.BadRequestError(None, "PEER_ID_INVALID"),
        GuardConnectionError("gone"), te.FloodWaitError(None, 100_000),  # blocks: the last
    ]
    for err in errors:
        async def send(err: BaseException | None = err) -> str:
            if err is not None:
                raise err
            return "ok"
        try:
            await asyncio.wait_for(pipe.invoke(_call(60), send), BOUND)
        except Exception:  # outcomes are checked below
            pass
    finished = [e.outcome for e in events if isinstance(e, RequestFinished)]
    counted = pipe.stats()["calls"]["updates.getState"]
    assert sorted(counted) == sorted(set(finished))
    assert sum(counted.values()) == len(errors)
    assert set(counted) <= set(OUTCOMES)
    assert counted == {"ok": 1, "server_error": 1, "flood_wait": 1, "rpc_error": 1,
                       "connection": 1}


# ---- per-class request descriptions -------------------------------------------------------


@pytest.mark.parametrize("request_", [
    functions.updates.GetStateRequest(),
    functions.messages.SendMessageRequest(types.InputPeerUser(5, 6), "hi", random_id=77),
    functions.messages.SendMessageRequest(types.InputPeerChannel(9, 1), "hi", random_id=78),
    functions.channels.GetFullChannelRequest(types.InputChannel(9, 1)),
    functions.messages.ForwardMessagesRequest(types.InputPeerSelf(), [1, 2],
                                              types.InputPeerChat(4), random_id=[11, 12]),
    functions.PingRequest(1),
    functions.InvokeWithLayerRequest(1, functions.InitConnectionRequest(
        1, "d", "s", "a", "en", "", "en", functions.help.GetConfigRequest())),
])
def test_describe_agrees_with_the_single_helpers(request_: Any) -> None:
    for _ in range(2):  # second time from the per-class caches
        assert _tl.describe(request_) == (_tl.method_name(request_), _tl.peer_key(request_),
                                          _tl.random_id_of(request_))
    assert _tl.method_name(functions.InvokeWithoutUpdatesRequest(request_)) == \
        _tl.method_name(request_)


def test_describe_values() -> None:
    req = functions.messages.SendMessageRequest(types.InputPeerUser(5, 6), "hi", random_id=77)
    assert _tl.describe(req) == ("messages.sendMessage", "peer:5", 77)
    no_peer = functions.messages.GetHistoryRequest(None, 0, None, 0, 1, 0, 0, 0)  # type: ignore[arg-type]
    assert _tl.describe(no_peer) == ("messages.getHistory", None, None)
    assert _tl.describe(functions.channels.GetFullChannelRequest(types.InputChannel(9, 1))) \
        == ("channels.getFullChannel", "peer:-1000000000009", None)


# ---- awaiting Telethon's future -------------------------------------------------------------


async def test_future_cancelled_by_telethon_is_a_connection_error() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.cancel)  # what Telethon's disconnect() does
    with pytest.raises(GuardConnectionError):
        await asyncio.wait_for(guard_mod.await_request(fut), BOUND)


async def test_caller_cancel_while_awaiting_the_future_cancels_it() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(guard_mod.await_request(fut))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, BOUND)
    assert fut.cancelled()


async def test_future_result_and_error_pass_through() -> None:
    loop = asyncio.get_running_loop()
    ok: asyncio.Future[int] = loop.create_future()
    loop.call_soon(ok.set_result, 7)
    assert await asyncio.wait_for(guard_mod.await_request(ok), BOUND) == 7
    bad: asyncio.Future[int] = loop.create_future()
    loop.call_soon(bad.set_exception, te.RpcCallFailError(None))
    with pytest.raises(te.RpcCallFailError):
        await asyncio.wait_for(guard_mod.await_request(bad), BOUND)
    done: asyncio.Future[int] = loop.create_future()
    done.set_result(3)  # already answered
    assert await guard_mod.await_request(done) == 3


def test_loop_deadlines_due_together_fire_earliest_first() -> None:
    """A loop late past several deadlines (a loaded host) runs them in time order, the FIFO's
    and the heap's interleaved: before, the FIFO's ran first (a flaky 'a, c, b')."""
    loop = asyncio.new_event_loop()
    try:
        timers = LoopDeadlines(loop)
        fired: list[str] = []
        start = loop.time()
        timers.add(start + 0.06, lambda: fired.append("c"))  # the FIFO
        timers.add(start + 0.02, lambda: fired.append("a"))  # earlier: the heap
        timers.add(start + 0.04, lambda: fired.append("b"))  # the heap
        timers.add(start + 0.08, lambda: fired.append("d"))  # the FIFO
        time.sleep(0.1)  # the loop is late past all four
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        assert fired == ["a", "b", "c", "d"]
    finally:
        loop.close()
