"""The straight lane (telethon_guard/lane.py, ``_client_call.lane_call``) gives what the
pipeline's layers give: ``client(request)`` of a ``GuardedTelegramClient`` over a scripted
sender, once with the lane and once with it switched off (every call through
``Pipeline.invoke``), must agree on results, send times, events, ``stats()``, breaker and
ledger state; and the lane is what runs for a call no layer stops (no ``Pipeline.invoke``,
no layer entry point), while anything else goes through the layers."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from guardfakes import Recorder, bounded
from telethon import TelegramClient, functions, types
from telethon import errors as te
from telethon.sessions import StringSession

from telethon_guard import GuardedTelegramClient, guard
from telethon_guard.clock import FifoDeadlines
from telethon_guard.errors import (
    AlreadyDelivered,
    DeadlineExceeded,
    MayHaveRunError,
    SlowModeBlocked,
)
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


def _client(lane: bool, wrapped: bool = False,
            **cfg: Any) -> tuple[Any, ScriptedSender, FakeClock, Recorder]:
    """A guarded client over a :class:`ScriptedSender` (``wrapped``: a Telethon client
    through ``guard(client)``, else a ``GuardedTelegramClient``); ``lane=False`` switches
    the straight lane off (every call through ``Pipeline.invoke``)."""
    clock = FakeClock()
    rec = Recorder()
    cfg.setdefault("seed", 1)
    if wrapped:
        client = guard(TelegramClient(StringSession(), 1, "0" * 32), clock=clock,
                       events=EventBus([rec]), account="a1", **cfg)
    else:
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


_CHATS: dict[str, Any] = {
    "A": types.InputPeerChannel(77, 5), "B": types.InputPeerChat(5),
    "C": types.InputPeerChannel(78, 6), "D": types.InputPeerChannel(79, 7),
    "U": types.InputPeerUser(9, 1),
}


def _send(chat: str = "A") -> Callable[[], Any]:
    """``messages.sendMessage`` into ``chat`` (a send: ``random_id``, SEND_METHODS)."""
    return lambda: functions.messages.SendMessageRequest(
        peer=_CHATS[chat], message="hi", random_id=1234)


def _edit(chat: str = "A") -> Callable[[], Any]:
    """``messages.editMessage`` in ``chat`` (a chat write, not idempotent, not a send)."""
    return lambda: functions.messages.EditMessageRequest(peer=_CHATS[chat], id=1, message="x")


def _reaction(chat: str = "B") -> Callable[[], Any]:
    """``messages.sendReaction`` (a send without ``random_id``: SEND_METHODS)."""
    return lambda: functions.messages.SendReactionRequest(peer=_CHATS[chat], msg_id=1)


def _forward(chat: str = "B") -> Callable[[], Any]:
    """``messages.forwardMessages`` to ``chat`` (``to_peer``, a list of ``random_id``)."""
    return lambda: functions.messages.ForwardMessagesRequest(
        from_peer=_CHATS["A"], id=[1], to_peer=_CHATS[chat], random_id=[99])


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
_SEND_LIMITS: dict[str, Any] = {"rate_limits": ((100, 1.0),), "send_limits": ((5, 20.0),),
                                 "peer_limits_group": ((1, 3.0),),
                                 "peer_limits_private": ((1, 4.0),)}
# Sends and chat writes (the lane's too): their per-chat limiter windows, chat flood scopes,
# slow mode, idempotency by random_id, RANDOM_ID_DUPLICATE, the flood scope tracker.
_SCENARIOS.update({
    "send_per_chat_windows": (_SEND_LIMITS, [["ok"]] * 6),
    "send_flood_wait_fits": ({"max_flood_wait": 10},
                             [[te.FloodWaitError(None, capture=3), "ok"], ["ok"]]),
    "send_flood_too_long": ({"max_flood_wait": 10},
                            [[te.FloodWaitError(None, capture=100)], ["ok"]]),
    "send_slowmode": ({"max_flood_wait": 10},
                      [[te.SlowModeWaitError(None, capture=100)], ["ok"]]),
    "send_slowmode_fits": ({"max_flood_wait": 10},
                           [[te.SlowModeWaitError(None, capture=5), "ok"], ["ok"]]),
    "send_peer_flood": ({}, [[te.PeerFloodError(None)], ["ok"]]),
    "send_timeout_retried": ({"attempt_timeout": 2, "retry_base_delay": 0.1},
                             [["hang", "ok"], ["ok"]]),
    "send_random_id_duplicate": ({"retry_base_delay": 0.1},
                                 [[ConnectionError("reset"), te.RandomIdDuplicateError(None)],
                                  ["ok"]]),
    "send_transport_retried": ({"retry_base_delay": 0.5},
                               [[ConnectionError("reset"), "ok"],
                                [te.RpcCallFailError(None), te.FloodWaitError(None, capture=2),
                                 "ok"]]),
    "send_transport_exhausted": ({"retry_max_attempts": 2, "retry_base_delay": 0.5},
                                 [[ConnectionError("a"), ConnectionError("b")], ["ok"]]),
    "send_at_send_limit_widens": ({"send_limits": ((2, 30.0),), "max_flood_wait": 10},
                                  [["ok"], [te.FloodWaitError(None, capture=100)]]),
    "send_widened_then_narrowed": ({"flood_widen_chats": 2, "flood_narrow_after": 2,
                                    "max_flood_wait": 10},
                                   [[te.FloodWaitError(None, capture=1), "ok"],
                                    [te.FloodWaitError(None, capture=1), "ok"], ["ok"], ["ok"],
                                    [te.FloodWaitError(None, capture=100)]]),
    "edit_timeout_may_have_run": ({"attempt_timeout": 2, "retry_base_delay": 0.1},
                                  [["hang", "ok"], ["ok"]]),
    "edit_flood_wait_fits": ({"max_flood_wait": 10, **_SEND_LIMITS},
                             [["ok"], [te.FloodWaitError(None, capture=3), "ok"], ["ok"]]),
    "edit_flood_too_long": ({"max_flood_wait": 10},
                            [[te.FloodWaitError(None, capture=100)], ["ok"]]),
    "reaction_per_chat_window": (_SEND_LIMITS, [["ok"], ["ok"], ["ok"]]),
    "forward_per_chat_window": ({**_SEND_LIMITS, "max_flood_wait": 10},
                                [["ok"], [te.FloodWaitError(None, capture=3), "ok"], ["ok"]]),
})
_REQUESTS: dict[str, list[Callable[[], Any]]] = {
    "peer_read_success": [_history], "peer_read_flood_wait": [_history],
    "peer_read_flood_too_long": [_full_channel], "peer_read_slowmode": [_history],
    "peer_read_retried": [_full_channel], "peer_read_timeout_retried": [_history],
    # A, B (group chats), U (private), A again: each chat's window, then the account's sends
    "send_per_chat_windows": [_send("A"), _send("B"), _send("U"), _send("A"), _send("U"),
                              _send("C")],
    "send_flood_wait_fits": [_send("A"), _send("B")],
    "send_flood_too_long": [_send("A"), _send("B")],
    "send_slowmode": [_send("A"), _send("B")],
    "send_slowmode_fits": [_send("A")],
    "send_peer_flood": [_send("U"), _send("A")],
    "send_timeout_retried": [_send("A")],
    "send_random_id_duplicate": [_send("A")],
    "send_transport_retried": [_send("A"), _send("B")],
    "send_transport_exhausted": [_send("A")],
    "send_at_send_limit_widens": [_send("A"), _send("B")],
    "send_widened_then_narrowed": [_send("A"), _send("B"), _send("C"), _send("C"), _send("D")],
    "edit_timeout_may_have_run": [_edit("A")],
    "edit_flood_wait_fits": [_edit("A"), _edit("A"), _send("A")],
    "edit_flood_too_long": [_edit("B"), _edit("A")],
    "reaction_per_chat_window": [_reaction("B"), _reaction("B"), _reaction("A")],
    "forward_per_chat_window": [_forward("B"), _forward("B"), _forward("U")],
}


async def _play(lane: bool, cfg: dict[str, Any], steps: list[list[Any]],
                requests: list[Callable[[], Any]] = [_request],  # noqa: B006
                wrapped: bool = False) -> dict[str, Any]:
    client, sender, clock, rec = _client(lane, wrapped, **cfg)
    outcomes: list[str] = []
    for i, outcomes_of_call in enumerate(steps):
        sender.outcomes = list(outcomes_of_call)
        try:
            outcomes.append(repr(await bounded(client(requests[i % len(requests)]()))))
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
    requests = _REQUESTS.get(name, [_request])
    lane = await _play(True, cfg, steps, requests)
    chain = await _play(False, cfg, steps, requests)
    assert lane == chain
    assert lane["events"]  # RequestFinished at least: someone listens
    _check_scenario(name, lane)


@pytest.mark.parametrize("name", ["success", "flood_wait_fits", "transport_error_retried",
                                  "deadline_in_network", "send_per_chat_windows",
                                  "send_flood_too_long", "edit_timeout_may_have_run",
                                  "peer_read_slowmode"])
async def test_a_wrapped_clients_lane_gives_what_the_pipeline_gives(name: str) -> None:
    # guard(client): Telethon's __call__ -> _call(main sender, request) takes the lane too.
    cfg, steps = _SCENARIOS[name]
    requests = _REQUESTS.get(name, [_request])
    lane = await _play(True, cfg, steps, requests, wrapped=True)
    chain = await _play(False, cfg, steps, requests, wrapped=True)
    assert lane == chain
    assert lane == await _play(True, cfg, steps, requests)  # as GuardedTelegramClient's
    _check_scenario(name, lane)


async def test_a_wrapped_clients_call_runs_in_the_lane_alone() -> None:
    client, sender, _clock, _rec = _client(True, True, rate_limits=((100, 1.0),))
    for request in (_request, _send("A"), _history):
        result, ran = await _profiled(client, request())
        assert result == _STATE and ran == []
    sender.outcomes = [ConnectionError("reset")]  # resumed by the pipeline
    result, ran = await _profiled(client, _request())
    assert result == _STATE and ran[0] == "Pipeline.resume"
    # A list of requests (one pipeline call each) still goes through invoke.
    result, ran = await _profiled(client, [_request(), _request()])
    assert result == [_STATE, _STATE] and ran.count("Pipeline.invoke") == 2
    assert client.guard.pipeline.stats()["calls"] == {
        "updates.getState": {"ok": 4}, "messages.sendMessage": {"ok": 1},
        "messages.getHistory": {"ok": 1}}


def _check_scenario(name: str, got: dict[str, Any]) -> None:
    """What each scenario must show (beyond lane == invoke): the rule it exercises applied."""
    out, sends, blocked = got["outcomes"], got["sends"], got["blocked"]
    if name in ("peer_read_slowmode", "send_slowmode"):  # the failed attempt carried the peer
        assert blocked == ["acct:a1/slowmode:peer:-1000000000077"], got
        assert out[0].startswith("SlowModeBlocked") and out[2] == repr(_STATE)
    if name == "peer_read_success":  # no per-peer window on a read: three calls, no wait
        assert len(sends) == 3 and len(set(sends)) == 1
    if name == "send_per_chat_windows":
        # A, B, U at once (three chats); A again after A's 3 s group window (+ margin), U
        # after its 4 s private window; C after the account's 5 sends per 20 s.
        assert sends[:3] == [sends[0]] * 3 and 3.0 < sends[3] - sends[0] < 4.0
        assert 4.0 < sends[4] - sends[0] < 5.0 and 20.0 < sends[5] - sends[0] < 21.0
    if name in ("send_flood_wait_fits", "edit_flood_wait_fits"):  # the chat's writes blocked
        assert any("FloodWaitStarted" in e and "scope='acct:a1/writes:peer#" in e
                   for e in got["events"]), got["events"]  # (peer ids redacted)
    if name in ("send_flood_too_long", "edit_flood_too_long", "send_widened_then_narrowed"):
        chat = {"send_flood_too_long": "peer:-1000000000077", "edit_flood_too_long": "peer:-5",
                "send_widened_then_narrowed": "peer:-1000000000079"}[name]
        assert blocked == [f"acct:a1/writes:{chat}"], got  # narrowed again: D's chat only
        last = 0 if name != "send_widened_then_narrowed" else 8  # outcome, left=, per call
        assert out[last].startswith("FloodWaitBlocked"), out
    if name == "send_at_send_limit_widens":  # the lane's first send was counted
        assert blocked == ["acct:a1/method:messages.sendMessage"], got
    if name == "send_slowmode_fits":
        assert len(sends) == 3 and sends[1] - sends[0] == pytest.approx(5.0)
    if name == "send_peer_flood":
        assert out[0] == "PeerFloodError NoneType" and len(sends) == 2  # never retried
    if name == "send_timeout_retried":  # a random_id: safe to send again
        assert out[0] == repr(_STATE) and len(sends) == 3
    if name == "edit_timeout_may_have_run":  # no random_id, not a read: never re-sent
        assert out[0].startswith("MayHaveRunError") and len(sends) == 2
    if name == "send_random_id_duplicate":
        assert out[0] == "AlreadyDelivered RandomIdDuplicateError" and len(sends) == 3
    if name == "reaction_per_chat_window":  # B's window (3 s), A at once
        assert 3.0 < sends[1] - sends[0] < 4.0 and sends[2] == sends[1]
    if name == "forward_per_chat_window":  # to_peer's window: B, B (flood), then U at once
        assert any("FloodWaitStarted" in e and "scope='acct:a1/writes:peer#" in e
                   for e in got["events"]), got["events"]
        assert 3.0 < sends[1] - sends[0]


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
                                  "send_chat_window_full"])
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
    elif case == "not_a_lane_class":  # a file part (the transfer window, FLOOD_PREMIUM)
        request = functions.upload.SaveFilePartRequest(file_id=1, file_part=0, bytes=b"x")
    elif case == "send_chat_window_full":  # the account's window free, the chat's is not
        client, sender, _clock, _ = _client(True, rate_limits=((100, 1.0),),
                                            peer_limits_group=((1, 10.0),))
        pipe = client.guard.pipeline
        assert await bounded(client(_send("B")())) == _STATE
        request = _send("B")()
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
    if case in ("limiter_full", "send_chat_window_full"):  # the slot was given back: the
        assert sender.times[-1] - sender.times[0] >= 10.0  # limiter waited for the next


async def test_sends_and_chat_writes_run_in_the_lane_alone() -> None:
    # Per-chat windows and counted sends (send_limits): the lane reserves the chat's window
    # and tells the flood scope tracker, as the limiter and the flood ledger would.
    client, sender, clock, _rec = _client(True, rate_limits=((100, 1.0),),
                                          send_limits=((10, 60.0),),
                                          peer_limits_group=((1, 30.0),),
                                          peer_limits_private=((1, 30.0),))
    pipe = client.guard.pipeline
    for request in (_send("A"), _send("B"), _edit("A"), _reaction("U"), _forward("C"),
                    _edit("B"), _history):
        result, ran = await _profiled(client, request())
        assert result == _STATE and ran == [], request
    assert len(set(sender.times)) == 1  # each send to its own chat: no window waited
    assert pipe.stats()["calls"] == {
        "messages.sendMessage": {"ok": 2}, "messages.editMessage": {"ok": 2},
        "messages.sendReaction": {"ok": 1}, "messages.forwardMessages": {"ok": 1},
        "messages.getHistory": {"ok": 1}}
    assert pipe.ledger.scopes._sends["a1"] == deque([clock.now()] * 4, maxlen=10)
    lane = pipe.lane
    assert lane is not None and sorted(k[3] for k in lane.send_routes) == [
        "peer:-1000000000077", "peer:-1000000000078", "peer:-5", "peer:9"]
    # The chat's window is full now: a send to A waits in the pipeline's limiter.
    result, ran = await _profiled(client, _send("A")())
    assert result == _STATE and ran[0] == "Pipeline.invoke"
    assert sender.times[-1] - sender.times[0] >= 30.0


async def test_a_failed_lane_send_carries_its_peer_and_random_id() -> None:
    client, sender, _clock, _rec = _client(True, attempt_timeout=2, retry_base_delay=0.1)
    sender.outcomes = [te.RandomIdDuplicateError(None)]
    with pytest.raises(AlreadyDelivered) as info:
        await bounded(client(_send("A")()))
    assert info.value.random_id == 1234 and len(sender.times) == 1
    sender.outcomes = ["hang"]  # a random_id: re-sent after the attempt timeout
    ran, profile = _entry_points(client)
    sys.setprofile(profile)
    try:
        assert await bounded(client(_send("A")())) == _STATE
    finally:
        sys.setprofile(None)
    assert ran[0] == "Pipeline.resume" and len(sender.times) == 3
    sender.outcomes = ["hang"]  # no random_id, not a read: may have run, not re-sent
    with pytest.raises(MayHaveRunError):
        await bounded(client(_edit("A")()))
    assert len(sender.times) == 4
    sender.outcomes = [te.SlowModeWaitError(None, capture=100)]
    with pytest.raises(SlowModeBlocked):
        await bounded(client(_forward("B")()))  # to_peer is the chat
    assert list(client.guard.pipeline.storage.flood_table()) == ["acct:a1/slowmode:peer:-5"]


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


async def test_a_call_the_lane_hands_over_is_resolved_once() -> None:
    # Telethon resolves a request once (request.resolve -> client.get_input_entity); a call the
    # lane hands to the pipeline after resolving it (the limiter's slot not free now) or before
    # (a deadline scope) is not resolved again.
    client, sender, _clock, _rec = _client(True, rate_limits=((1, 10.0),))
    resolved: list[Any] = []
    get_input_entity = client.get_input_entity

    async def counting(peer: Any) -> Any:
        resolved.append(peer)
        return await get_input_entity(peer)

    client.get_input_entity = counting
    for _ in range(2):  # the lane; then the pipeline's limiter waits for the next slot
        assert await bounded(client(_send("A")())) == _STATE
    with deadline_scope(30, guard=client):
        assert await bounded(client(_send("B")())) == _STATE
    assert len(resolved) == 3 and len(sender.times) == 3
    assert client.guard.pipeline.stats()["calls"] == {"messages.sendMessage": {"ok": 3}}
