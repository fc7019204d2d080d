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

from telethon_guard.clock import FakeClock
from telethon_guard.errors import CircuitOpenError, DeadlineExceeded, FloodWaitBlocked
from telethon_guard.events import PaceLearned
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
        if self.limit is not None:
            hits = self._hits
            while hits and hits[0] <= now - self.window + 1e-9:
                hits.popleft()
            if now < self._blocked_until - 1e-9:
                error = te.FloodWaitError(None, math.ceil(self._blocked_until - now - 1e-9))
            elif len(hits) >= self.limit:
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
    failed: list[tuple[float, Exception]] = field(default_factory=list)

    def ok_in(self, a: float, b: float) -> int:
        return sum(1 for t in self.ok if a <= t < b)

    def failed_in(self, a: float, b: float) -> list[Exception]:
        return [e for t, e in self.failed if a <= t < b]


async def _one(pipe: Pipeline, server: WindowServer, out: Outcomes, deadline: float) -> None:
    clock = server.clock
    try:
        await pipe.invoke(make_call(METHOD, deadline_at=clock.now() + deadline), server)
        out.ok.append(clock.now() - START)
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
