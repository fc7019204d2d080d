"""Adaptive pacing, simulated: a fake clock and a fake server enforcing a sliding-window limit.

The server (:class:`WindowServer`) imitates ``telethon_guard.testing``'s ``FloodWindow``: at most
``limit`` accepted calls per ``window`` seconds, counted at *arrival* (send time plus a varying
latency); the call that would exceed it gets ``FLOOD_WAIT_X`` with X the true seconds left
rounded up, and the method stays blocked until then (calls refused meanwhile are not counted).
Everything runs on :class:`~telethon_guard.clock.FakeClock` (auto-advancing), so a minute of
traffic takes a fraction of a second and every run is the same.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from dataclasses import dataclass, field

import pytest
from guardfakes import Recorder, bounded, make_call, make_pipeline
from telethon import errors as te

from telethon_guard.config import GuardConfig
from telethon_guard.errors import (
    CircuitOpenError,
    DeadlineExceeded,
    FloodWaitBlocked,
    GuardConfigError,
)
from telethon_guard.events import PaceLearned
from telethon_guard.fakeclock import FakeClock
from telethon_guard.pacing import (
    PACE_BUCKET,
    PACE_HORIZON,
    PACE_MIN_CALLS,
    PACE_RAMP_STEPS,
    AdaptivePacer,
    _fold,
    pre_flood_rate,
)
from telethon_guard.pipeline import Pipeline

METHOD = "messages.getHistory"
START = 1000.0  # FakeClock's default start


@dataclass
class WindowServer:
    """A sliding-window FLOOD_WAIT limit on arrival times; ``limit=None``: no limit."""

    clock: FakeClock
    limit: int | None
    window: float
    seed: int = 7
    latency: tuple[float, float] = (0.005, 0.03)
    # One-off floods with no limit behind them: (time since START, X). The first call arriving
    # at or after that time gets FLOOD_WAIT_X, and the method is blocked for X seconds.
    sporadic: list[tuple[float, int]] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)  # arrival times (since START)
    floods: list[float] = field(default_factory=list)
    _hits: deque[float] = field(default_factory=deque)
    _blocked_until: float = 0.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def set_limit(self, limit: int | None) -> None:
        self.limit = limit
        self._hits.clear()
        self._blocked_until = 0.0

    async def __call__(self) -> str:
        clock = self.clock
        await clock.sleep(self._rng.uniform(*self.latency))
        now = clock.now()
        error: Exception | None = None
        if self.sporadic and self.sporadic[0][0] <= now - START:
            x = self.sporadic.pop(0)[1]
            self._blocked_until = now + x
            error = te.FloodWaitError(None, x)
        elif now < self._blocked_until - 1e-9:
            error = te.FloodWaitError(None, math.ceil(self._blocked_until - now - 1e-9))
        elif self.limit is not None:
            hits = self._hits
            while hits and hits[0] <= now - self.window + 1e-9:
                hits.popleft()
            if len(hits) >= self.limit:
                self._blocked_until = hits[len(hits) - self.limit] + self.window
                error = te.FloodWaitError(None, math.ceil(self._blocked_until - now - 1e-9))
            else:
                hits.append(now)
        if error is None:
            self.accepted.append(now - START)
        else:
            self.floods.append(now - START)
        await clock.sleep(self._rng.uniform(*self.latency))
        if error is not None:
            raise error
        return "ok"

    def accepted_in(self, a: float, b: float) -> int:
        return sum(1 for t in self.accepted if a <= t < b)

    def floods_in(self, a: float, b: float) -> int:
        return sum(1 for t in self.floods if a <= t < b)


@dataclass
class Outcomes:
    ok: list[float] = field(default_factory=list)  # completion times (since START)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (issued, completed) of ok
    failed: list[tuple[float, Exception]] = field(default_factory=list)

    def ok_in(self, a: float, b: float) -> int:
        return sum(1 for t in self.ok if a <= t < b)

    def failed_in(self, a: float, b: float) -> list[Exception]:
        return [e for t, e in self.failed if a <= t < b]


async def _one(pipe: Pipeline, server: WindowServer, out: Outcomes, deadline: float) -> None:
    clock = server.clock
    issued = clock.now() - START
    try:
        await pipe.invoke(make_call(METHOD, deadline_at=clock.now() + deadline), server)
        out.ok.append(clock.now() - START)
        out.spans.append((issued, clock.now() - START))
    except (FloodWaitBlocked, DeadlineExceeded, CircuitOpenError) as e:
        out.failed.append((clock.now() - START, e))


async def closed_loop(pipe: Pipeline, server: WindowServer, workers: int, until: float,
                      deadline: float = 60.0) -> Outcomes:
    """``workers`` tasks calling back to back (the bench's callers) until ``until`` s."""
    out = Outcomes()
    clock = server.clock

    async def worker() -> None:
        while clock.now() - START < until:
            n = len(out.failed)
            await _one(pipe, server, out, deadline)
            if len(out.failed) > n:  # a well-behaved caller backs off a little on an error
                await clock.sleep(0.05)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return out


async def open_loop(pipe: Pipeline, server: WindowServer, rate: float, until: float,
                    deadline: float, events: list[tuple[float, object]] | None = None,
                    ) -> Outcomes:
    """A new call every ``1/rate`` s (callers that do not wait for each other) until ``until``;
    ``events``: ``(time, callable)`` run once the clock passes ``time`` (server changes)."""
    out = Outcomes()
    clock = server.clock
    todo = sorted(events or [], key=lambda e: e[0])
    tasks: list[asyncio.Task[None]] = []
    i = 0
    while True:
        t = i / rate
        if t >= until:
            break
        while todo and todo[0][0] <= t:
            fn = todo.pop(0)[1]
            assert callable(fn)
            fn()
        delay = START + t - clock.now()
        if delay > 0:
            await clock.sleep(delay)
        tasks.append(asyncio.ensure_future(_one(pipe, server, out, deadline)))
        i += 1
    await asyncio.gather(*tasks)
    return out


def _pace_rates(rec: Recorder) -> list[float]:
    return [e.count / e.period for e in rec.of(PaceLearned) if e.count]


@pytest.mark.parametrize(("limit", "window", "windows"),
                         [(20, 2.0, 40), (8, 2.0, 40), (30, 30.0, 12)])
async def test_converges_at_an_unknown_limit(limit: int, window: float, windows: int) -> None:
    """Four callers as fast as they can against an unknown (limit, window) (the bench's two
    methods and the community's ~30 getHistory per 30 s): in the second half of the run at
    least 90 % of the limit is accepted, with at most one FLOOD_WAIT."""
    pipe, clock, rec = make_pipeline(max_flood_wait=120.0)
    server = WindowServer(clock, limit, window)
    run = windows * window
    await bounded(closed_loop(pipe, server, 4, run), 60)
    rate = limit / window
    half = run / 2
    assert server.accepted_in(half, run) >= 0.9 * rate * half, (
        server.accepted_in(half, run), rate * half, rec.of(PaceLearned))
    assert server.floods_in(half, run) <= 1, server.floods
    # Never more than the limit in any window at the server (the fake enforces it) and the
    # learned pace was a sane estimate all along: not slower than 70 % of the real limit.
    assert all(r >= 0.7 * rate for r in _pace_rates(rec)), rec.of(PaceLearned)
    assert all(r <= 1.0 * rate for r in _pace_rates(rec)), rec.of(PaceLearned)


async def test_recovers_after_the_limit_disappears() -> None:
    """A pace learned at 10/s while demand is 20/s: once the limit is gone, the achieved rate is
    back at >= 90 % of the demand within 3 * pace_relax + a few seconds, and the pace is gone."""
    pipe, clock, _ = make_pipeline(max_flood_wait=60.0, pace_relax=5.0)
    server = WindowServer(clock, 20, 2.0)
    lifted = 20.0
    out = await bounded(open_loop(pipe, server, 20.0, 60.0, deadline=30.0,
                                  events=[(lifted, lambda: server.set_limit(None))]), 60)
    assert server.floods  # the pace was learned ...
    assert pipe.ledger.pacer is not None and not pipe.ledger.pacer.learned()  # ... and dropped
    # Bounded recovery: from lifted + 3 * hold (hold <= 2 * 5 s here) the rate is the demand's.
    back = lifted + 3 * 10.0 + 2.0
    assert back < 60.0 - 5.0
    assert server.accepted_in(back, 60.0) >= 0.9 * 20.0 * (60.0 - back), server.accepted[-40:]
    assert not out.failed_in(back, 60.0)


async def test_wave_does_not_leave_the_method_blocked() -> None:
    """The tester's wave: ~20 getHistory/s with deadline 9 s; the server limits the method to
    20 per 2 s from t=2 to t=7 s. The learned pace is a sane estimate of 10/s (not ~0.2/s),
    no local refusal is ever longer than the server's own wait would be, and from a bounded
    time after the wave every call succeeds again at the demanded rate."""
    pipe, clock, rec = make_pipeline(max_flood_wait=60.0)
    server = WindowServer(clock, None, 2.0)
    out = await bounded(open_loop(
        pipe, server, 20.0, 40.0, deadline=9.0,
        events=[(2.0, lambda: server.set_limit(20)), (7.0, lambda: server.set_limit(None))]),
        60)
    rates = _pace_rates(rec)
    assert rates and all(7.0 <= r <= 10.0 for r in rates[1:]), rec.of(PaceLearned)
    assert all(r <= 20.0 for r in rates)  # the first estimate may include pre-limit calls
    # No call is ever refused for minutes: a pace refusal states the call's own wait, which
    # never exceeds its deadline by more than one spacing.
    for _, e in out.failed:
        assert isinstance(e, FloodWaitBlocked | DeadlineExceeded)
        if isinstance(e, FloodWaitBlocked):
            assert not e.from_server or e.seconds <= 2
            assert (e.retry_after or 0) < 9.0 + 1.0, e
    # Every call after t=25 s succeeds; calls are completed at the demanded rate.
    assert not out.failed_in(25.0, 60.0), out.failed_in(25.0, 60.0)
    assert out.ok_in(25.0, 40.0) >= 0.9 * 20.0 * 15.0
    # The pace relaxed and went away.
    assert pipe.ledger.pacer is not None and not pipe.ledger.pacer.learned()


async def test_pace_refusal_is_for_that_call_only() -> None:
    """A pace wait beyond one call's deadline refuses that call; the next call (with room)
    re-evaluates and goes."""
    pipe, clock, rec = make_pipeline(max_flood_wait=60.0)
    server = WindowServer(clock, 10, 2.0)
    await bounded(closed_loop(pipe, server, 2, 6.0), 30)
    assert rec.of(PaceLearned)
    # Tight deadline: the spacing (~0.2 s) does not fit 1 ms.
    with pytest.raises(FloodWaitBlocked) as info:
        await bounded(pipe.invoke(make_call(METHOD, deadline_at=clock.now() + 0.001), server))
    assert info.value.from_server is False and (info.value.retry_after or 0) < 1.0
    assert await bounded(pipe.invoke(make_call(METHOD, deadline_at=clock.now() + 5.0),
                                     server)) == "ok"


# --- issue 13: a learned pace is a hypothesis (relax both ways) -------------------------------

RECOVER = 2.0  # GuardConfig.pace_recover's default: the documented bound after X
EXAMPLE_RATE = 4.0  # calls/s of the example service (/channels: 4 getFullChannel per request)


async def _sporadic_run(rate: float, floods: list[tuple[float, int]], run: float,
                        deadline: float = 2.0) -> tuple[Outcomes, WindowServer, Pipeline]:
    pipe, clock, _ = make_pipeline(max_flood_wait=60.0)
    server = WindowServer(clock, None, 1.0, sporadic=list(floods))
    out = await bounded(open_loop(pipe, server, rate, run, deadline=deadline), 60)
    return out, server, pipe


@pytest.mark.parametrize(("rate", "floods"), [
    (EXAMPLE_RATE, [(20.0, 5)]),
    (EXAMPLE_RATE, [(15.0, 3), (40.0, 5)]),
    (20.0, [(10.0, 2), (30.0, 2)]),
    (1.0, [(30.0, 8)]),
])
async def test_a_one_off_flood_costs_its_seconds_plus_the_bound(
        rate: float, floods: list[tuple[float, int]]) -> None:
    """Sporadic FLOOD_WAIT_X with no limit behind them (callers that do not wait for each
    other, deadline 2 s like the example's /channels budget): every call issued from X +
    pace_recover after a flood on goes with no pace wait (network latency only), no pace is
    left at the end, and goodput is >= 95 % of the same run without floods minus the X
    seconds Telegram asked for."""
    run = 60.0
    base, _, _ = await _sporadic_run(rate, [], run)
    out, server, pipe = await _sporadic_run(rate, floods, run)
    lost = rate * sum(x for _, x in floods)
    assert len(out.ok) >= 0.95 * len(base.ok) - lost, (len(out.ok), len(base.ok), lost)
    fired = sorted(t for t in server.floods)
    bounds = []
    for at, x in floods:
        t_f = min(t for t in fired if t >= at)
        bounds.append((t_f + x + RECOVER, x))
    for i, (free, _) in enumerate(bounds):
        until = floods[i + 1][0] if i + 1 < len(floods) else run
        after = [(a, b) for a, b in out.spans if free <= a < until]
        assert len(after) >= 0.95 * rate * (until - free) - 1, (free, until, len(after))
        # Latency is two 5-30 ms legs: anything longer would be a pace (or ledger) wait.
        slow = [(a, b) for a, b in after if b - a > 0.061]
        assert not slow, slow[:5]
    assert pipe.ledger.pacer is not None and not pipe.ledger.pacer.learned()


@pytest.mark.parametrize("seed", range(40))
def test_never_below_the_pre_flood_rate_longer_than_x_plus_bound(seed: int) -> None:
    """The property, over random rates (0.2-50 calls/s), histories (1-200 s) and waits
    (1-60 s): after a first FLOOD_WAIT_X at t that follows calls answered at a sustained rate
    (over at least X seconds), the pace allows at least the estimate and never less as time
    goes on, rises to within one step of that pre-flood rate, and is gone at t + X +
    pace_recover (no pace: nothing holds the method below any rate). After a burst shorter
    than X (no sustained rate) the estimate holds, as it always did."""
    rng = random.Random(seed)
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=RECOVER)
    rate = rng.uniform(0.2, 50.0)
    history = rng.uniform(1.0, 200.0)
    x = rng.randint(1, 60 if seed % 4 == 0 else 8)  # mostly waits shorter than the history
    end = clock.now() + history
    answered: list[float] = []
    while clock.now() < end:
        pacer.on_success("a", "m")
        answered.append(clock.now())
        clock.advance(rng.expovariate(rate))
    t_f = clock.now()
    window = pacer.on_flood("a", "m", float(x))
    if len(answered) < PACE_MIN_CALLS:
        assert window is None
        return
    assert window is not None
    estimate = 1.0 / window[0][1]
    pre = pre_flood_rate(answered, t_f, float(x))
    if pre is None:
        # The answers span less than X: a burst, no sustained rate to return to; the estimate
        # holds at once, on the probe schedule: for X, then relaxed (never below it) over
        # max(pace_recover, period), then dropped.
        assert pacer.is_held("a", "m")
        period = pacer.learned()["a/m"][1]
        clock.advance(x - 0.01)
        assert pacer.window("a", "m") == window
        span = max(RECOVER, period)
        end = t_f + x + span
        while clock.now() < end - 0.01:
            w = pacer.window("a", "m")
            if w is None:  # dropped at the relaxation's last step, 15/16 of the way
                assert clock.now() >= t_f + x + span * 15 / 16 - 1e-9
                break
            assert w[0][1] <= window[0][1] + 1e-12
            clock.advance(0.05)
        clock.advance(end + 0.01 - clock.now())
        assert pacer.window("a", "m") is None
        return
    assert not pacer.is_held("a", "m")
    floor = estimate
    step = RECOVER / PACE_RAMP_STEPS
    rates: list[float] = []
    while clock.now() < t_f + x + RECOVER + 1.0:
        w = pacer.window("a", "m")
        now = clock.now()
        if now >= t_f + x + RECOVER + 1e-6:
            assert w is None, (now - t_f, w)
            assert not pacer.is_held("a", "m")
        elif now < t_f + x + RECOVER - 1e-6:
            assert w is not None
            r = 1.0 / w[0][1]
            assert r >= floor * (1 - 1e-9), (now - t_f, r, floor)
            floor = r
            if now < t_f + x - 1e-6:
                assert r == pytest.approx(estimate)
            rates.append(r)
        clock.advance(step / 3)
    # The last ramp step is within one step of the pre-flood rate (or the estimate, if higher).
    top = max(pre, estimate)
    assert rates[-1] >= top - (top - estimate) / PACE_RAMP_STEPS - 1e-9


async def test_relaxes_on_success_tightens_only_on_repeated_floods() -> None:
    """Both directions with a fake clock and a fake sender, step by step: a first flood is a
    hypothesis (not held, gone after X + pace_recover) when the calls before it ran at a
    sustained rate; a second flood within its probation,
    after calls succeeded again, makes it hold; a flood while it holds tightens it again
    (period x PACE_BACKOFF); once a limit stops refusing, it relaxes and is dropped; a flood
    after the probation is a first flood again."""
    pipe, clock, rec = make_pipeline(max_flood_wait=120.0, pace_relax=5.0)
    pacer = pipe.ledger.pacer
    assert pacer is not None
    ok = Scripted(clock)
    for _ in range(10):  # 10 answers, 0.5 s apart: 2 calls/s for 5 s
        await pipe.invoke(make_call(METHOD), ok)
        clock.advance(0.5)
    t_f = clock.now()
    await bounded(pipe.invoke(make_call(METHOD), Scripted(clock, flood=3)))  # waits 3 s, ok
    first = rec.of(PaceLearned)[-1]
    assert (first.count, first.period) == (10, pytest.approx(5.0 + 3))
    assert not pacer.is_held("a1", METHOD)
    # Relax: from t_f + 3 the rate climbs to the pre-flood rate (2/s); gone at t_f + 3 + 2.
    clock.advance(t_f + 3 + RECOVER - clock.now() - 0.01)
    w = pacer.window("a1", METHOD)
    assert w is not None and 1 / w[0][1] > 0.9 * 2.0
    clock.advance(0.02)
    assert pacer.window("a1", METHOD) is None and rec.of(PaceLearned)[-1].count == 0
    # A repeated flood (within max(pace_relax, 2 X) after the drop, calls answered since):
    # the estimate holds.
    for _ in range(5):
        await pipe.invoke(make_call(METHOD), ok)
        clock.advance(0.1)
    await bounded(pipe.invoke(make_call(METHOD), Scripted(clock, flood=3)))
    assert pacer.is_held("a1", METHOD)
    held = rec.of(PaceLearned)[-1]
    assert held.count / held.period <= first.count / first.period + 1e-9
    # A flood while it holds: tighter (multiplicative decrease).
    clock.advance(1.0)
    pacer.on_success("a1", METHOD)
    assert pacer.on_flood("a1", METHOD, 1.0) is not None
    tighter = rec.of(PaceLearned)[-1]
    assert tighter.count / tighter.period < held.count / held.period
    # No more floods: it relaxes by time and is dropped within 3 holds.
    hold = max(5.0, 2 * tighter.period)
    clock.advance(3 * hold + 0.1)
    assert pacer.window("a1", METHOD) is None and not pacer.is_held("a1", METHOD)
    # After the probation, a flood is a first flood again: a hypothesis.
    clock.advance(60.0)
    for _ in range(5):
        pacer.on_success("a1", METHOD)
        clock.advance(1.0)
    assert pacer.on_flood("a1", METHOD, 2.0) is not None
    assert not pacer.is_held("a1", METHOD)


async def test_a_flood_on_the_first_call_after_the_wait_extends_it() -> None:
    """Two FLOOD_WAIT_5 in a row (the retry after the first wait is refused again, no call
    answered in between): the block lasted longer, the rate was not tested. The pace stays a
    hypothesis and is gone 5 + 5 + pace_recover seconds after the first flood."""
    pipe, clock, rec = make_pipeline(max_flood_wait=120.0)
    pacer = pipe.ledger.pacer
    assert pacer is not None
    ok = Scripted(clock)
    for _ in range(8):  # 1 call/s for 8 s
        await pipe.invoke(make_call(METHOD), ok)
        clock.advance(1.0)
    t_f = clock.now()
    await bounded(pipe.invoke(make_call(METHOD), Scripted(clock, flood=5, times=2)))
    assert clock.now() == pytest.approx(t_f + 10)  # waited both, then answered
    assert not pacer.is_held("a1", METHOD)
    assert len([e for e in rec.of(PaceLearned) if e.count]) == 1
    clock.advance(t_f + 10 + RECOVER - clock.now() + 1e-6)
    assert pacer.window("a1", METHOD) is None


async def test_a_real_limit_holds_a_sporadic_flood_does_not() -> None:
    """The same caller (20 calls/s, deadline 9 s) against a real limit of 10/s and against two
    one-off floods 13 s apart (beyond the probation): at the real limit the pace holds
    (repeated floods) at a sane estimate for the rest of the run with at most one flood in its
    second half; with sporadic floods no pace is left and the run's second half is served at
    the demanded rate. (The estimate of a 2 s window errs long by up to the 1 s rounding of X:
    0.6 of the limit is the floor here, as it was before issue 13.)"""
    run = 40.0
    pipe, clock, rec = make_pipeline(max_flood_wait=60.0)
    server = WindowServer(clock, 20, 2.0)
    await bounded(open_loop(pipe, server, 20.0, run, deadline=9.0), 60)
    assert pipe.ledger.pacer is not None and pipe.ledger.pacer.is_held("a1", METHOD)
    assert all(6.0 <= r <= 10.0 for r in _pace_rates(rec)), rec.of(PaceLearned)
    assert server.floods_in(run / 2, run) <= 1, server.floods
    assert server.accepted_in(run / 2, run) >= 0.6 * 10.0 * run / 2

    out, server, pipe = await _sporadic_run(20.0, [(5.0, 2), (18.0, 2)], run, deadline=9.0)
    assert pipe.ledger.pacer is not None and not pipe.ledger.pacer.learned()
    assert out.ok_in(run / 2, run) >= 0.95 * 20.0 * run / 2


@dataclass
class Scripted:
    """A fake send: ``times`` FLOOD_WAIT_``flood`` first (0: none), then "ok"."""

    clock: FakeClock
    flood: int = 0
    times: int = 1

    async def __call__(self) -> str:
        if self.flood and self.times > 0:
            self.times -= 1
            raise te.FloodWaitError(None, self.flood)
        return "ok"


def test_a_burst_holds_at_once_and_late_answers_refine_it() -> None:
    """10 answers 0.01 s apart, then FLOOD_WAIT_2: a burst shorter than X, no sustained rate
    to return to, so the estimate holds at once (not a hypothesis). 20 answers arriving during
    the wait (accepted before the refusal) refine it faster; the refined pace holds for X,
    then (the probe schedule) relaxes over max(pace_recover, period) and is dropped."""
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=RECOVER)
    for _ in range(10):
        pacer.on_success("a", "m")
        clock.advance(0.01)
    t_f = clock.now()
    first = pacer.on_flood("a", "m", 2.0)
    # A burst under a second: the window is whole seconds, X, plus PACE_JITTER (0.05 s).
    assert first == ((1, pytest.approx((2.0 + 0.05) / 10)),)
    assert pacer.is_held("a", "m")
    for _ in range(20):
        clock.advance(0.01)
        pacer.on_success("a", "m")
    refined = pacer.window("a", "m")
    assert refined is not None and refined[0][1] < first[0][1]
    clock.advance(t_f + 1.99 - clock.now())  # the end of the wait
    assert pacer.window("a", "m") == refined and pacer.is_held("a", "m")
    clock.advance(RECOVER + 0.02)  # the period (~0.7 s) is shorter than pace_recover
    assert pacer.window("a", "m") is None


def test_a_one_off_flood_on_a_paging_loop_costs_x_plus_the_probe_schedule() -> None:
    """New-user trial (issue 13): ``iter_messages`` over 2,000 messages, its third and fourth
    ``getHistory`` refused with FLOOD_WAIT_2 (two answers 10 ms apart before them). The
    burst's pace holds on the probe schedule; the second refusal, on the first call after the
    wait, extends it (the block lasted longer). The pace is gone X + max(pace_recover, period)
    after the second refusal: the old design held it for 3 holds (2,000 messages in 15.0 s
    against plain Telethon's 4.2 s)."""
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=RECOVER)
    for _ in range(2):
        pacer.on_success("a", "m")
        clock.advance(0.01)
    first = pacer.on_flood("a", "m", 2.0)
    assert first is not None and pacer.is_held("a", "m")
    period = pacer.learned()["a/m"][1]
    clock.advance(2.0)
    again = pacer.on_flood("a", "m", 2.0)  # the retry after the wait: refused again
    assert again == first
    t_second = clock.now()
    clock.advance(t_second + 2.0 + max(RECOVER, period) + 0.01 - clock.now())
    assert pacer.window("a", "m") is None


def test_a_limit_that_is_there_refuses_the_probe_and_the_burst_pace_holds() -> None:
    """The unknown-limit shape: a burst's pace relaxes after X (the probe schedule); the
    server refuses the relaxed pace (a call answered since the wait): the pace that held is
    restored on the pace_relax schedule, its hold doubled: 2 * max(pace_relax, 2 * period)."""
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=RECOVER)
    for _ in range(20):
        pacer.on_success("a", "m")
        clock.advance(0.001)
    first = pacer.on_flood("a", "m", 2.0)
    assert first is not None
    clock.advance(2.5)  # relaxing on the probe schedule
    relaxed = pacer.window("a", "m")
    assert relaxed is not None and relaxed[0][1] < first[0][1]
    pacer.on_success("a", "m")
    clock.advance(0.05)
    assert pacer.on_flood("a", "m", 1.0) == first
    clock.advance(2 * 5.0 - 0.01)
    assert pacer.window("a", "m") == first and pacer.is_held("a", "m")


def test_a_held_pace_probes_sooner_only_for_calls_it_would_refuse() -> None:
    """Issue 13 item 1 for a repeated flood (the demo's wave: the first flood's pace, dropped
    while the wave still refused, is refuted by the next FLOOD_WAIT_X and holds for
    max(pace_relax, 2 * period), then relaxes over twice that). When calls queued behind it
    would be refused (their deadline comes before the schedule serves them) and the *probe
    schedule* serves them in time, the pace goes on it: held for that X only, then relaxed
    -- never below the estimate, the rate doubling every half of max(pace_recover, period)
    -- and dropped X + max(pace_recover, period) after the flood. A flood on the probe
    schedule restores the held pace with its pace_relax schedule and makes the next probe
    wait 4 x X. Nothing changes for a call the probe cannot serve either."""
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=RECOVER)
    for _ in range(50):  # 10 calls/s for 5 s: a sustained rate
        pacer.on_success("a", "m")
        clock.advance(0.1)
    assert pacer.on_flood("a", "m", 2.0) is not None
    assert not pacer.is_held("a", "m")  # a hypothesis, gone at X + pace_recover
    assert pacer.expedite("a", "m", 10) is None  # not a held pace: nothing to expedite
    clock.advance(2.0 + RECOVER + 0.01)
    assert pacer.window("a", "m") is None
    for _ in range(5):  # calls answered again, then a FLOOD_WAIT_1 in the probation
        pacer.on_success("a", "m")
        clock.advance(0.05)
    t_r = clock.now()
    held = pacer.on_flood("a", "m", 1.0)
    assert held is not None and pacer.is_held("a", "m")
    estimate = 1.0 / held[0][1]
    _, period = pacer.learned()["a/m"]
    hold = max(5.0, 2 * period)
    assert pacer.changes_at("a", "m") == pytest.approx(t_r + hold)
    # 40 calls queued: the pace_relax schedule takes longer than the probe schedule would.
    clock.advance(0.5)
    slow = pacer.drain("a", "m", 40)
    fast = pacer.expedite("a", "m", 40)
    assert slow is not None and fast is not None and fast < slow
    assert pacer.changes_at("a", "m") == pytest.approx(t_r + hold)  # a question: no change
    assert pacer.commit_expedite("a", "m")
    assert pacer.drain("a", "m", 40) == pytest.approx(fast)
    assert pacer.expedite("a", "m", 40) is None  # on the probe schedule already
    span = max(RECOVER, period)
    rates: list[float] = []
    while (w := pacer.window("a", "m")) is not None:
        rates.append(1.0 / w[0][1])
        if clock.now() < t_r + 1.0 - 1e-9:
            assert rates[-1] == pytest.approx(estimate)  # held for X
        clock.advance(span / 64)
    # Dropped at its last relax step, within X + span of the flood.
    assert t_r + 1.0 + span * 15 / 16 - span / 64 <= clock.now() <= t_r + 1.0 + span + 1e-9
    assert rates == sorted(rates) and min(rates) == pytest.approx(estimate)
    assert rates[-1] >= 3.0 * estimate  # relaxed towards 4x (dropped there)
    # Refused again (a flood in its probation, after calls were answered): the limit is real.
    pacer.on_success("a", "m")
    clock.advance(0.1)
    t_again = clock.now()
    assert pacer.on_flood("a", "m", 1.0) == held
    assert pacer.changes_at("a", "m") == pytest.approx(t_again + 2 * hold)  # grow x 2
    clock.advance(1.5)  # past X, but a probe now waits 4 x X
    fast = pacer.expedite("a", "m", 40)
    assert fast is not None and fast >= 4.0 - 1.5 - 1e-9
    assert pacer.commit_expedite("a", "m")
    assert pacer.changes_at("a", "m") == pytest.approx(t_again + 4.0)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "2", None])
def test_pace_recover_is_validated_at_construction(bad: object) -> None:
    with pytest.raises(GuardConfigError) as info:
        GuardConfig(pace_recover=bad)
    assert "pace_recover" in str(info.value)
    with pytest.raises(ValueError):
        AdaptivePacer(FakeClock(), recover=0.0)


# --- a one-off flood at a high call rate (new-user trial: hundreds to thousands of calls/s) ---


@pytest.mark.parametrize(("rate", "x"), [(300.0, 2), (1000.0, 2), (5000.0, 2), (600.0, 5)])
def test_a_one_off_flood_at_a_high_rate_is_released_within_x_plus_the_bound(
        rate: float, x: int) -> None:
    """Steady traffic at a rate where the calls answered in the last X seconds are more than a
    few hundred (the trial: ~300/s and ~5,000/s, FLOOD_WAIT_2) is a sustained rate, not a
    burst shorter than X: the first flood's pace is a hypothesis that climbs back to that
    rate and is gone at X + pace_recover. (It was held, at 512 or 515 calls per ~X s, for
    many seconds: only the last 512 answer times were kept, and at these rates they span
    less than X.)"""
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=RECOVER)
    for _ in range(int(rate * 12)):  # 12 s of steady traffic
        pacer.on_success("a", "m")
        clock.advance(1.0 / rate)
    t_f = clock.now()
    window = pacer.on_flood("a", "m", float(x))
    assert window is not None
    assert not pacer.is_held("a", "m")
    clock.advance(x + RECOVER - 0.01)
    w = pacer.window("a", "m")
    assert w is not None and 1.0 / w[0][1] >= 0.85 * rate, (1.0 / w[0][1] if w else None)
    clock.advance(0.02)
    assert clock.now() > t_f + x + RECOVER
    assert pacer.window("a", "m") is None and not pacer.learned()


@pytest.mark.parametrize("calls", [600, 3000])
def test_a_large_burst_shorter_than_x_still_holds(calls: int) -> None:
    """The burst rule is about time, not count: more calls than the guard keeps answer times
    for, all within less than X seconds from an idle start, are a limit reached from an empty
    window: the estimate holds at once (not a hypothesis climbing to the burst's rate)."""
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=RECOVER)
    for _ in range(3):  # an old call, long before: not part of the burst
        pacer.on_success("a", "m")
        clock.advance(30.0)
    for _ in range(calls):  # the burst: 1.5 s
        pacer.on_success("a", "m")
        clock.advance(1.5 / calls)
    window = pacer.on_flood("a", "m", 2.0)
    assert window is not None and pacer.is_held("a", "m")
    assert window[0][1] > 1.5 / calls  # slower than the burst
    clock.advance(2.0 - 0.01)
    assert pacer.window("a", "m") == window


async def test_a_one_off_flood_at_500_per_second_costs_its_seconds_plus_the_bound() -> None:
    """End to end on the fake server: callers issuing 500 calls/s, one FLOOD_WAIT_2 at 6 s;
    every call issued from X + pace_recover after it goes with no pace wait (latency only) and
    no pace is left."""
    rate, x = 500.0, 2
    out, server, pipe = await _sporadic_run(rate, [(6.0, x)], 14.0)
    assert server.floods, "the flood fired"
    # The guard learns of the flood one return leg (<= 30 ms) after the server refused.
    free = server.floods[0] + x + RECOVER + 0.03
    after = [(a, b) for a, b in out.spans if free <= a]
    assert len(after) >= 0.95 * rate * (14.0 - free) - 1, len(after)
    slow = [(a, b) for a, b in after if b - a > 0.061]
    assert not slow, (len(slow), slow[:3])
    assert pipe.ledger.pacer is not None and not pipe.ledger.pacer.learned()


def test_success_counts_per_method_stay_bounded() -> None:
    """The per-bucket success counts cover PACE_HORIZON, not the whole run (issue 12: memory
    per client): after 300 s of calls at 50/s a method keeps at most
    PACE_HORIZON / PACE_BUCKET + 2 buckets, and the pre-flood rate is still measured."""
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=RECOVER)
    for _ in range(50 * 300):
        pacer.on_success("a", "m")
        clock.advance(0.02)
    p = pacer._paces[("a", "m")]
    _fold(p, len(p.history))  # the answers since the last trim, as a flood would count them
    assert len(p.b_firsts) == len(p.b_counts) <= PACE_HORIZON / PACE_BUCKET + 2
    assert sum(p.b_counts) >= 50 * PACE_HORIZON
    pacer.on_flood("a", "m", 2.0)
    assert not pacer.is_held("a", "m")


def test_a_method_answered_once_keeps_its_time_only_and_learns_as_before() -> None:
    """The first answer of a method is kept as one time (no per-method record); the second
    answer, a FLOOD_WAIT or an adopted pace makes the record seeded with it: the history and
    the success buckets are what recording both answers there would have made."""
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=RECOVER)
    t0 = clock.now()
    pacer.on_success("a", "once")
    assert pacer._paces == {}
    clock.advance(0.5)
    pacer.on_success("a", "once")
    p = pacer._paces[("a", "once")]
    _fold(p, len(p.history))  # the success buckets are counted lazily
    assert p.history == [t0, t0 + 0.5] and list(p.b_firsts) == [t0]
    assert [*p.b_counts[:-1], p.b_n] == [2]  # _fold keeps the last count in b_n
    pacer.on_success("a", "flooded")
    clock.advance(0.5)
    pacer.on_flood("a", "flooded", 3.0)
    q = pacer._paces[("a", "flooded")]
    assert q.history == [t0 + 0.5] and [*q.b_counts[:-1], q.b_n] == [1]
    assert ("a", "flooded") not in pacer._once
