"""The pacer's success counts per bucket, counted lazily (``pacing._fold``), are the counts the
eager rule gives: an answer at ``t`` joins the last bucket (first answer ``first``) when
``t - first < PACE_BUCKET`` and not ``first < since <= t``, else opens a new one; buckets that
began more than ``PACE_HORIZON + PACE_BUCKET`` s before a new one are dropped.

The reference below is that rule applied to every answer as it is recorded, with the pacer's
``since`` at that moment (it moves only on a FLOOD_WAIT or an adopted pace). Random traffic
(bursts, steady rates, gaps around a bucket's length and beyond the horizon) with FLOOD_WAITs
and adopted paces in between, folded at random moments and read at the end: both agree, and so
does the pre-flood rate the buckets give.
"""

from __future__ import annotations

import random
from array import array

import pytest

from telethon_guard.fakeclock import FakeClock
from telethon_guard.pacing import (
    PACE_BUCKET,
    PACE_HORIZON,
    PACE_RATE_LOOKBACK,
    AdaptivePacer,
    _bucket_rate,
    _fold,
)


class EagerBuckets:
    """The bucket rule applied per answer (what ``on_success`` did before the lazy fold)."""

    def __init__(self) -> None:
        self.firsts: list[float] = []
        self.counts: list[int] = []

    def add(self, t: float, since: float) -> None:
        first = self.firsts[-1] if self.firsts else float("-inf")
        if t - first < PACE_BUCKET and not first < since <= t:
            self.counts[-1] += 1
            return
        self.firsts.append(t)
        self.counts.append(1)
        old = 0
        while self.firsts[old] < t - PACE_HORIZON - PACE_BUCKET:
            old += 1
        del self.firsts[:old]
        del self.counts[:old]


def _buckets(pacer: AdaptivePacer, key: tuple[str, str]) -> tuple[list[float], list[int]]:
    p = pacer._paces[key]
    _fold(p, len(p.history))
    counts = list(p.b_counts)
    if counts:
        counts[-1] = p.b_n
    return list(p.b_firsts), counts


def _gap(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.5:
        return rng.uniform(0.0, 0.004)  # a burst / a high rate
    if r < 0.8:
        return rng.uniform(0.0, 0.2)
    if r < 0.97:
        return rng.choice([PACE_BUCKET, rng.uniform(0.9, 1.1), 0.5, 0.25])  # bucket edges
    return rng.uniform(2.0, PACE_HORIZON * 1.5)  # a pause, beyond the horizon at times


@pytest.mark.parametrize("seed", range(24))
def test_lazy_buckets_equal_the_eager_rule(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=1.0, recover=0.5)
    key = ("a", "m")
    ref = EagerBuckets()
    answers = 0
    moved = 0  # FLOOD_WAITs and adopted paces that moved ``since``
    straddle = False

    def answer() -> None:
        nonlocal answers
        since = pacer._paces[key].since if key in pacer._paces else float("-inf")
        pacer.on_success("a", "m")
        ref.add(clock.now(), since)
        answers += 1

    for _ in range(rng.randrange(3000, 9000)):
        r = rng.random()
        if straddle:  # a bucket opened in the wait that the wait's end splits
            straddle = False
            since = pacer._paces[key].since
            if since - 0.1 > clock.now():
                clock.advance(since - rng.uniform(0.1, 0.9) - clock.now())
                answer()
                clock.advance(since - clock.now())
                for _ in range(rng.randrange(1, 4)):
                    answer()
                    clock.advance(rng.uniform(0.0, 0.01))
                r = rng.choice([r, 0.003, 0.005])  # at times a flood or an adopted pace next
        else:
            clock.advance(_gap(rng))
        if r < 0.004 and answers >= 2:
            before = pacer._paces[key].since
            pacer.on_flood("a", "m", float(rng.choice([1, 2, 5])))
            moved += pacer._paces[key].since != before
            straddle = rng.random() < 0.7
        elif r < 0.006 and answers >= 2:
            before = pacer._paces[key].since
            pacer.adopt("a", "m", {  # another process's pace, its wait ending soon
                "count": 5, "base": 1.0, "held": False, "pre": 10.0, "flood_at": 0.0,
                "since": rng.uniform(0.2, 2.0), "hold": 0.0, "grow": 1.0, "widest": 1.0,
                "wait": 1.0})
            moved += pacer._paces[key].since != before
            straddle = rng.random() < 0.7
        elif r < 0.02 and answers >= 2:
            _fold(pacer._paces[key], rng.randrange(len(pacer._paces[key].history) + 1))
        else:
            answer()
    assert answers > 1000 and moved >= 5
    firsts, counts = _buckets(pacer, key)
    assert firsts == ref.firsts
    assert counts == ref.counts
    now = clock.now()
    p = pacer._paces[key]
    for seconds in (1.0, 2.0, 20.0):
        start = now - PACE_HORIZON
        p.b_counts[-1] = p.b_n
        assert _bucket_rate(p.b_firsts, p.b_counts, start, now, seconds) == _bucket_rate(
            array("d", ref.firsts), array("q", ref.counts), start, now, seconds)


def test_a_flood_counts_the_answers_not_yet_folded() -> None:
    """The pre-flood rate at a rate above PACE_HISTORY per lookback reads the buckets: the
    answers since the last trim are in them when the FLOOD_WAIT arrives (a one-off flood at
    2,000 calls/s is a hypothesis that climbs back to about that rate)."""
    clock = FakeClock(auto_advance=False)
    pacer = AdaptivePacer(clock, relax=5.0, recover=2.0)
    rate = 2000.0
    for _ in range(int(rate * PACE_RATE_LOOKBACK) + 100):  # ends between two trims
        pacer.on_success("a", "m")
        clock.advance(1.0 / rate)
    p = pacer._paces[("a", "m")]
    assert p.folded < len(p.history)  # some answers not folded yet
    assert pacer.on_flood("a", "m", 2.0) is not None
    assert p.folded == len(p.history)
    assert not pacer.is_held("a", "m")
    assert p.pre == pytest.approx(rate, rel=0.01)
