"""The straight lane (telethon_guard/lane.py, ``_client_call.lane_call``) gives what the
pipeline's layers give: ``client(request)`` of a ``GuardedTelegramClient`` over a scripted
sender, once with the lane and once with it switched off (every call through
``Pipeline.invoke``), must agree on results, send times, events, ``stats()``, breaker and
ledger state; and the lane is what runs for a call no layer stops (no ``Pipeline.invoke``,
no layer entry point), while anything else goes through the layers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import pytest
from guardfakes import Recorder, bounded
from telethon import errors as te
from telethon import functions, types
from telethon.sessions import StringSession

from telethon_guard import GuardedTelegramClient
from telethon_guard.clock import FifoDeadlines
from telethon_guard.errors import DeadlineExceeded, SlowModeBlocked
from telethon_guard.events import EventBus
from telethon_guard.fakeclock import FakeClock
from telethon_guard.health import deadline_scope

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="the lane needs 3.11+")

_STATE = types.updates.State(pts=1, qts=0, date=None, seq=0, unread_count=0)


class ScriptedSender:
    """A main sender whose ``send_awaited`` answers from a script: ``"ok"`` (the state), an
    exception (set on the future), ``"hang"`` (never answered), ``"sync:<exc>"`` is not
    used; records the clock time of every send."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.outcomes: list[Any] = []
        self.times: list[float] = []
        self.held: list[asyncio.Future[Any]] = []  # "hang" futures, for a test to answer
        self.dc_id = 2

    def send_awaited(self, request: Any, ordered: bool = False) -> asyncio.Future[Any]:
        self.times.append(self.clock.now())
        item = self.outcomes.pop(0) if self.outcomes else "ok"
        fut = asyncio.get_running_loop().create_future()
        if isinstance(item, BaseException):
            fut.set_exception(item)
        elif item != "hang":
            fut.set_result(_STATE)
        else:
            self.held.append(fut)
        return fut

    send = send_awaited

    def is_connected(self) -> bool:
        return True


def _client(lane: bool, **cfg: Any) -> tuple[Any, ScriptedSender, FakeClock, Recorder]:
    clock = FakeClock()
    rec = Recorder()
    cfg.setdefault("seed", 1)
    client = GuardedTelegramClient(StringSession(), 1, "0" * 32, clock=clock,
                                   events=EventBus([rec]), account="a1", **cfg)
    sender = ScriptedSender(clock)
    client._sender = sender
    client.session.set_dc(2, "127.0.0.1", 443)
    client._guard_link.offline = False  # as after connect(): connection errors are retried
    if not lane:
        client.guard.pipeline.lane = None
    return client, sender, clock, rec


def _request() -> Any:
    return functions.updates.GetStateRequest()


def _history() -> Any:
    """A read addressed to a peer (a ``peer`` field, no ``random_id``): the lane takes it."""
    return functions.messages.GetHistoryRequest(
        peer=types.InputPeerChannel(77, 5), offset_id=0, offset_date=None, add_offset=0,
        limit=10, max_id=0, min_id=0, hash=0)


def _full_channel() -> Any:
    return functions.channels.GetFullChannelRequest(types.InputChannel(77, 5))


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
    "deadline_in_network": ({"deadline": 5}, [["hang"], ["ok"]]),
    "attempt_timeout_retried": ({"attempt_timeout": 2, "retry_base_delay": 0.1},
                                [["hang", "ok"], ["ok"]]),
    "breaker_opens": ({"breaker_failure_threshold": 2, "retry_max_attempts": 1},
                      [[ConnectionError("a")], [ConnectionError("b")], ["ok"]]),
    "breaker_failure_then_success": ({"breaker_failure_threshold": 3, "retry_max_attempts": 1},
                                     [[ConnectionError("a")], ["ok"], ["ok"]]),
    "limiter_waits": ({"rate_limits": ((1, 2.0),)}, [["ok"], ["ok"], ["ok"]]),
    "not_a_flood_4xx": ({}, [[te.BadRequestError(None, "PEER_ID_INVALID")], ["ok"]]),
    "pace_learned": ({"max_flood_wait": 10},
                     [*(["ok"] for _ in range(12)), [te.FloodWaitError(None, capture=2), "ok"],
                      ["ok"], ["ok"]]),
    "no_deadline": ({"deadline": None}, [["ok"], [ConnectionError("a"), "ok"]]),
    # Reads addressed to a peer (messages.getHistory, channels.getFullChannel: the lane's).
    "peer_read_success": ({"rate_limits": ((100, 1.0),), "peer_limits_group": ((1, 60.0),),
                           "peer_limits_private": ((1, 60.0),)},
                          [["ok"], ["ok"], ["ok"]]),
    "peer_read_flood_wait": ({"max_flood_wait": 10},
                             [[te.FloodWaitError(None, capture=3)], ["ok"]]),
    "peer_read_flood_too_long": ({"max_flood_wait": 10},
                                 [[te.FloodWaitError(None, capture=100)], ["ok"]]),
    "peer_read_slowmode": ({"max_flood_wait": 10},  # recorded under the peer's slow-mode key
                           [[te.SlowModeWaitError(None, capture=100)], ["ok"]]),
    "peer_read_retried": ({"retry_base_delay": 0.5},
                          [[ConnectionError("reset"), "ok"], [te.RpcCallFailError(None), "ok"]]),
    "peer_read_timeout_retried": ({"attempt_timeout": 2, "retry_base_delay": 0.1},
                                  [["hang", "ok"], ["ok"]]),
}
_PEER_READS: dict[str, Callable[[], Any]] = {
    "peer_read_success": _history, "peer_read_flood_wait": _history,
    "peer_read_flood_too_long": _full_channel, "peer_read_slowmode": _history,
    "peer_read_retried": _full_channel, "peer_read_timeout_retried": _history,
}


async def _play(lane: bool, cfg: dict[str, Any], steps: list[list[Any]],
                request: Callable[[], Any] = _request) -> dict[str, Any]:
    client, sender, clock, rec = _client(lane, **cfg)
    outcomes: list[str] = []
    for outcomes_of_call in steps:
        sender.outcomes = list(outcomes_of_call)
        try:
            outcomes.append(repr(await bounded(client(request()))))
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__} {type(exc.__cause__).__name__}")
        outcomes.append(f"left={len(sender.outcomes)}")
    pipe = client.guard.pipeline
    return {
        "outcomes": outcomes,
        "sends": sender.times,
        "events": [repr(e) for e in rec.events],
        "stats": pipe.stats(),
        "breaker": await pipe.breaker.state("acct:a1/dc:2"),
        "blocked": sorted(pipe.storage.flood_table()),
        "now": clock.now(),
    }


@pytest.mark.parametrize("name", sorted(_SCENARIOS))
async def test_the_lane_gives_what_the_pipeline_gives(name: str) -> None:
    cfg, steps = _SCENARIOS[name]
    request = _PEER_READS.get(name, _request)
    lane = await _play(True, cfg, steps, request)
    chain = await _play(False, cfg, steps, request)
    assert lane == chain
    assert lane["events"]  # RequestFinished at least: someone listens
    if name == "peer_read_slowmode":  # the lane's failed attempt carried the request's peer
        assert any("slowmode" in k and "peer:-100" in k for k in lane["blocked"]), lane
    if name == "peer_read_success":  # no per-peer window on a read: three calls, no wait
        assert len(lane["sends"]) == 3 and len(set(lane["sends"])) == 1


async def test_a_read_addressed_to_a_peer_runs_in_the_lane_alone() -> None:
    client, sender, _clock, _rec = _client(True, rate_limits=((100, 1.0),),
                                           peer_limits_group=((1, 60.0),))
    for request in (_history(), _full_channel(), _history()):
        result, ran = await _profiled(client, request)
        assert result == _STATE and ran == []
    assert client.guard.pipeline.stats()["calls"] == {
        "messages.getHistory": {"ok": 2}, "channels.getFullChannel": {"ok": 1}}
    # A failed attempt's CallInfo carries the peer the layers would have described.
    sender.outcomes = [te.SlowModeWaitError(None, capture=100)]
    with pytest.raises(SlowModeBlocked):
        await bounded(client(_history()))
    assert "acct:a1/slowmode:peer:-1000000000077" in client.guard.pipeline.storage.flood_table()


def _entry_points(client: Any) -> tuple[list[str], Callable[..., Any]]:
    """A profile function recording which of the pipeline's entry points ran (``invoke``,
    ``resume``, any layer's ``enter`` / ``handle`` / ``recover``, the attempt's ``run``)."""
    pipe = client.guard.pipeline
    members = {id(x) for x in (pipe, *pipe.layers, pipe.rate_layer, pipe.attempt)}
    ran: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name in (
                "invoke", "resume", "enter", "handle", "recover", "run", "failed"):
            obj = frame.f_locals.get("self")
            if obj is not None and id(obj) in members:
                ran.append(f"{type(obj).__name__}.{frame.f_code.co_name}")

    return ran, profile


async def _profiled(client: Any, request: Any) -> tuple[Any, list[str]]:
    ran, profile = _entry_points(client)
    sys.setprofile(profile)
    try:
        result = await bounded(client(request))
    finally:
        sys.setprofile(None)
    return result, ran


async def test_a_call_no_layer_stops_runs_in_the_lane_alone() -> None:
    client, _sender, _clock, _rec = _client(True, rate_limits=((100, 1.0),))
    result, ran = await _profiled(client, _request())
    assert result == _STATE and ran == []  # no invoke, no layer: the lane did it all
    pipe = client.guard.pipeline
    assert pipe.stats()["calls"] == {"updates.getState": {"ok": 1}}
    timers = pipe.lane.timers
    assert isinstance(timers, FifoDeadlines) and len(timers) == 0  # filed and stopped
    # An attempt that raised goes on in Pipeline.resume: the attempt's verdict, the retry.
    client2, sender2, _, _ = _client(True, retry_base_delay=0.1)
    sender2.outcomes = [ConnectionError("reset")]
    result, ran = await _profiled(client2, _request())
    assert result == _STATE and len(sender2.times) == 2
    assert ran[:3] == ["Pipeline.resume", "Attempt.failed", "RetryPolicy.recover"]
    assert "Pipeline.invoke" not in ran


@pytest.mark.parametrize("case", ["flood_blocked", "pace", "deadline_scope", "breaker_failures",
                                  "limiter_full", "not_a_lane_class", "flood_sleep_threshold",
                                  "send_without_random_id", "chat_write", "peer_not_a_read"])
async def test_what_the_lane_cannot_take_goes_through_invoke(case: str) -> None:
    client, sender, _clock, _ = _client(True, rate_limits=((1, 10.0),), max_flood_wait=30)
    pipe = client.guard.pipeline
    request: Any = _request()
    kwargs: dict[str, Any] = {}
    if case == "flood_blocked":
        await pipe.ledger.record_block("acct:a1/method:users.getFullUser", 5)
    elif case == "pace":
        pacer = pipe.ledger.pacer
        assert pacer is not None
        for _ in range(12):
            pacer.on_success("a1", "updates.getState")
        pacer.on_flood("a1", "updates.getState", 2)
        assert ("a1", "updates.getState") in pacer.pace_table()
    elif case == "breaker_failures":
        await pipe.storage.breaker_failure("acct:a1/dc:2", pipe.breaker.policy)
    elif case == "limiter_full":
        assert await bounded(client(_request())) == _STATE  # takes the only slot
    elif case == "not_a_lane_class":
        request = functions.messages.SendMessageRequest(
            peer=types.InputPeerChat(5), message="hi", random_id=7)
    elif case == "send_without_random_id":  # a send (SEND_METHODS): per-peer windows apply
        request = functions.messages.SendReactionRequest(peer=types.InputPeerChat(5), msg_id=1)
    elif case == "chat_write":  # a chat write (flood_scope.WRITE_METHODS): per-chat floods
        request = functions.messages.EditMessageRequest(peer=types.InputPeerChat(5), id=1,
                                                        message="x")
    elif case == "peer_not_a_read":  # may have run when its attempt timed out
        request = functions.channels.JoinChannelRequest(types.InputChannel(77, 5))
    elif case == "flood_sleep_threshold":
        kwargs["flood_sleep_threshold"] = 5
    ran, profile = _entry_points(client)
    sys.setprofile(profile)
    try:
        if case == "deadline_scope":
            with deadline_scope(3, guard=client):
                await bounded(client(request))
        else:
            await bounded(client(request, **kwargs))
    finally:
        sys.setprofile(None)
    assert ran[0] == "Pipeline.invoke"
    if case == "limiter_full":  # the slot was given back: the limiter waited for the next
        assert sender.times[-1] - sender.times[0] >= 10.0


async def test_the_lane_timer_cancels_a_hanging_attempt_at_the_deadline() -> None:
    client, sender, clock, _rec = _client(True, deadline=5)
    sender.outcomes = ["hang"]
    t0 = clock.now()
    with pytest.raises(DeadlineExceeded):
        await bounded(client(_request()))
    assert clock.now() - t0 == pytest.approx(5.0)
    timers = client.guard.pipeline.lane.timers
    assert timers is not None and len(timers) == 0 and timers.armed is None
    assert await bounded(client(_request())) == _STATE  # and the lane goes on


async def test_caller_cancel_in_the_lane_propagates_and_holds_nothing() -> None:
    client, sender, _clock, _rec = _client(True, deadline=5)
    sender.outcomes = ["hang"]
    task = asyncio.ensure_future(client(_request()))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(task)
    pipe = client.guard.pipeline
    assert pipe.stats()["calls"]["updates.getState"] == {"cancelled": 1}
    assert pipe.lane.timers is not None and len(pipe.lane.timers) == 0


@pytest.mark.parametrize("lane", [True, False])
async def test_a_success_resets_failures_counted_while_it_was_in_flight(lane: bool) -> None:
    # The lane admits the call with nothing counted; a failure is counted meanwhile (another
    # call's); the answer then resets the count, as the attempt's breaker record does.
    client, sender, _clock, _rec = _client(lane, breaker_failure_threshold=3)
    pipe = client.guard.pipeline
    sender.outcomes = ["hang"]
    task = asyncio.ensure_future(client(_request()))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(sender.held) == 1
    await pipe.storage.breaker_failure("acct:a1/dc:2", pipe.breaker.policy)
    assert (await pipe.breaker.state("acct:a1/dc:2")).failures == 1
    sender.held[0].set_result(_STATE)
    assert await bounded(task) == _STATE
    assert (await pipe.breaker.state("acct:a1/dc:2")).failures == 0


async def test_the_lane_of_clients_sharing_their_layers_keeps_their_stats_apart() -> None:
    from telethon_guard.clock import MonotonicClock
    from telethon_guard.storage.memory import MemoryStorage

    storage = MemoryStorage()
    clients = []
    for account in ("user:1", "user:2"):
        client = GuardedTelegramClient(StringSession(), 1, "0" * 32, storage=storage,
                                       rate_limits=((100, 1.0),))
        sender = ScriptedSender(MonotonicClock())  # type: ignore[arg-type]
        client._sender = sender
        client.session.set_dc(2, "127.0.0.1", 443)
        client._guard_link.offline = False
        client._guard_link.account = account  # logged in (the link's cached user key)
        clients.append(client)
    a, b = clients
    assert a.guard.pipeline.shared and a.guard.pipeline.layers is b.guard.pipeline.layers
    assert a.guard.pipeline.lane is not None and a.guard.pipeline.lane is not b.guard.pipeline.lane
    result, ran = await _profiled(a, _request())
    assert result == _STATE and ran == []  # the lane
    assert await bounded(a(_request())) == _STATE
    assert a.guard.pipeline.stats()["calls"] == {"updates.getState": {"ok": 2}}
    assert b.guard.pipeline.stats()["calls"] == {}
    assert a.guard.pipeline._accounts == ("user:1",) and b.guard.pipeline._accounts == ()
