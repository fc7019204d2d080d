"""The liveness watchdog (telethon_guard/liveness.py): pure logic on a fake clock.

Each test drives :class:`LivenessWatchdog` with explicit ``now`` values (seconds) and the
msg_ids the sender still awaits, and checks the verdict: replace a silent connection at the
bound (not before), ping an idle one, replace when a ping goes unanswered, replace when a
request stays unanswered after a message was ignored ("very old"), never while messages
keep arriving for a request still in time. Also: the policy's validation and derivation, the
re-send rule, and the async runner with a fake sleep.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from telethon.tl import functions, types

from telethon_guard.config import GuardConfig
from telethon_guard.errors import GuardConfigError, MayHaveRunError
from telethon_guard.liveness import (
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_LIVENESS_TIMEOUT,
    LivenessPolicy,
    LivenessVerdict,
    LivenessWatchdog,
    SilentConnectionMayHaveRun,
    Verdict,
    liveness_policy,
    resend_is_safe,
    run_watchdog,
    watch_liveness,
)

POLICY = LivenessPolicy(timeout=10.0, keepalive=30.0)  # tick 1.0 s


def ticks(dog: LivenessWatchdog, start: float, end: float,
          pending: list[tuple[Any, bool]]) -> LivenessVerdict:
    """Check every tick from ``start`` (exclusive) up to ``end`` (inclusive), as the runner
    does; return the first verdict that is not OK, else the last one."""
    step = dog.policy.tick
    t = start
    verdict = LivenessVerdict(Verdict.OK)
    while t < end - 1e-9:
        t = min(end, t + step)
        verdict = dog.check(t, pending)
        if verdict.verdict is not Verdict.OK:
            return verdict
    return verdict


def test_silent_connection_is_replaced_at_the_bound_not_before() -> None:
    dog = LivenessWatchdog(POLICY, now=0.0)
    dog.received(5.0)
    assert ticks(dog, 0.0, 6.0, []).verdict is Verdict.OK
    assert dog.check(6.0, [(1, True)]).verdict is Verdict.OK  # request 1 first seen at 6
    assert ticks(dog, 6.0, 15.9, [(1, True)]).verdict is Verdict.OK
    v = dog.check(16.0, [(1, True)])
    assert v.verdict is Verdict.REPLACE and v.reason.startswith("silent")
    assert v.silent_for == pytest.approx(10.0)
    assert dog.stalls == 0


def test_a_message_received_restarts_the_silence_count() -> None:
    dog = LivenessWatchdog(POLICY, now=0.0)
    assert dog.check(1.0, [(1, True)]).verdict is Verdict.OK
    assert ticks(dog, 1.0, 9.0, [(1, True)]).verdict is Verdict.OK
    dog.received(9.0)  # e.g. an update or another reply: the connection is alive
    assert ticks(dog, 9.0, 18.9, [(1, True)]).verdict is Verdict.OK
    assert ticks(dog, 18.9, 19.0, [(1, True)]).verdict is Verdict.REPLACE


def test_requests_given_up_still_count_for_silence() -> None:
    # Telegram answers a request even when the caller stopped waiting: no answer is silence.
    dog = LivenessWatchdog(POLICY, now=0.0)
    dog.check(1.0, [(1, False)])
    assert ticks(dog, 1.0, 10.9, [(1, False)]).verdict is Verdict.OK
    assert ticks(dog, 10.9, 11.0, [(1, False)]).verdict is Verdict.REPLACE


def test_answered_requests_are_forgotten() -> None:
    dog = LivenessWatchdog(POLICY, now=0.0)
    dog.check(1.0, [(1, True)])
    dog.received(2.0)
    assert ticks(dog, 1.0, 20.0, []).verdict is Verdict.OK
    # request 2 is new at 20: counted from then, not from request 1's time
    assert dog.check(20.5, [(2, True)]).verdict is Verdict.OK
    assert ticks(dog, 20.5, 30.4, [(2, True)]).verdict is Verdict.OK
    assert ticks(dog, 30.4, 30.5, [(2, True)]).verdict is Verdict.REPLACE


def test_idle_connection_is_pinged_then_replaced_when_the_ping_is_unanswered() -> None:
    dog = LivenessWatchdog(POLICY, now=0.0)
    assert ticks(dog, 0.0, 29.0, []).verdict is Verdict.OK
    v = dog.check(30.0, [])
    assert v.verdict is Verdict.PING
    dog.pinged(30.0)
    assert dog.check(31.0, []).verdict is Verdict.OK  # no second ping while one is out
    # the ping never became a pending request (stuck before the wire): the ping rule fires
    assert ticks(dog, 31.0, 39.5, []).verdict is Verdict.OK
    v = ticks(dog, 39.5, 40.0, [])
    assert v.verdict is Verdict.REPLACE and "ping" in v.reason


def test_ping_as_pending_request_is_replaced_by_the_silence_rule() -> None:
    dog = LivenessWatchdog(POLICY, now=0.0)
    assert ticks(dog, 0.0, 30.0, []).verdict is Verdict.PING
    dog.pinged(30.0)
    dog.received(30.5)  # something else arrived: the ping counts from when it was seen
    assert dog.check(31.0, [(7, True)]).verdict is Verdict.OK
    assert ticks(dog, 31.0, 40.9, [(7, True)]).verdict is Verdict.OK
    v = ticks(dog, 40.9, 41.0, [(7, True)])
    assert v.verdict is Verdict.REPLACE and v.reason.startswith("silent")


def test_answered_ping_keeps_an_idle_connection() -> None:
    dog = LivenessWatchdog(POLICY, now=0.0)
    assert ticks(dog, 0.0, 30.0, []).verdict is Verdict.PING
    dog.pinged(30.0)
    dog.check(31.0, [(7, True)])
    dog.received(31.5)  # pong
    assert ticks(dog, 31.0, 61.0, []).verdict is Verdict.OK
    assert ticks(dog, 61.0, 62.0, []).verdict is Verdict.PING  # 30 s after the pong


def test_no_keepalive_means_an_idle_connection_is_never_pinged() -> None:
    dog = LivenessWatchdog(LivenessPolicy(timeout=10.0, keepalive=None), now=0.0)
    assert ticks(dog, 0.0, 1000.0, []).verdict is Verdict.OK


def test_a_check_after_an_event_loop_stall_is_not_a_verdict() -> None:
    # The loop was blocked 20 s with a request pending: its reply may be in the socket
    # buffer, unread. The first check after the stall says OK; the receive loop runs next.
    dog = LivenessWatchdog(POLICY, now=0.0)
    dog.check(1.0, [(1, True)])
    assert dog.check(21.0, [(1, True)]).verdict is Verdict.OK
    assert dog.stalls == 1
    dog.received(21.1)  # the buffered reply
    assert ticks(dog, 21.0, 30.0, []).verdict is Verdict.OK
    # a connection really silent through the stall is replaced one tick later
    dog2 = LivenessWatchdog(POLICY, now=0.0)
    dog2.check(1.0, [(1, True)])
    assert dog2.check(21.0, [(1, True)]).verdict is Verdict.OK
    assert dog2.check(22.0, [(1, True)]).verdict is Verdict.REPLACE


def test_request_unanswered_after_an_ignored_message_is_replaced_despite_traffic() -> None:
    # The loop-stall case: request 1's reply arrives "very old" and is ignored; other
    # messages keep arriving, so the connection is not silent, but request 1 is lost.
    dog = LivenessWatchdog(POLICY, now=0.0)
    dog.check(1.0, [(1, True)])
    dog.ignored()
    dog.received(1.5)
    assert dog.check(2.0, [(1, True), (2, True)]).verdict is Verdict.OK
    t = 2.0
    while t < 10.5:  # request 2 answered; updates keep coming (last check at 10.5)
        t += 0.5
        dog.received(t)
        assert dog.check(t, [(1, True)]).verdict is Verdict.OK, t
    dog.received(11.0)
    v = dog.check(11.0, [(1, True)])
    assert v.verdict is Verdict.REPLACE and v.reason.startswith("replies ignored")


def stays_ok_amid_traffic(dog: LivenessWatchdog, pending: list[tuple[int, bool]]) -> None:
    """A reply every 0.5 s from 1.5 s to 15 s: every check's verdict is OK."""
    t = 1.0
    while t < 15.0:
        t += 0.5
        dog.received(t)
        assert dog.check(t, pending).verdict is Verdict.OK


def test_ignored_message_does_not_condemn_requests_the_caller_gave_up() -> None:
    dog = LivenessWatchdog(POLICY, now=0.0)
    dog.check(1.0, [(1, False)])
    dog.ignored()
    stays_ok_amid_traffic(dog, [(1, False)])


def test_without_an_ignored_message_a_slow_reply_amid_traffic_is_not_replaced() -> None:
    dog = LivenessWatchdog(POLICY, now=0.0)
    dog.check(1.0, [(1, True)])
    stays_ok_amid_traffic(dog, [(1, True)])


# ---- the policy --------------------------------------------------------------------------


def test_policy_defaults_and_bounds() -> None:
    p = LivenessPolicy()
    assert (p.timeout, p.keepalive) == (DEFAULT_LIVENESS_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL)
    assert p.tick == 1.0
    assert p.silent_bound == 16.0 and p.idle_bound == 47.0
    small = LivenessPolicy(timeout=2.0, keepalive=1.0)
    assert small.tick == pytest.approx(0.2)
    assert LivenessPolicy(keepalive=None).idle_bound is None


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, "5", True, None])
def test_policy_rejects_a_bad_timeout(bad: Any) -> None:
    with pytest.raises(GuardConfigError, match="liveness_timeout"):
        LivenessPolicy(timeout=bad)


@pytest.mark.parametrize("bad", [0, -1, math.inf, "5", True])
def test_policy_rejects_a_bad_keepalive(bad: Any) -> None:
    with pytest.raises(GuardConfigError, match="keepalive_interval"):
        LivenessPolicy(keepalive=bad)


@pytest.mark.parametrize(
    ("field", "bad"),
    [("liveness_timeout", 0), ("liveness_timeout", -3), ("liveness_timeout", math.nan),
     ("keepalive_interval", 0), ("keepalive_interval", math.inf), ("liveness", "yes")],
)
def test_guard_config_rejects_bad_liveness_settings_naming_the_field(field: str,
                                                                   bad: Any) -> None:
    with pytest.raises(GuardConfigError) as info:
        GuardConfig(**{field: bad})
    assert field in str(info.value)


def test_policy_derived_from_the_config() -> None:
    assert liveness_policy(GuardConfig()) == LivenessPolicy(15.0, 30.0)
    assert liveness_policy(GuardConfig(attempt_timeout=5)) == LivenessPolicy(10.0, 30.0)
    assert liveness_policy(GuardConfig(attempt_timeout=0.5)).timeout == 4.0  # type: ignore[union-attr]
    assert liveness_policy(GuardConfig(attempt_timeout=50)).timeout == 64.0  # type: ignore[union-attr]
    assert liveness_policy(GuardConfig(liveness_timeout=2, attempt_timeout=50,
                                       keepalive_interval=None)) == LivenessPolicy(2.0, None)
    assert liveness_policy(GuardConfig(liveness=False)) is None
    assert liveness_policy(None) == LivenessPolicy()


def test_resend_rule() -> None:
    peer = types.InputPeerSelf()
    assert resend_is_safe(functions.users.GetUsersRequest([types.InputUserSelf()]))
    assert resend_is_safe(functions.messages.SendMessageRequest(peer, "hi", random_id=7))
    assert not resend_is_safe(functions.channels.CreateChannelRequest("t", "a"))
    assert resend_is_safe(functions.PingRequest(1))
    err = SilentConnectionMayHaveRun("channels.createChannel", 2.0)
    assert isinstance(err, MayHaveRunError) and "silent" in str(err)


# ---- the runner ----------------------------------------------------------------------------


async def test_runner_pings_then_replaces_on_a_fake_clock() -> None:
    clock = [0.0]
    policy = LivenessPolicy(timeout=2.0, keepalive=1.0)
    dog = LivenessWatchdog(policy, now=0.0)
    pending: list[tuple[Any, bool]] = []
    pings: list[float] = []
    replaced: list[LivenessVerdict] = []

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    def ping() -> bool:
        pings.append(clock[0])
        pending.append((99, True))  # the ping is now a request awaiting its pong
        return True

    verdict = await run_watchdog(dog, now=lambda: clock[0], pending=lambda: pending,
                                 ping=ping, replace=replaced.append, sleep=sleep)
    assert pings == [pytest.approx(1.0)]
    assert replaced == [verdict] and verdict.verdict is Verdict.REPLACE
    # pinged at 1.0, replaced when the ping is 2 s (the timeout) old
    assert clock[0] == pytest.approx(3.0)
    assert "ping" in verdict.reason
    assert clock[0] <= policy.idle_bound  # type: ignore[operator]


async def test_watches_share_one_loop_timer_ping_replace_and_cancel() -> None:
    # The sender's form: no task per connection; every watch of the loop is checked by one
    # loop timer every tick (0.01 s here), as run_watchdog would check it.
    policy = LivenessPolicy(timeout=0.1, keepalive=0.05)  # tick 0.01 s
    loop = asyncio.get_running_loop()
    tasks_before = len(asyncio.all_tasks())
    replaced: dict[str, list[LivenessVerdict]] = {"a": [], "b": [], "c": []}
    pings: dict[str, int] = {"a": 0, "b": 0, "c": 0}
    checks = {"c": 0}
    done = asyncio.Event()

    def make(name: str) -> Any:
        pending: list[tuple[Any, bool]] = []

        def ping() -> bool:
            pings[name] += 1
            pending.append((name, True))  # the ping awaits its pong, which never comes
            return True

        def replace(v: LivenessVerdict) -> None:
            replaced[name].append(v)
            if replaced["a"] and replaced["b"]:
                done.set()

        def pend() -> list[tuple[Any, bool]]:
            if name == "c":
                checks["c"] += 1
            return pending

        return watch_liveness(LivenessWatchdog(policy, time.monotonic()), now=time.monotonic,
                              pending=pend, ping=ping, replace=replace)

    a, b, c = make("a"), make("b"), make("c")
    assert a.watchdogs is b.watchdogs is c.watchdogs  # one timer for the loop and tick
    assert len(asyncio.all_tasks()) == tasks_before  # no task per watch
    await asyncio.sleep(0)
    c.cancel()
    c.cancel()  # idempotent
    seen_c = checks["c"]
    await asyncio.wait_for(done.wait(), 10)
    for name, watch in (("a", a), ("b", b)):
        assert pings[name] == 1
        assert len(replaced[name]) == 1 and replaced[name][0].verdict is Verdict.REPLACE
        assert "ping" in replaced[name][0].reason
        assert watch.verdict is replaced[name][0] and not watch.active
    assert checks["c"] == seen_c and not replaced["c"] and not c.active
    watchdogs = a.watchdogs or b.watchdogs
    assert watchdogs is None  # every watch ended: none left filed, no timer armed
    assert loop is asyncio.get_running_loop()


async def test_a_failing_check_is_logged_and_stops_only_its_watch(
        caplog: pytest.LogCaptureFixture) -> None:
    policy = LivenessPolicy(timeout=0.1, keepalive=0.05)
    replaced: list[LivenessVerdict] = []
    good_replaced = asyncio.Event()

    def boom() -> list[tuple[Any, bool]]:
        raise RuntimeError("pending() failed")

    def replace(v: LivenessVerdict) -> None:
        replaced.append(v)
        good_replaced.set()

    pending: list[tuple[Any, bool]] = [(1, True)]
    bad = watch_liveness(LivenessWatchdog(policy, time.monotonic()), now=time.monotonic,
                         pending=boom, ping=lambda: True, replace=replace)
    good = watch_liveness(LivenessWatchdog(policy, time.monotonic()), now=time.monotonic,
                          pending=lambda: pending, ping=lambda: True, replace=replace)
    await asyncio.wait_for(good_replaced.wait(), 10)
    assert not bad.active and bad.verdict is None
    assert not good.active and len(replaced) == 1 and "silent" in replaced[0].reason
    assert "liveness check failed" in caplog.text


class _ManualLoop:
    """Just what the loop's watch timer uses: ``call_later`` (recorded, run by hand) and
    ``is_closed``."""

    def __init__(self) -> None:
        self.timers: list[list[Any]] = []

    def call_later(self, delay: float, callback: Any) -> Any:
        entry: list[Any] = [delay, callback, False]

        class Handle:
            def cancel(self) -> None:
                entry[2] = True

        self.timers.append(entry)
        return Handle()

    def is_closed(self) -> bool:
        return False

    def fire_next(self) -> float:
        while self.timers:
            delay, callback, cancelled = self.timers.pop(0)
            if not cancelled:
                callback()
                return float(delay)
        raise AssertionError("no timer armed")


def test_watches_are_checked_in_slices_each_once_per_tick() -> None:
    # 1,000 connections must not cost one burst of 1,000 checks: the loop's watches are dealt
    # into slices, one slice checked every tick / WATCH_SLICES, each watch once per tick.
    from telethon_guard.liveness import WATCH_SLICES

    loop = _ManualLoop()
    policy = LivenessPolicy(timeout=10.0, keepalive=30.0)  # tick 1.0 s
    n = WATCH_SLICES + WATCH_SLICES // 2
    checks: list[int] = [0] * n
    per_firing: list[int] = []

    def counter(i: int) -> Any:
        def pending() -> list[tuple[Any, bool]]:
            checks[i] += 1
            return []
        return pending

    watches = [watch_liveness(LivenessWatchdog(policy, 0.0), now=lambda: 0.0,
                              pending=counter(i), ping=lambda: True, replace=lambda v: None,
                              loop=loop)  # type: ignore[arg-type]
               for i in range(len(checks))]
    assert len(loop.timers) == 1  # one timer for all of them
    assert loop.fire_next() == pytest.approx(policy.tick)  # the first slice: one tick on
    for _ in range(3 * WATCH_SLICES - 1):  # three ticks in all
        before = sum(checks)
        assert loop.fire_next() == pytest.approx(policy.tick / WATCH_SLICES)
        per_firing.append(sum(checks) - before)
    assert checks == [3] * len(checks)
    assert max(per_firing) <= -(-len(checks) // WATCH_SLICES)  # ceil(96 / 64) = 2
    for w in watches[:WATCH_SLICES]:  # every slice but the first half is left empty
        w.cancel()
    left = n - WATCH_SLICES  # in slices 0 .. left - 1; the timer is armed for slice 0
    delays = [loop.fire_next() for _ in range(left)]
    assert checks == [3] * WATCH_SLICES + [4] * left
    assert sum(delays) == pytest.approx(policy.tick * left / WATCH_SLICES)
    # the empty slices are skipped: the next timer is for slice 0, one tick after its last
    assert loop.fire_next() == pytest.approx(policy.tick * (WATCH_SLICES - left + 1)
                                             / WATCH_SLICES)
    assert checks == [3] * WATCH_SLICES + [5] + [4] * (left - 1)
    for w in watches[WATCH_SLICES:]:
        w.cancel()
    assert all(t[2] for t in loop.timers)  # the last cancel disarmed the timer


def test_one_watch_costs_one_timer_per_tick() -> None:
    # A loop with one connection wakes once per tick, not once per slice.
    loop = _ManualLoop()
    policy = LivenessPolicy(timeout=10.0, keepalive=30.0)  # tick 1.0 s
    checks = [0]

    def pending() -> tuple[()]:
        checks[0] += 1
        return ()

    watch = watch_liveness(LivenessWatchdog(policy, 0.0), now=lambda: 0.0, pending=pending,
                           ping=lambda: True, replace=lambda v: None,
                           loop=loop)  # type: ignore[arg-type]
    for k in range(1, 4):
        assert loop.fire_next() == pytest.approx(policy.tick)
        assert checks == [k]
    watch.cancel()
    assert all(t[2] for t in loop.timers)
