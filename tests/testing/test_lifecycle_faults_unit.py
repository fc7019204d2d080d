"""Unit tests of the connection lifecycle fault rules (faults_lifecycle.py): explicit clocks,
synthetic requests and connections, no sockets, no sleeping."""

from __future__ import annotations

import dataclasses
import math

import pytest
from telethon.tl import functions

from telethon_guard.testing._types import (
    CloseConnection,
    ConnectInfo,
    Delay,
    LinkFault,
    ListenerDown,
    ReplyError,
    RequestInfo,
    Stall,
    TransportError,
)
from telethon_guard.testing.faults import (
    LOGIN_METHODS,
    ClockSkew,
    FaultPlan,
    LoginFlood,
    OnCalls,
    OnInit,
    OnLiveConnections,
    OnNewConnections,
    TimeWindow,
    flood_wait,
)
from tests.testing.test_faults_unit import Driver

BOT = "auth.importBotAuthorization"
SEND_CODE = "auth.sendCode"


def bot_login(token: str = "123:abc") -> functions.auth.ImportBotAuthorizationRequest:
    return functions.auth.ImportBotAuthorizationRequest(0, 1, "hash", token)


def send_code(phone: str) -> functions.auth.SendCodeRequest:
    from telethon.tl import types

    return functions.auth.SendCodeRequest(phone, 1, "hash", types.CodeSettings())


def init(drv: Driver, now: float, method: str = "help.getConfig", **kw: object) -> RequestInfo:
    """A request as it arrives wrapped in invokeWithLayer(initConnection(...))."""
    info = drv.info(method, now, **kw)  # type: ignore[arg-type]
    return dataclasses.replace(info, init_connection=True)


def wait_of(actions: list[object]) -> int | None:
    """The X of a FLOOD_WAIT_X decision, None if it goes through."""
    if not actions:
        return None
    (action,) = actions
    assert isinstance(action, ReplyError) and action.code == 420, actions
    return int(action.message.rsplit("_", 1)[1])


# ---- TimeWindow ----------------------------------------------------------------------------


def test_time_window_is_half_open_and_validated() -> None:
    window = TimeWindow(2.0, 3.0)
    window.bind(100.0)
    assert (window.begin, window.end) == (102.0, 105.0)
    assert [window.active(t) for t in (101.9, 102.0, 104.9, 105.0)] == [False, True, True, False]
    forever = TimeWindow(0.0, None)
    forever.bind(10.0)
    assert forever.end is None and forever.active(1e9) and not forever.active(9.0)
    for start, duration in ((-1, None), (0, 0), (0, -2), (math.nan, None), (0, math.inf)):
        with pytest.raises(ValueError):
            TimeWindow(start, duration)


# ---- OnNewConnections ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "after", "expected"),
    [
        ("close", 1, CloseConnection(abort=False, after_packets=1)),
        ("reset", 0, CloseConnection(abort=True, after_packets=0)),
        ("stall", 1, Stall()),
        ("refuse", 1, TransportError(429, "raw")),
    ],
)
def test_new_connections_fail_only_inside_the_window(
    how: str, after: int, expected: object
) -> None:
    rule = OnNewConnections(how, start=1.0, duration=3.0, after_packets=after)  # type: ignore[arg-type]
    drv = Driver(FaultPlan(rule), start=10.0)
    assert drv.connect(10.5, conn=1) is None  # before
    assert drv.connect(11.0, conn=2) == expected
    assert drv.connect(13.9, conn=3) == expected
    assert drv.connect(14.0, conn=4) is None  # after
    assert rule.fired == 2
    # requests on connections that were accepted are untouched
    assert drv.call("users.getUsers", 12.0) == []


def test_port_down_is_one_timed_action_for_the_rest_of_the_window() -> None:
    rule = OnNewConnections("down", start=2.0, duration=5.0, dc=2)
    plan = FaultPlan(rule)
    assert plan.has_timed
    plan.start(10.0)
    assert plan.due(11.0) == []
    assert plan.due(12.5) == [(2, ListenerDown(4.5))]
    assert plan.due(13.0) == []  # once
    assert plan.on_connect(ConnectInfo(13.0, 1, 2, ("127.0.0.1", 1))) is None
    forever = OnNewConnections("down")
    plan = FaultPlan(forever)
    plan.start(0.0)
    assert plan.due(0.0) == [(None, ListenerDown(None))]
    late = OnNewConnections("down", duration=1.0)
    plan = FaultPlan(late)
    plan.start(0.0)
    assert plan.due(5.0) == [] and late.fired == 0  # first polled after the window
    assert FaultPlan.script("new connections down from 1s for 2s").rules[0].timed


def test_new_connections_scope_and_validation() -> None:
    rule = OnNewConnections("refuse", code=-404, mode="framed", dc=2)
    drv = Driver(FaultPlan(rule))
    assert drv.connect(1.0, dc=1) is None
    assert drv.connect(1.0, dc=2) == TransportError(404, "framed")
    assert "OnNewConnections('refuse'" in repr(rule) and "dc=2" in repr(rule)
    with pytest.raises(ValueError, match="how"):
        OnNewConnections("drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="after_packets"):
        OnNewConnections("close", after_packets=-1)
    with pytest.raises(ValueError, match="duration"):
        OnNewConnections("close", duration=0)
    with pytest.raises(ValueError, match="mode"):
        OnNewConnections("refuse", mode="loud")


# ---- OnLiveConnections ---------------------------------------------------------------------


def test_silence_hits_connections_open_at_start_and_spares_new_ones() -> None:
    rule = OnLiveConnections("silence", start=5.0, duration=10.0)
    plan = FaultPlan(rule)
    assert plan.has_link_faults and not plan.has_timed
    plan.start(100.0)
    # connection 1 opened before the window, 2 during it
    assert plan.link_fault(104.0, 1, 1, opened_at=101.0) is None  # not started yet
    assert plan.link_fault(105.0, 1, 1, opened_at=101.0) == LinkFault("silence", 115.0)
    assert plan.link_fault(106.0, 2, 1, opened_at=105.5) is None
    assert plan.link_fault(114.9, 1, 1, opened_at=101.0) == LinkFault("silence", 115.0)
    assert plan.link_fault(115.0, 1, 1, opened_at=101.0) is None  # over: it works again
    assert rule.hit == {1} and rule.fired == 1


def test_stall_for_ever_and_by_connection_id() -> None:
    rule = OnLiveConnections("stall", conn_ids=[7], dc=1)
    plan = FaultPlan(rule)
    plan.start(0.0)
    assert plan.link_fault(50.0, 7, 1, opened_at=40.0) == LinkFault("stall", None)
    assert plan.link_fault(50.0, 8, 1, opened_at=-1.0) is None  # not named
    assert plan.link_fault(50.0, 7, 2, opened_at=40.0) is None  # other DC
    assert rule.hit == {7}


def test_silence_of_one_account() -> None:
    rule = OnLiveConnections("silence", account=42)
    plan = FaultPlan(rule)
    plan.start(0.0)
    assert plan.link_fault(1.0, 1, 1, -1.0, account=42) == LinkFault("silence", None)
    assert plan.link_fault(1.0, 2, 1, -1.0, account=43) is None
    assert plan.link_fault(1.0, 3, 1, -1.0) is None  # not logged in / no message yet
    assert FaultPlan.script("live connections silence account 42").rules[0].account == 42
    with pytest.raises(ValueError):
        OnLiveConnections("reset", account=42)
    with pytest.raises(ValueError):
        FaultPlan.script("new connections close account 42")


def test_first_link_rule_wins_and_clear_switches_the_hook_off() -> None:
    silence = OnLiveConnections("silence", conn_ids={1})
    stall = OnLiveConnections("stall")
    plan = FaultPlan(silence, stall)
    plan.start(0.0)
    assert plan.link_fault(1.0, 1, 1, opened_at=-1.0) == LinkFault("silence", None)
    assert plan.link_fault(1.0, 2, 1, opened_at=-1.0) == LinkFault("stall", None)
    plan.clear()
    assert not plan.has_link_faults and plan.link_fault(1.0, 1, 1, -1.0) is None


@pytest.mark.parametrize("how", ["close", "reset"])
def test_close_and_reset_hit_every_open_connection_once(how: str) -> None:
    rule = OnLiveConnections(how, start=2.0)  # type: ignore[arg-type]
    plan = FaultPlan(rule)
    assert plan.has_timed and not plan.has_link_faults
    plan.start(10.0)
    assert plan.due(11.9) == []
    assert plan.due(12.0) == [(None, CloseConnection(abort=how == "reset"))]
    assert plan.due(13.0) == []
    assert rule.fired == 1


def test_live_connections_validation() -> None:
    with pytest.raises(ValueError, match="how"):
        OnLiveConnections("drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no duration"):
        OnLiveConnections("reset", duration=3)
    with pytest.raises(ValueError, match="no duration"):
        OnLiveConnections("close", conn_ids=[1])
    with pytest.raises(ValueError, match="conn_ids"):
        OnLiveConnections("silence", conn_ids=[])
    with pytest.raises(ValueError, match="conn_ids"):
        OnLiveConnections("silence", conn_ids=["3"])  # type: ignore[list-item]
    assert "conn_ids=[3]" in repr(OnLiveConnections("silence", conn_ids=[3]))


def test_plan_now_counts_from_start() -> None:
    plan = FaultPlan()
    assert plan.now() == 0.0
    import time

    plan.start(time.monotonic() - 5.0)
    assert 5.0 <= plan.now() < 60.0


# ---- OnInit --------------------------------------------------------------------------------


def test_on_init_hits_only_the_init_request() -> None:
    rule = OnInit()
    drv = Driver(FaultPlan(rule))
    assert drv.plan.on_request(init(drv, 1.0)) == [Stall()]
    assert drv.call("help.getConfig", 1.0) == []  # not wrapped in initConnection
    assert drv.plan.on_request(init(drv, 2.0, "users.getUsers")) == [Stall()]
    assert rule.fired == 2


def test_on_init_flood_times_and_window() -> None:
    rule = OnInit(flood_wait(30), times=1, start=1.0, duration=2.0)
    drv = Driver(FaultPlan(rule))
    assert drv.plan.on_request(init(drv, 0.5)) == []  # before the window
    assert drv.plan.on_request(init(drv, 1.5)) == [ReplyError(420, "FLOOD_WAIT_30")]
    assert drv.plan.on_request(init(drv, 1.6)) == []  # times=1 used up
    assert rule.fired == 1
    late = OnInit(Delay(2.0), start=0.0, duration=1.0)
    drv = Driver(FaultPlan(late))
    assert drv.plan.on_request(init(drv, 3.0)) == []  # after the window
    assert "OnInit(Delay(seconds=2.0)" in repr(late)
    with pytest.raises(ValueError):
        OnInit("stall")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        OnInit(times=0)


def test_on_init_stops_evaluation_like_any_terminal_action() -> None:
    later = OnCalls("help.getConfig", None, flood_wait(5))
    drv = Driver(FaultPlan(OnInit(CloseConnection(abort=True)), later))
    assert drv.plan.on_request(init(drv, 1.0)) == [CloseConnection(abort=True)]
    assert later.fired == 0


# ---- LoginFlood ----------------------------------------------------------------------------


def test_login_flood_doubles_per_attempt_up_to_the_cap() -> None:
    rule = LoginFlood()  # 1658 s, doubling, at most one day
    drv = Driver(FaultPlan(rule))
    waits = [wait_of(drv.call(BOT, 1.0 + i, request=bot_login())) for i in range(8)]
    assert waits == [1658, 3316, 6632, 13264, 26528, 53056, 86400, 86400]
    assert [a.flood_wait for a in rule.attempts] == waits
    assert {a.login for a in rule.attempts} == {("bot", "123:abc")}
    assert rule.fired == 8


def test_login_flood_follows_the_bot_token_across_auth_keys_and_spares_others() -> None:
    rule = LoginFlood(100, factor=1.5)
    drv = Driver(FaultPlan(rule))
    # a restarted process has a new auth key (another "user" before login): same bot token
    assert wait_of(drv.call(BOT, 1.0, user=1, request=bot_login())) == 100
    assert wait_of(drv.call(BOT, 2.0, user=2, request=bot_login())) == 150
    assert wait_of(drv.call(BOT, 3.0, user=3, request=bot_login("9:other"))) == 100
    assert drv.call("users.getUsers", 4.0) == []
    # phone numbers are normalised; sendCode and signIn are flooded separately
    assert wait_of(drv.call(SEND_CODE, 5.0, request=send_code("+1 555 0100"))) == 100
    assert wait_of(drv.call(SEND_CODE, 6.0, request=send_code("15550100"))) == 150


def test_login_flood_lets_an_attempt_through_once_the_block_ran_out() -> None:
    rule = LoginFlood(10, factor=2, after=1)
    drv = Driver(FaultPlan(rule))
    assert drv.call(BOT, 0.0, request=bot_login()) == []  # after=1: the first goes through
    assert wait_of(drv.call(BOT, 1.0, request=bot_login())) == 10  # blocked until 11
    assert wait_of(drv.call(BOT, 5.0, request=bot_login())) == 20  # retried early: longer
    assert drv.call(BOT, 25.0, request=bot_login()) == []  # waited it out
    assert wait_of(drv.call(BOT, 26.0, request=bot_login())) == 40  # Telegram remembers
    assert [a.flood_wait for a in rule.attempts] == [None, 10, 20, None, 40]


def test_login_flood_validation_and_methods() -> None:
    assert LOGIN_METHODS == {"auth.sendCode", "auth.signIn", BOT}
    only_bot = LoginFlood(5, methods=BOT)
    drv = Driver(FaultPlan(only_bot))
    assert drv.call(SEND_CODE, 1.0, request=send_code("15550100")) == []
    assert "methods=['auth.importBotAuthorization']" in repr(only_bot)
    for kwargs in (
        {"seconds": 0},
        {"seconds": 10, "factor": 0.5},
        {"seconds": 10, "max_seconds": 5},
        {"seconds": 10, "after": -1},
        {"seconds": 10, "methods": "auth.signin"},
    ):
        with pytest.raises(ValueError):
            LoginFlood(**kwargs)  # type: ignore[arg-type]


# ---- ClockSkew -----------------------------------------------------------------------------


def test_clock_skew_in_its_window_and_dc() -> None:
    ahead = ClockSkew(60, start=2.0, duration=3.0)
    behind_dc2 = ClockSkew(-400, dc=2)
    plan = FaultPlan(ahead, behind_dc2)
    assert plan.has_clock_skew and not plan.has_link_faults
    plan.start(0.0)
    assert plan.clock_offset(1.0, 1) == 0.0
    assert plan.clock_offset(2.0, 1) == 60.0
    assert plan.clock_offset(2.0, 2) == -340.0  # offsets add up
    assert plan.clock_offset(5.0, 1) == 0.0
    assert plan.clock_offset(5.0, 2, judging_client=True) == -400.0


def test_clock_skew_of_replies_only() -> None:
    rule = ClockSkew(-400, judge_client=False)
    plan = FaultPlan(rule)
    plan.start(0.0)
    assert plan.clock_offset(1.0, 1) == -400.0
    assert plan.clock_offset(1.0, 1, judging_client=True) == 0.0
    assert repr(rule) == "ClockSkew(-400, start=0, duration=None, judge_client=False)"
    for bad in (0, math.nan, math.inf, True, "60"):
        with pytest.raises(ValueError):
            ClockSkew(bad)  # type: ignore[arg-type]
    plan.clear()
    assert not plan.has_clock_skew and plan.clock_offset(1.0, 1) == 0.0


# ---- script form ---------------------------------------------------------------------------


def test_script_lines_build_the_lifecycle_rules() -> None:
    plan = FaultPlan.script(
        "new connections close after 1 packet for 3s",
        "new connections refuse 404 framed from 1s for 2s dc 2",
        "live connections silence from 2s for 5s conn 3,4",
        "live connections reset from 1s",
        "init: stall",
        "init times 1: FLOOD_WAIT_30",
        "init from 2s for 3s: delay 500ms",
        "login flood 1658s x2 max 1d after 1",
        "clock skew -400s replies only dc 1",
    )
    new_close, refuse, silence, reset, stall, flood, delay, login, skew = plan.rules
    assert isinstance(new_close, OnNewConnections) and new_close.how == "close"
    assert new_close.window.duration == 3.0 and new_close.after_packets == 1
    assert isinstance(refuse, OnNewConnections) and refuse.dc == 2
    assert refuse.action == TransportError(404, "framed") and refuse.window.start == 1.0
    assert isinstance(silence, OnLiveConnections) and silence.conn_ids == {3, 4}
    assert (silence.how, silence.window.start, silence.window.duration) == ("silence", 2.0, 5.0)
    assert isinstance(reset, OnLiveConnections) and reset.how == "reset"
    assert isinstance(stall, OnInit) and stall.action == Stall()
    assert isinstance(flood, OnInit) and flood.action == ReplyError(420, "FLOOD_WAIT_30")
    assert flood.selector.times == 1
    assert isinstance(delay, OnInit) and delay.action == Delay(0.5)
    assert isinstance(login, LoginFlood)
    assert (login.seconds, login.factor, login.max_seconds, login.after) == (1658, 2, 86400, 1)
    assert isinstance(skew, ClockSkew) and skew.seconds == -400 and not skew.judge_client
    assert skew.dc == 1
