"""Unit tests of the fault plan: synthetic requests, explicit clocks, no sockets, no sleeping."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from telethon_guard.testing._types import (
    Action,
    AuthState,
    ConnectInfo,
    Delay,
    DropReply,
    ReplyError,
    RequestInfo,
    ResetConnection,
    Stall,
    TransportError,
)
from telethon_guard.testing.faults import (
    AlwaysTransportError,
    At,
    DropReplies,
    ErrorOnCalls,
    FaultPlan,
    FloodWindow,
    GlobalRate,
    Latency,
    OnCalls,
    PeerFlood,
    PremiumFlood,
    ResetOn,
    SlowMode,
    StallOn,
    Transport429OnRate,
    Transport429Storm,
    flood_wait,
)

GET_HISTORY = "messages.getHistory"
SEND = "messages.sendMessage"


class Driver:
    """Plays the server: numbers calls per (account, method) and asks the plan."""

    def __init__(self, plan: FaultPlan, start: float = 0.0) -> None:
        self.plan = plan
        self.counts: Counter[tuple[int, str]] = Counter()
        self.msg_ids = itertools.count(1)
        plan.start(start)

    def info(
        self,
        method: str,
        now: float,
        *,
        user: int = 1,
        dc: int = 1,
        conn: int = 1,
        peer: str | None = None,
        request: TLObject | None = None,
    ) -> RequestInfo:
        self.counts[(user, method)] += 1
        return RequestInfo(
            now=now,
            conn_id=conn,
            dc_id=dc,
            auth=AuthState(auth_key_id=1000 + user, auth_key=b"k" * 256, dc_id=dc, user_id=user),
            msg_id=next(self.msg_ids),
            method=method,
            request=request if request is not None else functions.help.GetConfigRequest(),
            framing="full",
            peer=peer,
            call_index=self.counts[(user, method)],
        )

    def call(self, method: str, now: float, **kw: object) -> list[Action]:
        return self.plan.on_request(self.info(method, now, **kw))  # type: ignore[arg-type]

    def connect(self, now: float, *, dc: int = 1, conn: int = 99) -> Action | None:
        return self.plan.on_connect(ConnectInfo(now, conn, dc, ("127.0.0.1", 5000 + conn)))


def err(actions: list[Action]) -> str | None:
    """The rpc_error message of a decision, or None if it executes normally."""
    assert all(isinstance(a, Delay) for a in actions[:-1])
    if actions and isinstance(actions[-1], ReplyError):
        return actions[-1].message
    assert not actions or isinstance(actions[-1], Delay), actions
    return None


# ---- the plan itself --------------------------------------------------------------------------


def test_empty_plan_executes_everything() -> None:
    plan = FaultPlan()
    drv = Driver(plan)
    assert drv.call(GET_HISTORY, 1.0) == []
    assert drv.connect(1.0) is None
    assert plan.has_timed is False
    assert plan.due(100.0) == []


def test_rules_and_seed_are_validated() -> None:
    with pytest.raises(TypeError):
        FaultPlan("not a rule")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FaultPlan(seed="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown TL method"):
        FloodWindow("messages.gethistory", 1, 1)
    with pytest.raises(ValueError):
        FloodWindow(GET_HISTORY, 0, 1)
    with pytest.raises(ValueError):
        FloodWindow(GET_HISTORY, 1, -1)
    with pytest.raises(ValueError):
        FloodWindow(GET_HISTORY, 1, 1, seconds=-3)
    with pytest.raises(ValueError):
        ErrorOnCalls(GET_HISTORY, 0, "X")
    for not_an_error in (200, 299, 600, 1):
        with pytest.raises(ValueError, match="rpc_error code"):
            ErrorOnCalls(GET_HISTORY, not_an_error, "X")
    from telethon_guard.testing.faults_lifecycle import OnInit
    with pytest.raises(ValueError, match=r"not a fault action: 'stall'; pass .*Stall\(\)"):
        OnInit("stall")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ErrorOnCalls(GET_HISTORY, 500, "INTERNAL", calls=[0])
    with pytest.raises(ValueError):
        ErrorOnCalls(GET_HISTORY, 500, "INTERNAL", probability=1.5)
    with pytest.raises(ValueError):
        Latency(None, (0.3, 0.1))
    with pytest.raises(ValueError):
        At(1, ReplyError(500, "INTERNAL"))
    with pytest.raises(ValueError):
        Transport429Storm(start=1, after_requests=3)
    with pytest.raises(ValueError):
        AlwaysTransportError(429, mode="weird")
    with pytest.raises(ValueError):
        SlowMode(10, peers=["chat 5"])
    with pytest.raises(ValueError):
        FloodWindow(GET_HISTORY, 1, 1, account=True)


def test_method_may_be_a_telethon_request_class() -> None:
    rule = FloodWindow(functions.messages.GetHistoryRequest, 1, 10)
    drv = Driver(FaultPlan(rule))
    assert drv.call(GET_HISTORY, 0.0) == []
    assert err(drv.call(GET_HISTORY, 1.0)) == "FLOOD_WAIT_9"


# ---- FloodWindow --------------------------------------------------------------------------------


def test_flood_window_true_seconds_left_and_stays_flooded() -> None:
    rule = FloodWindow(GET_HISTORY, limit=3, window=10)
    drv = Driver(FaultPlan(rule))
    for t in (0.0, 1.0, 2.0):
        assert drv.call(GET_HISTORY, t) == []
    # The 4th call within 10 s: the oldest call (t=0) leaves the window at t=10.
    assert err(drv.call(GET_HISTORY, 3.0)) == "FLOOD_WAIT_7"
    # Still flooded, with the seconds left rounded up.
    assert err(drv.call(GET_HISTORY, 5.0)) == "FLOOD_WAIT_5"
    assert err(drv.call(GET_HISTORY, 9.5)) == "FLOOD_WAIT_1"
    assert err(drv.call(GET_HISTORY, 9.999)) == "FLOOD_WAIT_1"
    # Waiting exactly the seconds announced is enough.
    assert drv.call(GET_HISTORY, 10.0) == []
    # Window now holds t=1, 2, 10: next admitted at t=11.
    assert err(drv.call(GET_HISTORY, 10.25)) == "FLOOD_WAIT_1"
    assert rule.fired == 5
    assert rule.count((1, GET_HISTORY), 10.5) == 3  # refused calls never counted


def test_flood_window_refused_calls_do_not_count() -> None:
    rule = FloodWindow(GET_HISTORY, limit=2, window=4)
    drv = Driver(FaultPlan(rule))
    assert drv.call(GET_HISTORY, 0.0) == []
    assert drv.call(GET_HISTORY, 0.0) == []
    for t in (0.5, 1.0, 2.0, 3.0, 3.9):
        assert err(drv.call(GET_HISTORY, t)) is not None
    # Had the refused calls counted, the window would still be full at t=4.
    assert drv.call(GET_HISTORY, 4.0) == []
    assert drv.call(GET_HISTORY, 4.0) == []
    assert err(drv.call(GET_HISTORY, 4.0)) == "FLOOD_WAIT_4"


def test_flood_window_fixed_seconds_blocks_exactly_that_long() -> None:
    # Issue 3: "resolveUsername flooded for 48,038 s after 50 calls".
    rule = FloodWindow("contacts.resolveUsername", 50, 86400, seconds=48038)
    drv = Driver(FaultPlan(rule))
    for i in range(50):
        assert drv.call("contacts.resolveUsername", i * 0.01) == []
    assert err(drv.call("contacts.resolveUsername", 1.0)) == "FLOOD_WAIT_48038"
    assert err(drv.call("contacts.resolveUsername", 101.0)) == "FLOOD_WAIT_47938"
    assert err(drv.call("contacts.resolveUsername", 48038.5)) == "FLOOD_WAIT_1"
    # Other methods and other accounts keep flowing.
    assert drv.call(GET_HISTORY, 2.0) == []
    assert drv.call("contacts.resolveUsername", 2.0, user=2) == []
    # After exactly 48038 s the window (86400 s) is still full: blocked again, same X.
    assert err(drv.call("contacts.resolveUsername", 48039.0)) == "FLOOD_WAIT_48038"


def test_flood_window_fixed_zero_seconds() -> None:
    drv = Driver(FaultPlan(FloodWindow(GET_HISTORY, 1, 5, seconds=0)))
    assert drv.call(GET_HISTORY, 0.0) == []
    assert err(drv.call(GET_HISTORY, 1.0)) == "FLOOD_WAIT_0"
    assert err(drv.call(GET_HISTORY, 1.0)) == "FLOOD_WAIT_0"
    assert drv.call(GET_HISTORY, 5.0) == []


def test_flood_window_scoped_per_account_and_dc() -> None:
    rule = FloodWindow(GET_HISTORY, 1, 10, account=7, dc=2)
    drv = Driver(FaultPlan(rule))
    assert drv.call(GET_HISTORY, 0.0, user=7, dc=2) == []
    assert err(drv.call(GET_HISTORY, 1.0, user=7, dc=2)) == "FLOOD_WAIT_9"
    assert drv.call(GET_HISTORY, 1.0, user=7, dc=1) == []
    assert drv.call(GET_HISTORY, 1.0, user=7, dc=1) == []
    assert drv.call(GET_HISTORY, 1.0, user=8, dc=2) == []
    assert drv.call(GET_HISTORY, 1.0, user=8, dc=2) == []


def test_flood_window_per_account_windows_are_independent() -> None:
    drv = Driver(FaultPlan(FloodWindow(GET_HISTORY, 1, 10)))
    assert drv.call(GET_HISTORY, 0.0, user=1) == []
    assert drv.call(GET_HISTORY, 0.0, user=2) == []
    assert err(drv.call(GET_HISTORY, 0.5, user=1)) == "FLOOD_WAIT_10"
    assert err(drv.call(GET_HISTORY, 0.5, user=2)) == "FLOOD_WAIT_10"


def test_flood_window_per_peer() -> None:
    drv = Driver(FaultPlan(FloodWindow(SEND, 1, 1, per_peer=True)))
    assert drv.call(SEND, 0.0, peer="peer:5") == []
    assert drv.call(SEND, 0.1, peer="peer:6") == []
    assert err(drv.call(SEND, 0.2, peer="peer:5")) == "FLOOD_WAIT_1"


# ---- GlobalRate -------------------------------------------------------------------------------


def test_global_rate_across_methods_excluding_pings() -> None:
    rule = GlobalRate(3, 1.0)
    drv = Driver(FaultPlan(rule))
    assert drv.call(GET_HISTORY, 0.0) == []
    assert drv.call(SEND, 0.1) == []
    assert drv.call("ping", 0.15) == []
    assert drv.call("users.getUsers", 0.2) == []
    assert err(drv.call("messages.getDialogs", 0.3)) == "FLOOD_WAIT_1"
    assert err(drv.call(GET_HISTORY, 0.5)) == "FLOOD_WAIT_1"  # every method blocked
    assert drv.call("ping", 0.5) == []
    assert drv.call(GET_HISTORY, 0.5, user=2) == []
    assert drv.call(GET_HISTORY, 1.0) == []
    assert rule.fired == 2


# ---- SlowMode ---------------------------------------------------------------------------------


def test_slow_mode_per_chat() -> None:
    rule = SlowMode(10)
    drv = Driver(FaultPlan(rule))
    a, b, c = "peer:-1001", "peer:-1002", "peer:-1003"
    assert drv.call(SEND, 0.0, peer=a) == []
    assert err(drv.call(SEND, 3.0, peer=a)) == "SLOWMODE_WAIT_7"
    assert drv.call(SEND, 3.0, peer=b) == []
    assert drv.call("messages.sendMedia", 3.0, peer=c) == []
    assert err(drv.call(SEND, 9.2, peer=a)) == "SLOWMODE_WAIT_1"
    assert drv.call(SEND, 4.0, peer=a, user=2) == []  # another account
    assert drv.call(GET_HISTORY, 4.0, peer=a) == []  # not a send
    assert drv.call(SEND, 10.0, peer=a) == []
    assert err(drv.call(SEND, 10.5, peer=a)) == "SLOWMODE_WAIT_10"
    assert rule.fired == 3


def test_slow_mode_selected_peers_and_forwards() -> None:
    drv = Driver(FaultPlan(SlowMode(60, peers=[-1001])))
    to_a = types.InputPeerChat(1001)  # marked id -1001
    fwd = functions.messages.ForwardMessagesRequest(
        from_peer=types.InputPeerEmpty(), id=[1], to_peer=to_a, random_id=[1]
    )
    assert drv.call("messages.forwardMessages", 0.0, request=fwd) == []
    assert err(drv.call(SEND, 1.0, peer="peer:-1001")) == "SLOWMODE_WAIT_59"
    assert drv.call(SEND, 1.0, peer="peer:-1002") == []
    assert drv.call(SEND, 1.0, peer="peer:-1002") == []


# ---- PremiumFlood -----------------------------------------------------------------------------


def test_premium_flood_on_transfers_per_dc() -> None:
    rule = PremiumFlood(8, 6)
    drv = Driver(FaultPlan(rule))
    for i in range(8):
        assert drv.call("upload.saveBigFilePart", i * 0.1) == []
    assert err(drv.call("upload.saveBigFilePart", 0.8)) == "FLOOD_PREMIUM_WAIT_6"
    # Every transfer of that account on that DC shares the pause...
    assert err(drv.call("upload.getFile", 1.5)) == "FLOOD_PREMIUM_WAIT_6"
    assert err(drv.call("upload.saveBigFilePart", 4.0)) == "FLOOD_PREMIUM_WAIT_3"
    # ...other DCs, other methods and other accounts do not.
    assert drv.call("upload.getFile", 1.5, dc=2) == []
    assert drv.call(GET_HISTORY, 1.5) == []
    assert drv.call("upload.saveBigFilePart", 1.5, user=2) == []
    assert drv.call("upload.saveBigFilePart", 6.8) == []
    assert rule.fired == 3


# ---- PeerFlood ----------------------------------------------------------------------------------


def test_peer_flood_after_n_sends() -> None:
    rule = PeerFlood(after=3)
    drv = Driver(FaultPlan(rule))
    for i in range(3):
        assert drv.call(SEND, float(i), peer=f"peer:{i + 10}") == []
    for i in range(5):
        assert drv.call(SEND, 10.0 + i, peer="peer:99") == [ReplyError(400, "PEER_FLOOD")]
    assert drv.call(GET_HISTORY, 20.0) == []
    assert drv.call(SEND, 20.0, user=2) == []
    assert rule.fired == 5
    assert rule.sent(1) == 3


# ---- call faults ------------------------------------------------------------------------------


def test_error_on_calls_times_every_and_indices() -> None:
    drv = Driver(
        FaultPlan(
            ErrorOnCalls("users.getUsers", 500, "RPC_CALL_FAIL", times=7),
            ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_22", every=2),
            OnCalls(GET_HISTORY, range(31, 41), flood_wait(7)),
        )
    )
    got = [err(drv.call("users.getUsers", float(i))) for i in range(10)]
    assert got == ["RPC_CALL_FAIL"] * 7 + [None] * 3
    got = [err(drv.call("messages.getDialogs", float(i))) for i in range(6)]
    assert got == [None, "FLOOD_WAIT_22"] * 3
    got = [err(drv.call(GET_HISTORY, float(i))) for i in range(45)]
    assert [i + 1 for i, e in enumerate(got) if e] == list(range(31, 41))
    assert set(got) == {None, "FLOOD_WAIT_7"}


def test_flood_wait_zero_four_times_then_ok() -> None:
    rule = ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_0", times=4)
    drv = Driver(FaultPlan(rule))
    got = [err(drv.call("messages.getDialogs", float(i))) for i in range(5)]
    assert got == ["FLOOD_WAIT_0"] * 4 + [None]
    assert rule.fired == 4


def test_minus_503_timeout_is_code_minus_503() -> None:
    drv = Driver(FaultPlan(ErrorOnCalls(None, -503, "Timeout", calls={1, 2})))
    assert drv.call(GET_HISTORY, 0.0) == [ReplyError(-503, "Timeout")]
    assert drv.call(GET_HISTORY, 0.0) == [ReplyError(-503, "Timeout")]
    assert drv.call(GET_HISTORY, 0.0) == []


def _probability_pattern(seed: int) -> list[bool]:
    drv = Driver(FaultPlan(ErrorOnCalls(None, 500, "INTERNAL", probability=0.3), seed=seed))
    return [bool(drv.call(GET_HISTORY, float(i))) for i in range(300)]


def test_probability_is_deterministic_given_the_seed() -> None:
    first = _probability_pattern(42)
    assert first == _probability_pattern(42)
    assert first != _probability_pattern(43)
    assert 50 < sum(first) < 130  # about 30 % of 300


def test_latency_fixed_and_random_deterministic() -> None:
    drv = Driver(FaultPlan(Latency(GET_HISTORY, 0.25)))
    assert drv.call(GET_HISTORY, 0.0) == [Delay(0.25)]
    assert drv.call(SEND, 0.0) == []

    def delays(seed: int) -> list[float]:
        d = Driver(FaultPlan(Latency(None, (0.1, 0.3)), seed=seed))
        out = []
        for i in range(20):
            (action,) = d.call(GET_HISTORY, float(i))
            assert isinstance(action, Delay)
            out.append(action.seconds)
        return out

    assert delays(1) == delays(1)
    assert delays(1) != delays(2)
    assert all(0.1 <= s <= 0.3 for s in delays(1))


def test_delays_come_first_and_the_first_terminal_wins() -> None:
    flood = FloodWindow(GET_HISTORY, 1, 10)
    later = ErrorOnCalls(GET_HISTORY, 500, "INTERNAL", calls={2, 3})
    drv = Driver(FaultPlan(Latency(None, 0.5), flood, later))
    assert drv.call(GET_HISTORY, 0.0) == [Delay(0.5)]
    assert drv.call(GET_HISTORY, 1.0) == [Delay(0.5), ReplyError(420, "FLOOD_WAIT_9")]
    assert later.fired == 0  # not asked once an earlier rule answered
    assert drv.call(GET_HISTORY, 10.0) == [Delay(0.5), ReplyError(500, "INTERNAL")]


def test_an_earlier_error_means_the_call_is_not_counted() -> None:
    flood = FloodWindow(GET_HISTORY, 1, 10)
    drv = Driver(FaultPlan(ErrorOnCalls(GET_HISTORY, 500, "INTERNAL", calls={1}), flood))
    assert drv.call(GET_HISTORY, 0.0) == [ReplyError(500, "INTERNAL")]
    assert drv.call(GET_HISTORY, 0.0) == []  # the first call never executed
    assert err(drv.call(GET_HISTORY, 0.0)) == "FLOOD_WAIT_10"


@pytest.mark.parametrize(
    ("fault", "counted"),
    [
        (DropReplies(GET_HISTORY, calls={1}), True),
        (ResetOn(GET_HISTORY, calls={1}, after_execute=True), True),
        (ResetOn(GET_HISTORY, calls={1}), False),
        (StallOn(GET_HISTORY, calls={1}), False),
    ],
)
def test_what_counts_as_an_execution(fault: OnCalls, counted: bool) -> None:
    flood = FloodWindow(GET_HISTORY, 1, 10)
    drv = Driver(FaultPlan(fault, flood))
    first = drv.call(GET_HISTORY, 0.0)
    assert first == [fault.action]
    second = drv.call(GET_HISTORY, 1.0)
    assert (err(second) == "FLOOD_WAIT_9") is counted


def test_drop_reset_stall_actions() -> None:
    drv = Driver(
        FaultPlan(
            DropReplies(GET_HISTORY, calls={2}),
            ResetOn(SEND, calls=1, after_execute=True),
            StallOn("users.getUsers", every=3),
        )
    )
    assert [drv.call(GET_HISTORY, 0.0) for _ in range(3)] == [[], [DropReply()], []]
    assert drv.call(SEND, 0.0) == [ResetConnection(after_execute=True)]
    assert [drv.call("users.getUsers", 0.0) for _ in range(3)] == [[], [], [Stall()]]


# ---- transport --------------------------------------------------------------------------------


def test_transport_429_on_rate_once() -> None:
    rule = Transport429OnRate(5, 1.0, once=True)
    drv = Driver(FaultPlan(rule))
    for i in range(5):
        assert drv.call(GET_HISTORY, i * 0.1, conn=1) == []
    assert drv.call(GET_HISTORY, 0.5, conn=2) == []  # another connection
    assert drv.call(GET_HISTORY, 0.6, conn=1) == [TransportError(429, "framed")]
    for i in range(10):
        assert drv.call(GET_HISTORY, 1.0 + i * 0.01, conn=3) == []  # once: never again
    assert rule.fired == 1


def test_transport_429_on_rate_every_time_counts_refused_requests_and_refuses() -> None:
    rule = Transport429OnRate(2, 1.0, once=False, mode="raw", refuse_seconds=3)
    flood = FloodWindow(GET_HISTORY, 1, 100)
    drv = Driver(FaultPlan(rule, flood))  # transport first: it sees packets, not outcomes
    assert drv.call(GET_HISTORY, 0.0, conn=1) == []
    assert err(drv.call(GET_HISTORY, 0.1, conn=1)) == "FLOOD_WAIT_100"
    # The third packet in 1 s: the transport counted the refused one too.
    assert drv.call(GET_HISTORY, 0.2, conn=1) == [TransportError(429, "raw")]
    assert drv.connect(1.0) == TransportError(429, "raw")
    assert drv.connect(3.3) is None
    assert drv.connect(1.0, dc=2) is None
    for t in (4.0, 4.1):
        drv.call(SEND, t, conn=5)
    assert drv.call(SEND, 4.2, conn=5) == [TransportError(429, "raw")]
    assert rule.fired == 3


def test_storm_at_time_hits_live_connections_once_and_refuses_new_ones() -> None:
    storm = Transport429Storm(start=2, duration=5)
    plan = FaultPlan(storm)
    drv = Driver(plan, start=100.0)
    assert plan.has_timed
    assert drv.connect(101.0) is None
    assert plan.due(101.9) == []
    assert plan.due(102.0) == [(None, TransportError(429, "framed"))]
    assert plan.due(102.5) == []  # each once
    assert drv.connect(103.0) == TransportError(429, "framed")
    assert drv.call(GET_HISTORY, 104.0) == [TransportError(429, "framed")]
    assert drv.connect(107.0) is None
    assert drv.call(GET_HISTORY, 107.0) == []
    assert storm.fired == 3


def test_storm_without_refuse_and_per_dc() -> None:
    storm = Transport429Storm(start=0, duration=5, refuse=False, dc=2)
    plan = FaultPlan(storm)
    drv = Driver(plan)
    assert plan.due(0.0) == [(2, TransportError(429, "framed"))]
    assert drv.connect(1.0, dc=2) is None
    assert drv.call(GET_HISTORY, 1.0, dc=2) == [TransportError(429, "framed")]
    assert drv.call(GET_HISTORY, 1.0, dc=1) == []


def test_storm_on_the_nth_request() -> None:
    storm = Transport429Storm(duration=10, after_requests=3, mode="raw")
    plan = FaultPlan(storm)
    drv = Driver(plan)
    assert drv.call(GET_HISTORY, 1.0) == []
    assert drv.call(GET_HISTORY, 2.0) == []
    assert plan.due(2.5) == []
    assert drv.call(GET_HISTORY, 3.0) == [TransportError(429, "raw")]
    assert plan.due(3.01) == [(None, TransportError(429, "raw"))]
    assert drv.connect(12.0) == TransportError(429, "raw")
    assert drv.connect(13.0) is None


def test_always_transport_error_raw_for_a_while() -> None:
    rule = AlwaysTransportError(-429, duration=30)
    drv = Driver(FaultPlan(rule))
    for t in (0.0, 10.0, 29.9):
        assert drv.connect(t) == TransportError(429, "raw")
    assert drv.connect(30.0) is None
    forever = AlwaysTransportError(404)
    drv = Driver(FaultPlan(forever))
    assert drv.connect(1e6) == TransportError(404, "raw")
    assert drv.call(GET_HISTORY, 1e6) == [TransportError(404, "raw")]


def test_storm_scoped_to_an_account_hits_only_its_requests() -> None:
    storm = Transport429Storm(start=0, duration=60, account=5)
    plan = FaultPlan(storm)
    drv = Driver(plan)
    assert plan.due(0.0) == []
    assert drv.connect(1.0) is None
    assert drv.call(GET_HISTORY, 1.0, user=5) == [TransportError(429, "framed")]
    assert drv.call(GET_HISTORY, 1.0, user=6) == []


# ---- script mode --------------------------------------------------------------------------------


def test_timed_actions_come_once_in_time_order() -> None:
    plan = FaultPlan(At(5, ResetConnection()), At(2, Stall(), dc=2), At(5, Stall()))
    Driver(plan, start=10.0)
    assert plan.due(11.0) == []
    assert plan.due(20.0) == [(2, Stall()), (None, ResetConnection()), (None, Stall())]
    assert plan.due(30.0) == []
    assert [rule.fired for rule in plan.rules] == [1, 1, 1]


def test_at_with_refuse_seconds_refuses_new_connections() -> None:
    plan = FaultPlan(At(2, TransportError(429, "framed", refuse_seconds=5)))
    drv = Driver(plan)
    assert drv.connect(2.5) is None  # not emitted yet
    assert plan.due(2.5) == [(None, TransportError(429, "framed", refuse_seconds=5))]
    assert drv.connect(3.0) == TransportError(429, "framed")
    assert drv.connect(7.5) is None


def test_plan_starts_lazily_and_rules_can_change_at_runtime() -> None:
    plan = FaultPlan()
    plan.add(At(1, Stall()))
    assert plan.due(50.0) == []  # lazily started at 50
    assert plan.due(51.0) == [(None, Stall())]
    drv = Driver(plan, start=100.0)
    plan.add(ErrorOnCalls(GET_HISTORY, 500, "INTERNAL"))
    assert drv.call(GET_HISTORY, 100.0) == [ReplyError(500, "INTERNAL")]
    plan.clear()
    assert drv.call(GET_HISTORY, 100.0) == []
    assert plan.rules == ()


def test_script_text_form() -> None:
    plan = FaultPlan.script(
        "at 2s: transport 429 refuse 5s",
        "messages.getHistory calls 31-40: FLOOD_WAIT_7\n# comment\n",
        seed=3,
    )
    storm, calls = plan.rules
    assert isinstance(storm, Transport429Storm) and storm.start == 2 and storm.duration == 5
    assert isinstance(calls, OnCalls) and calls.action == ReplyError(420, "FLOOD_WAIT_7")
    drv = Driver(plan)
    got = [err(drv.call(GET_HISTORY, 0.0)) for _ in range(41)]
    assert [i + 1 for i, e in enumerate(got) if e] == list(range(31, 41))
    assert plan.due(2.0) == [(None, TransportError(429, "framed"))]
    assert drv.connect(6.9) == TransportError(429, "framed")


@pytest.mark.parametrize(
    ("line", "kind", "check"),
    [
        ("messages.getDialogs every 2: FLOOD_WAIT_22", ErrorOnCalls, None),
        ("users.getUsers times 7: RPC_CALL_FAIL", OnCalls, ReplyError(500, "RPC_CALL_FAIL")),
        ("* p 10%: -503 Timeout", OnCalls, ReplyError(-503, "Timeout")),
        ("* calls 2: Timeout", OnCalls, ReplyError(-503, "Timeout")),
        ("messages.sendMessage calls 3: reset after execute", OnCalls, ResetConnection(True)),
        ("messages.getHistory calls 51-: drop", OnCalls, DropReply()),
        ("messages.getHistory calls 1,3: stall account 5", OnCalls, Stall()),
        ("messages.getHistory calls 1: delay 500ms", OnCalls, Delay(0.5)),
        ("messages.getHistory calls 1: transport 429 raw", OnCalls, TransportError(429, "raw")),
        ("messages.sendMessage calls 1: 400 CHAT_WRITE_FORBIDDEN", OnCalls, None),
        ("contacts.resolveUsername limit 50/1d: FLOOD_WAIT_48038", FloodWindow, None),
        ("messages.sendMessage limit 20/1m per peer", FloodWindow, None),
        ("global limit 30/1s", GlobalRate, None),
        ("slowmode 60s peer -1001 -1002", SlowMode, None),
        ("peer_flood after 20", PeerFlood, None),
        ("premium 8/s: FLOOD_PREMIUM_WAIT_6", PremiumFlood, None),
        ("latency messages.getHistory 0.1s-0.3s dc 2", Latency, None),
        ("transport 429 above 100/1s always raw refuse 5s", Transport429OnRate, None),
        ("always transport 404 raw for 30s from 2s", AlwaysTransportError, None),
        ("at 3s: stall dc 2", At, None),
        ("at 1m: transport 429 raw", At, None),
    ],
)
def test_script_lines(line: str, kind: type, check: Action | None) -> None:
    (rule,) = FaultPlan.script(line).rules
    assert isinstance(rule, kind) or (kind is ErrorOnCalls and isinstance(rule, OnCalls))
    if check is not None:
        assert isinstance(rule, OnCalls) and rule.action == check


def test_script_details() -> None:
    (flood,) = FaultPlan.script("contacts.resolveUsername limit 50/1d: FLOOD_WAIT_48038").rules
    assert isinstance(flood, FloodWindow)
    assert (flood.limit, flood.window, flood.seconds) == (50, 86400.0, 48038)
    (premium,) = FaultPlan.script("premium 8/s: FLOOD_PREMIUM_WAIT_6").rules
    assert isinstance(premium, PremiumFlood)
    assert (premium.limit, premium.window, premium.seconds) == (8, 1.0, 6)
    (always,) = FaultPlan.script("always transport -404 raw for 30s from 2s").rules
    assert isinstance(always, AlwaysTransportError)
    assert (always.action, always.start, always.duration) == (TransportError(404, "raw"), 2, 30)
    (scoped,) = FaultPlan.script("messages.getHistory calls 1,3: stall account 5 dc 2").rules
    assert (scoped.account, scoped.dc) == (5, 2)


@pytest.mark.parametrize(
    "line",
    [
        "messages.gethistory calls 1: FLOOD_WAIT_7",  # typo in the method
        "messages.getHistory calls x: FLOOD_WAIT_7",
        "messages.getHistory calls 1: SOMETHING_ODD",  # no known code
        "messages.getHistory calls 1",  # no action
        "at 2s: drop",
        "at soon: stall",
        "slowmode 60s: FLOOD_WAIT_1",
        "premium 8/s: FLOOD_WAIT_6",
        "peer_flood 20",
        "* limit 5/1s",
        "messages.getHistory calls 1: reset sideways",
        # connection lifecycle lines (faults_lifecycle.py)
        "new connections",  # no how
        "new connections drop",
        "new connections close for",
        "new connections close account 5",
        "live connections silence after 1",
        "live connections reset for 3s",  # close / reset take no duration
        "live connections silence: stall",
        "init: nonsense",
        "init always: stall",
        "login 1658s",
        "login flood 1658s x0.5",
        "clock 60s",
        "clock skew 0s",
        "clock skew +60s account 3",
    ],
)
def test_script_rejects_bad_lines_naming_them(line: str) -> None:
    with pytest.raises(ValueError) as info:
        FaultPlan.script(line)
    assert repr(line) in str(info.value)


# ---- scenarios of issue 3, each a line or two ----------------------------------------------------


def test_issue3_scenarios_are_one_liners() -> None:
    scenarios = [
        ["at 0s: transport 429 refuse 10s"],
        ["always transport 429 raw for 30s"],
        ["always transport 404 raw"],
        ["messages.getDialogs every 2: FLOOD_WAIT_22"],
        ["messages.getDialogs calls 1: FLOOD_WAIT_120"],
        ["premium 8/s: FLOOD_PREMIUM_WAIT_6"],
        ["slowmode 60s peer -1001"],
        ["messages.getDialogs times 4: FLOOD_WAIT_0"],
        ["users.getUsers times 7: RPC_CALL_FAIL"],
        ["users.getUsers times 2: -503 Timeout"],
        ["messages.getHistory limit 30/30s: FLOOD_WAIT_7", "messages.getHistory calls 40: reset"],
        ["contacts.resolveUsername limit 50/1d: FLOOD_WAIT_48038"],
        ["messages.sendMessage calls 1: reset after execute"],
        ["messages.getHistory calls 1: drop"],
        ["peer_flood after 20"],
    ]
    for lines in scenarios:
        assert FaultPlan.script(*lines).rules


def test_every_method_means_rpc_methods_not_pings() -> None:
    drv = Driver(
        FaultPlan(
            Latency(None, 0.1), ErrorOnCalls(None, 500, "INTERNAL"), stall_ping := StallOn("ping")
        )
    )
    assert drv.call("ping", 0.0) == [Stall()]
    assert drv.call(GET_HISTORY, 0.0) == [Delay(0.1), ReplyError(500, "INTERNAL")]
    assert stall_ping.fired == 1
