"""Adaptive pacing: a method's pace learned from its FLOOD_WAITs, held only while the evidence
lasts (used by :class:`~telethon_guard.flood.FloodLedger`, applied by the rate limiter as the
window ``acct:<a>/pace:<m>``). All times are seconds on the guard's monotonic clock.

Telegram does not publish its limits, but a FLOOD_WAIT_X at time ``t`` says "the calls I
accepted lately were the most I allow" -- or it was a one-off (a burst, a server-side hiccup,
a limit that changed). A pace learned from one FLOOD_WAIT is therefore a *hypothesis* that is
tested and dropped, and only repeated FLOOD_WAITs make it stick. This is AIMD on the method's
allowed rate (additive increase while calls succeed, multiplicative decrease on a flood):

**The estimate** (what the server was seen to accept). A pace of method M is ``n`` calls per
``span + X`` seconds: the ``n`` most recent calls of M answered within the last
``PACE_HORIZON`` (120) s and since the last wait (at least 2), ``span`` seconds from the oldest
of them to ``t``, with ``n`` chosen for the highest such rate (a lookback into a quiet stretch,
such as an outage, would only average the rate down). For a sliding-window limit ``(L, W)``
reached from an empty window that is ``(L, ~W)``: the oldest accepted call leaves the server's
window ``X`` seconds later (``X`` is rounded up to whole seconds, so the estimate errs long).
A pace is applied as evenly spaced calls, one per ``(span + X) / n`` seconds, starting after the
calls it was learned from: no second burst after the wait.

**First flood: a hypothesis, back to the pre-flood rate within X + pace_recover.** A FLOOD_WAIT
with no pace in force (and none in probation, below) learns the estimate and the *pre-flood
rate* ``r0`` (:func:`pre_flood_rate`): ``n / span`` over the ``n`` calls of M answered in the
last ``max(PACE_RATE_LOOKBACK, X)`` (10 s or X) before the flood, ``span`` seconds from the
oldest of them to the flood. When more calls were answered in that lookback than the
``PACE_HISTORY`` (512) answer times kept for the estimate, ``n`` and the oldest are taken from
the success counts per ``PACE_BUCKET`` (1 s) kept over the last ``PACE_HORIZON`` (at most
~120 buckets, 16 bytes each, per method): the pre-flood rate and the burst test below depend
on time, not on how many answer times are kept. (New-user trial: at ~300 and ~5,000 calls/s
the last 512 answers spanned less than X = 2 s, steady traffic was taken for a burst, and
the pace was held at 512 per ~2 s for ~12 s; at 300/s it was still held at the end of the
run.) The estimate holds during the server's wait (the calls queued
behind the wait leave evenly spaced); from the wait's end the allowed rate rises
*additively*, in ``PACE_RAMP_STEPS`` (8) equal steps of ``pace_recover / 8`` seconds, from the
estimate to ``max(r0, estimate)``, and at ``X + pace_recover`` seconds after the flood the pace
is dropped. So a one-off FLOOD_WAIT_X never holds a method below the rate at which it was
succeeding before the flood for longer than ``X + pace_recover`` seconds
(``GuardConfig.pace_recover``, default 2 s): a call queued behind it waits at most until
its next ramp step, and those still queued at the drop go then.

**A burst shorter than the wait holds at once.** When those calls span less than ``X`` seconds
(in time, however many they are)
there is no sustained rate to return to: the server's window is at least ``X`` long (its
oldest counted call leaves it ``X`` seconds later), so it held all of them and the most it is
known to allow is the estimate. That is the shape of a limit reached from an empty window
(callers starting at full speed), and the estimate holds at once -- but on the *probe
schedule* (below): for ``X``, then relaxed over ``max(pace_recover, period)`` and dropped. It is
also the shape of a one-off flood early in a loop (a paging loop's third call refused), so it
is tested as soon as the wait ends: a limit that is there refuses the relaxed pace, which
restores the held one on the ``pace_relax`` schedule (a repeated flood); a one-off flood costs
``X + max(pace_recover, period)``. (New-user trial: ``iter_messages`` over 2,000 messages with
its third and fourth calls refused with FLOOD_WAIT_2 took 15.0 s guarded, 4.2 s plain, while the
held pace sat out three holds; on the probe schedule 6.0 s.) File parts keep the ``pace_relax``
schedule at once: a download's opening burst meets a real per-DC part limit (issue 15), and a
probe would cost every download a second FLOOD_WAIT. A refusal of the first call after the
wait (no call answered since) extends a held pace as it does a hypothesis: the block lasted
longer, the rate was not tested.

A burst's window is taken in whole seconds: Telegram rounds ``X`` up, so the server's window
lies in ``(span + X - 1, span + X]``, and when the burst spans less than ``1 - PACE_JITTER`` s
the only whole number of seconds there is ``X``; the pace is then ``n`` per ``X + min(span,
PACE_JITTER)`` s (``PACE_JITTER``, 0.05 s: the spread between our answer times and the
server's arrival times). A longer burst keeps ``span + X`` (near a whole second the rounding
could go either way). (Issue 15: a parallel download's opening, paced by the transfer window,
spread 20 parts over 0.29 s before FLOOD_WAIT_1 at a 20-per-1-s limit; ``span + X`` learned 20
per 1.29 s, 15.3 parts/s, below the old fixed bound of 16 in flight at 17.6-18.8.) A window
that is not whole seconds makes this pace too fast: it is refused at the estimate and backs
off (below) by ``PACE_BACKOFF`` per flood.

**FLOOD_PREMIUM_WAIT_X teaches a pace too.** Telegram's error database describes it as "wait X
seconds before repeating the action, or purchase a Telegram Premium subscription to remove
this rate limit" (the ``FLOOD_PREMIUM_WAIT_%d`` description in core.telegram.org's errors
database, mirrored in MTProto libraries' error tables; ``help.getConfig``'s
``premium_promo_order`` value ``faster_download``: "Premium users have no download speed
limits"): for a non-premium account it is the same kind of rate limit on the transfer method,
so the flood ledger (which blocks the DC's transfers for ``X``) also hands it to the pacer;
without a pace each block ended in another burst of the transfer window's parts.

**Repeated floods tighten.** A FLOOD_WAIT that arrives while a hypothesis is being tested (its
wait or its ramp) or in its *probation* (``max(pace_relax, PACE_PROBATION * X)`` seconds after
it was dropped), after at least one call of M was answered since the last wait, is a repeated
flood: the hypothesis failed its test and the estimate *holds* (a held pace, below). Refused
above the estimate (on the climb, or after it), the estimate itself was not refuted and holds
unchanged; refused at the estimate (during the wait or the ramp's first step) it is too fast:
its period stretches by ``PACE_BACKOFF`` (1.1). (Not to what the calls answered since the
wait teach: they shared the server's window with the calls before it, so their own ``k /
(span + X)`` understates the limit -- three calls in a ramp step turned an 8.3/s estimate
into 1.75/s.) A FLOOD_WAIT on the first
call after a wait (no call answered in between) says the block lasted longer, not that the
rate was too high: the hypothesis is kept and its ramp restarts after the new wait.

**A held pace** (the multiplicative decrease, and rare probes above it):

* A FLOOD_WAIT while it holds means "still too fast": its period stretches by
  ``PACE_BACKOFF`` (the multiplicative decrease); never beyond ``PACE_MAX_STRETCH`` (2) times
  the widest ``span + X`` seen, so a pace's wait stays of the order of the server's own. The
  calls answered since the last wait are *not* an estimate here: they did not start from an
  empty server window (the calls before the wait were still in it), so ``k / (span + X)`` over
  them understates the limit. (Issue 15: in a 256-part run against 20 per 1 s, a second
  FLOOD_WAIT_1 at 2.2 s set the pace to 23 per 2.15 s from them, about half the limit.)
* It holds for ``hold = max(pace_relax, 2 * period)`` seconds after its last FLOOD_WAIT, then
  relaxes: its period halves every further ``hold`` seconds (``PACE_RELAX_STEPS`` (8) steps per
  halving, each a probe about 9 % above the last), and it is dropped at ``1/PACE_DROP`` (a
  quarter) of its period, ``3 * hold`` seconds after its last flood. Relaxing goes by time, not
  by successes: a refused call teaches nothing, and a method nobody calls should not keep a
  stale pace.
* A FLOOD_WAIT while it relaxes (or in the probation after it was dropped) restores the pace
  that held and doubles that method's hold (at most ``PACE_MAX_HOLD_GROWTH``, 8x): at a steady
  limit the probes get rarer (at most about one per ``8 * hold``), after a limit went away the
  full rate is back within ``3 * hold`` seconds.
* **The probe schedule** (calls waiting that the schedule above would refuse). When the rate
  limiter is about to refuse a call queued behind a held pace because its deadline comes
  first, and the probe schedule would serve it in time (:meth:`AdaptivePacer.expedite`), the
  pace goes on it: held for ``X * quick`` seconds after its last FLOOD_WAIT (until now, if
  that is past), then relaxed (the same steps) over ``max(pace_recover, period) * quick``
  seconds and dropped -- the first flood's bound, ``X + pace_recover``, with the period as
  the least time in which a relaxed rate is tested against a window of that length. A
  FLOOD_WAIT on it (or in its probation) says the limit is still there: the held pace is
  restored with the schedule above (its hold doubled) and ``quick`` grows by
  ``PACE_PROBE_BACKOFF`` (4x): probes back off exponentially at a limit that stays. A
  method with no call its deadline would lose (the bench's unknown-limit callers, with the
  default 60 s ``max_flood_wait``) never probes sooner. (Issue 13: in the demo the wave's
  last FLOOD_WAIT_1 came at ~9.3 s and the wave ended at 10 s; the held pace held until
  ~14.4 s and relaxed until ~24 s, and ~75 calls queued behind it were refused at their
  deadline; on the probe schedule it is gone by ~12.5 s and every call is served.)

Other rules:

* ``PaceLearned`` is emitted when a method's learned ``(count, period)`` changes (learned,
  refined, tightened) and with ``count=0`` when a pace is dropped; a pace restored or made to
  hold with the values already announced emits nothing new.
* Replies to calls sent before a learned wait ended are the same event: a refusal teaches
  nothing more, an answer that arrives during a new pace's wait was accepted before the refusal
  and refines the estimate (with latency, the refusal can overtake the answers of accepted
  calls).
* A pace's wait is a flood wait to the caller, bounded like one (as the ledger bounds a
  FLOOD_WAIT_X) by ``min(max_flood_wait, time left until the deadline)``, not by ``X``: the
  limiter refuses a call (``FloodWaitBlocked``, ``from_server=False``) at once only when its
  expected wait does not fit. A slot that lies beyond the pace's next change
  (:meth:`AdaptivePacer.changes_at`: a ramp step, the end of a hold, a relax step, the drop)
  is not a verdict: the expected wait is the time the calls ahead take to pass under the
  pace's schedule (:meth:`AdaptivePacer.drain`); if that fits, the call is held until the
  change and decides again under the new window, so a queue built behind a pace drains as it
  relaxes and goes when it is dropped. (Issue 13: the demo's calls queued behind a wave's pace
  were refused at once with 4.6 to 14 s of deadline left under the old cap of ``X``.) Held
  calls wait in arrival order and the expected wait counts those held ahead, so a call
  admitted on it is not overtaken (the limiter's ``_PaceGate``). The schedule assumes no new
  FLOOD_WAIT: one that sets or changes the pace tells :attr:`AdaptivePacer.listeners`, and
  the limiter lets the calls held for the pace (and those whose slot the FLOOD_WAIT's block
  covers) decide again at once, so the ledger waits out the block or refuses them then --
  not later, at the pace's next change.

Sources and how the constants relate to them:

* TDLib (``td/telegram/net/NetQueryDelayer.cpp``, ``NetQueryDelayer::delay``): a FLOOD_WAIT_X
  delays *that query* by ``clamp(X, 1 s, 14 days)`` and keeps no pace at all afterwards
  (``next_timeout_`` is reset to 1). That is the floor we measure against: after a one-off
  flood the guard costs at most ``pace_recover`` seconds more than TDLib (the ramp), in
  exchange for not sending a second burst into a real limit.
* gotd (``github.com/gotd/contrib``, ``middleware/floodwait/scheduler.go``): a FLOOD_WAIT sets
  the request type's delay to ``max(delay, X)`` (``scheduler.flood``) and every success takes
  1 s off it (``scheduler.nice``, ``dec = time.Second`` in ``waiter.go``'s ``NewWaiter``), so
  the delay is gone after about ``X`` successes. Our ramp is the same idea measured in time
  rather than successes (bounded even when few calls are made) and in rate rather than delay.
* ``PACE_JITTER`` (0.05 s) is ours: the one-way spread of a 30-80 ms round trip (25 ms) with
  room, measured with ``benchmarks/transfer_opening.py`` (``aimd``: parts/s against 20 per 1 s).
* ``PACE_RATE_LOOKBACK``, ``PACE_RAMP_STEPS``, ``PACE_PROBATION``, the burst rule and the
  default ``pace_recover`` (2 s) are ours, chosen with the sporadic-flood workload
  (``telethon_guard.bench.sporadic``: goodput >= 95 % of the no-flood run minus the seconds
  Telegram asked for) and the unknown-limit workload (``telethon_guard.bench.goodput``:
  >= 90 % of the limit, at most one FLOOD_WAIT per method after convergence) both holding.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from .clock import Clock
from .config import Windows
from .events import EventBus, PaceLearned
from .keys import TRANSFER_METHODS

PACE_HORIZON = 120.0
"""Seconds of call history considered when learning a first pace."""
PACE_HISTORY = 512
"""Success times kept per (account, method) (the most recent ones), for the estimate."""
PACE_BUCKET = 1.0
"""Seconds per bucket of the success counts kept per (account, method) over the last
``PACE_HORIZON`` (at most ``PACE_HORIZON / PACE_BUCKET + 2`` buckets of 16 bytes): the pre-flood
rate and the burst test when more calls were answered in the lookback than
``PACE_HISTORY``."""
PACE_MARGIN = 1.0
"""Factor on a learned period. 1.0: the server's ``X`` is rounded up to whole seconds, so
``span + X`` already errs long (by up to 1 s) against the latency jitter between our success
times and the server's arrival times; a pace that still proves too fast stretches by
``PACE_BACKOFF``."""
PACE_BACKOFF = 1.1
"""Factor by which a FLOOD_WAIT stretches a holding pace's period when the calls since the last
wait teach nothing slower."""
PACE_MAX_STRETCH = 2.0
"""A period never exceeds this many times the largest window ``span + X`` seen for the method
(``PACE_MARGIN`` included): a pace's wait stays of the order of the server's own waits."""
PACE_MIN_CALLS = 2
"""Calls of the method answered since the last wait (within the horizon) needed to learn from a
FLOOD_WAIT."""
PACE_MIN_WAIT = 1.0
"""Server waits shorter than this (seconds) teach nothing. Waits are clamped to at least 1 s
(TDLib NetQueryDelayer), so every FLOOD_WAIT_X qualifies; the evidence test is the call count."""
PACE_RELAX_STEPS = 8
"""Steps per halving of a relaxing held pace's period (each step: ``2 ** (-1/8)``, about -8 %
of the period, +9 % of the rate)."""
PACE_DROP = 4.0
"""A relaxing held pace is dropped once its period is ``1/PACE_DROP`` of the learned one."""
PACE_MAX_HOLD_GROWTH = 8.0
"""Largest multiple of its base hold a method's hold grows to after floods on relaxing paces."""
PACE_RATE_LOOKBACK = 10.0
"""Seconds before a FLOOD_WAIT over which the pre-flood rate (calls answered per second) is
measured: long enough to average a service's bursts (a request fanning out into a few calls),
short enough to be the rate of *now*."""
PACE_RAMP_STEPS = 8
"""Equal additive steps of the allowed rate, from the estimate to the pre-flood rate, over
``pace_recover`` seconds after a first FLOOD_WAIT's wait ended."""
PACE_PROBATION = 2.0
"""After a first flood's pace is dropped, a FLOOD_WAIT within ``max(pace_relax,
PACE_PROBATION * X)`` seconds is a repeated flood (it tightens). ``X`` bounds the server's
window from below (the oldest accepted call leaves it ``X`` s later): a real limit at the
pre-flood rate refills its window and refuses again within about that time."""

PACE_JITTER = 0.05
"""Seconds added to ``X`` for a burst shorter than a second refused with FLOOD_WAIT_X (the
window is taken to be whole seconds, so ``X``): the spread between our answer times and the
server's arrival times (one-way latency jitter; 25 ms on a 30-80 ms round trip) that evenly
spaced calls at exactly the limit would not absorb. Bursts spanning ``1 - PACE_JITTER`` s or
more keep ``span + X``: near a whole second the rounding could go either way."""

_DROP_STEP = math.ceil(math.log2(PACE_DROP) * PACE_RELAX_STEPS)  # relax step that drops (16)
PACE_PROBE_BACKOFF = 4.0
"""Factor by which a method's probe hold and span (``X * quick``, ``max(pace_recover, period)
* quick``) grow each time a probe schedule (:meth:`AdaptivePacer.expedite`) is refused."""


def _spacing(count: int, period: float) -> Windows:
    """The limiter window of a pace of ``count`` per ``period`` s: one call per
    ``period / count`` s. Evenly spaced calls never exceed ``count`` in any ``period`` (the
    server's sliding window), never burst (a probe that is too fast costs one FLOOD_WAIT, not
    one per call in flight), and make no single call wait longer than the spacing."""
    return ((1, period / count),)


def _estimate(calls: list[float], now: float, seconds: float) -> tuple[int, float]:
    """``(k, now - calls[-k] + seconds)`` with the highest rate ``k / (now - calls[-k] +
    seconds)`` over ``k >= PACE_MIN_CALLS`` (``calls`` ascending, at least that many)."""
    best_k = len(calls)
    best_w = now - calls[0] + seconds
    n = len(calls)
    for k in range(PACE_MIN_CALLS, n + 1):
        w = now - calls[n - k] + seconds
        if k * best_w > best_k * w:
            best_k, best_w = k, w
    return best_k, best_w


def _burst_window(span: float, seconds: float) -> float:
    """The window (seconds) a burst of answers spanning ``span`` s, refused with
    FLOOD_WAIT_``seconds``, teaches: ``seconds + min(span, PACE_JITTER)`` when ``span <
    1 - PACE_JITTER`` (the window is whole seconds: in ``(span + X - 1, span + X]`` that is
    ``X``), else ``span + seconds``."""
    if span < 1.0 - PACE_JITTER:
        return seconds + min(span, PACE_JITTER)
    return span + seconds


def pre_flood_rate(calls: list[float], now: float, seconds: float) -> float | None:
    """The sustained rate (calls answered per second) before a FLOOD_WAIT of ``seconds`` at
    ``now``: ``n / (now - oldest)`` over the ``n`` answer times (``calls``, ascending) in the
    last ``max(PACE_RATE_LOOKBACK, seconds)`` seconds. ``None`` when fewer than
    ``PACE_MIN_CALLS`` or when they span less than ``seconds``: the server's window is at least
    ``seconds`` long (its oldest counted call leaves it ``seconds`` later), so a burst shorter
    than the wait establishes no rate above ``n / seconds`` -- it is the shape of a limit
    reached from an empty window, not of a service running at a rate."""
    lookback = max(PACE_RATE_LOOKBACK, seconds)
    recent = [t for t in calls if now - lookback < t <= now]
    if len(recent) < PACE_MIN_CALLS or now - recent[0] < seconds:
        return None
    return len(recent) / (now - recent[0])


def _bucket_rate(firsts: array[float], counts: array[int], start: float, now: float,
                 seconds: float) -> float | None:
    """:func:`pre_flood_rate` from success counts per bucket (``firsts``: each bucket's first
    answer time, ascending; ``counts``: its answers) for calls answered after ``start``: ``n /
    (now - oldest)`` over the buckets that began in the last ``max(PACE_RATE_LOOKBACK,
    seconds)`` s (and after ``start``), ``oldest`` the first answer of the oldest of them.
    ``None`` as there (fewer than ``PACE_MIN_CALLS``, or spanning less than ``seconds``)."""
    lookstart = max(start, now - max(PACE_RATE_LOOKBACK, seconds))
    n = 0
    oldest = now
    i = len(firsts) - 1
    while i >= 0 and firsts[i] > lookstart:
        if firsts[i] <= now:
            n += counts[i]
            oldest = firsts[i]
        i -= 1
    if n < PACE_MIN_CALLS or now - oldest < seconds:
        return None
    return n / (now - oldest)


_HISTORY_TRIM = PACE_HISTORY + 64  # on_success trims history 64 at a time from this length


class _Pace:
    __slots__ = ("announced", "b_counts", "b_first", "b_firsts", "b_n", "base", "count",
                 "evidence",
                 "flood_at", "folded",
                 "grow", "held", "history", "hold", "last", "late", "period", "pre",
                 "probation_until", "quick", "short", "since", "span", "trimmed", "wait",
                 "widest")

    def __init__(self) -> None:
        # Success times (clock seconds); the last PACE_HISTORY are used. A list, not a
        # deque(maxlen=...), which allocates a 64-slot block (~0.7 KiB) per method up front.
        self.history: list[float] = []
        self.trimmed = float("-inf")  # newest success time deleted from history
        # Successes per bucket over the last PACE_HORIZON: each bucket's first answer time and
        # its count (a bucket spans PACE_BUCKET s and never straddles the end of a wait), so
        # the pre-flood rate does not depend on how many answer times history keeps. Counted
        # lazily (_fold): history[:folded] are counted, history[folded:] not yet; they are
        # folded in when history is trimmed and before anything reads the buckets or
        # changes ``since`` (which the bucket rule reads), so the buckets are the same as if
        # every answer had been counted when it was recorded.
        self.folded = 0
        self.b_firsts: array[float] = array("d")
        self.b_counts: array[int] = array("q")
        self.b_first = float("-inf")  # b_firsts[-1] (-inf: none)
        # The last bucket's count (an int attribute, cheaper than the array's item):
        # b_counts[-1] is written when a bucket opens or is read.
        self.b_n = 0
        self.since = float("-inf")  # end of the last server wait learned from
        self.announced: tuple[int, float] | None = None  # last (count, period) emitted
        self.count = 0  # learned count (0: no pace in force)
        self.base = 0.0  # learned period, before ramping or relaxing
        self.period = 0.0  # current period (ramped or relaxed)
        self.held = False  # True: a held pace (repeated floods); False: a hypothesis
        self.pre = 0.0  # pre-flood rate (calls/s) a hypothesis ramps back to
        self.flood_at = 0.0  # time of the last FLOOD_WAIT that set or kept the pace
        self.hold = 0.0  # seconds a held pace holds unchanged after flood_at
        self.grow = 1.0  # hold multiplier (doubles on a flood while relaxing)
        self.span = 0.0  # seconds a held pace takes to relax from its hold's end to its drop
        # True: a held pace on the probe schedule (calls queued behind it could not wait for
        # the pace_relax schedule, AdaptivePacer.expedite): held X * quick, relaxed over
        # max(pace_recover, period) * quick. False: the pace_relax schedule.
        self.short = False
        self.quick = 1.0  # probe multiplier (x PACE_PROBE_BACKOFF per refused probe)
        self.widest = 0.0  # largest window estimate span + X seen (seconds)
        self.wait = 0.0  # X of the FLOOD_WAIT the pace was last set from (seconds)
        self.last: tuple[int, float] | None = None  # (count, base) of the last dropped pace
        self.probation_until = float("-inf")  # a flood before this time is a repeated one
        # A new pace's evidence (answer times before the FLOOD_WAIT) and the answers that
        # arrived during its wait (calls the server accepted before refusing, whose answers
        # were slower than the refusal): they refine the pace until the wait ends.
        self.evidence: list[float] | None = None
        self.late = 0


def _fold(p: _Pace, end: int) -> None:
    """Count the answer times ``p.history[p.folded:end]`` into ``p``'s buckets, as if each had
    been counted when it was recorded: an answer at ``t`` joins the last bucket (first
    answer ``first``) when ``t - first < PACE_BUCKET`` and not ``first < p.since <= t`` (a
    bucket never straddles the end of a wait), else it opens a new one (buckets that began
    more than ``PACE_HORIZON + PACE_BUCKET`` s before it are dropped). ``since`` must be the
    value it had when those answers were recorded (callers fold before changing it). Both
    tests are monotone in ``t`` and history is in clock order, so each bucket's end is found
    by bisection: O(log n) per bucket, not a step per answer."""
    i = p.folded
    if i >= end:
        return
    h = p.history
    since = p.since
    first = p.b_first
    n = p.b_n
    firsts = p.b_firsts
    counts = p.b_counts
    while True:
        # the answers that join the bucket opened at ``first``
        f = first
        stop = bisect_left(h, PACE_BUCKET, i, end, key=lambda t: t - f)
        if first < since:
            stop = bisect_left(h, since, i, stop)
        n += stop - i
        if stop >= end:
            break
        t = h[stop]  # opens a new bucket
        firsts.append(t)
        if counts:
            counts[-1] = n
        counts.append(1)
        n = 1
        first = t
        old = 0
        while firsts[old] < t - PACE_HORIZON - PACE_BUCKET:
            old += 1
        if old:
            del firsts[:old]
            del counts[:old]
        i = stop + 1
        if i >= end:
            break
    p.b_first = first
    p.b_n = n
    p.folded = end


class AdaptivePacer:
    """Learns a method's pace from its FLOOD_WAITs (see the module docstring). Local state.

    ``relax``: ``GuardConfig.pace_relax`` (seconds; the base hold of a held pace and the
    shortest probation). ``recover``: ``GuardConfig.pace_recover`` (seconds after a first
    FLOOD_WAIT's wait within which its pace is back at the pre-flood rate and dropped). All
    times are on ``clock`` (monotonic). Raises ``ValueError`` when either is not > 0.
    """

    __slots__ = ("_clock", "_events", "_learned", "_now", "_once", "_paces", "listeners",
                 "max_methods", "on_change", "recover", "relax", "seed_ages")

    def __init__(self, clock: Clock, events: EventBus | None = None, *, relax: float = 5.0,
                 recover: float = 2.0, max_methods: int = 4096) -> None:
        if not relax > 0:
            raise ValueError(f"relax must be > 0 seconds, got {relax!r}")
        if not recover > 0 or math.isinf(recover):
            raise ValueError(f"recover must be > 0 seconds and finite, got {recover!r}")
        self._clock = clock
        self._now = clock.now  # bound once: on_success reads it per answer
        self._events = events
        self._paces: dict[tuple[str, str], _Pace] = {}
        # The answer time of a method answered once so far, instead of a _Pace (~0.7 KiB
        # with its history and buckets): a client's connect-time methods (help.getConfig,
        # updates.getState, users.getUsers...) are mostly answered once. The second answer
        # (or a FLOOD_WAIT, or an adopted pace) makes the _Pace, seeded with this time:
        # the same state as if it had been recorded there (_pace).
        self._once: dict[tuple[str, str], float] = {}
        # Active paces only: (window the limiter applies, clock time it next changes).
        # window() is asked on every call, and is one truth test while no pace is learned.
        self._learned: dict[tuple[str, str], tuple[Windows, float]] = {}
        self.relax = relax
        self.recover = recover
        self.max_methods = max_methods
        self.seed_ages: list[float] = []  # ages (s) of the calls a new pace was learned from
        self.on_change: Callable[[str, str], None] | None = None
        """Called with ``(account, method)`` after a FLOOD_WAIT set or changed that method's
        pace (shared storage publishes it: :mod:`telethon_guard.shared_pace`)."""
        self.listeners: list[Callable[[str, str], None]] = []
        """Also called with ``(account, method)`` after a FLOOD_WAIT set or changed that
        method's pace (outside its schedule: :meth:`changes_at` moved); the rate limiter lets
        the calls it holds for the pace decide again (``RateLimitLayer.pace_changed``)."""

    def pace_table(self) -> dict[tuple[str, str], Any]:
        """The live table of learned paces ``{(account, method): ...}`` (read only; a method
        absent from it has no pace now: the straight lane's check; an entry may be one
        :meth:`window` is about to drop)."""
        return self._learned

    def window(self, account: str, method: str) -> Windows | None:
        """The limiter window of ``method``'s pace now, ``((1, period / count),)`` (evenly
        spaced calls), or ``None`` (no pace)."""
        learned = self._learned
        if not learned:
            return None
        entry = learned.get((account, method))
        if entry is None:
            return None
        if self._clock.now() < entry[1]:
            return entry[0]
        return self._relax((account, method))

    def _relax(self, key: tuple[str, str]) -> Windows | None:
        """The window of ``key``'s pace now: a hypothesis ramps towards its pre-flood rate, a
        held pace relaxes after its ``hold``; either is dropped at its end."""
        p = self._paces.get(key)
        if p is None or not p.count:
            self._learned.pop(key, None)
            return None
        now = self._clock.now()
        if not p.held:
            return self._ramp(key, p, now)
        hold_end = p.flood_at + p.hold
        if now < hold_end:
            window = _spacing(p.count, p.period)
            self._learned[key] = (window, hold_end)
            return window
        step = p.span / _DROP_STEP
        k = int((now - hold_end) / step) + 1
        while hold_end + k * step <= now:  # rounding: the next step is always in the future
            k += 1
        if k >= _DROP_STEP:
            self._drop(key, p, hold_end + (_DROP_STEP - 1) * step)
            return None
        p.period = p.base * 2.0 ** (-k / PACE_RELAX_STEPS)
        window = _spacing(p.count, p.period)
        self._learned[key] = (window, hold_end + k * step)
        return window

    def _ramp(self, key: tuple[str, str], p: _Pace, now: float) -> Windows | None:
        """A hypothesis: the learned pace until its wait ends (``p.since``), then the allowed
        rate rises in ``PACE_RAMP_STEPS`` equal steps towards ``max(pre, learned)``; dropped
        ``recover`` seconds after the wait."""
        start = p.since
        if now < start:
            p.period = p.base
            window = _spacing(p.count, p.base)
            self._learned[key] = (window, start)
            return window
        step = self.recover / PACE_RAMP_STEPS
        j = int((now - start) / step)
        while start + (j + 1) * step <= now:  # rounding: the next step is always in the future
            j += 1
        if j >= PACE_RAMP_STEPS:
            self._drop(key, p, start + self.recover)
            return None
        learned = p.count / p.base
        rate = learned + (max(p.pre, learned) - learned) * j / PACE_RAMP_STEPS
        p.period = p.count / rate
        window = _spacing(p.count, p.period)
        self._learned[key] = (window, start + (j + 1) * step)
        return window

    def _drop(self, key: tuple[str, str], p: _Pace, at: float) -> None:
        """Drop ``key``'s pace (it ended at clock time ``at``); its probation starts."""
        p.last = (p.count, p.base)
        p.count = 0
        p.period = p.base = 0.0
        p.probation_until = at + max(self.relax, PACE_PROBATION * p.wait)
        self._learned.pop(key, None)
        p.announced = None
        if self._events is not None:
            self._events.emit(PaceLearned(key[1], 0, 0.0, key[0]))

    def changes_at(self, account: str, method: str) -> float | None:
        """Clock time (seconds, monotonic) at which the pace of ``method`` next changes: the
        end of the server's wait or the next step of a hypothesis's ramp, the end of a held
        pace's hold or its next relax step, or the moment either is dropped; ``None`` without
        a pace. The current window holds only until then, so it cannot say that a call whose
        slot lies later will miss its deadline: the limiter holds such a call until then
        (if its expected wait under the schedule, :meth:`drain`, fits) and decides again
        (:class:`~telethon_guard.limiter.RateLimitLayer`)."""
        if not self._learned or self.window(account, method) is None:
            return None
        entry = self._learned.get((account, method))
        return entry[1] if entry is not None else None

    def _spacing_at(self, p: _Pace, t: float) -> tuple[float | None, float]:
        """``(seconds between calls, or None once dropped; clock time of the next change)``
        of ``p``'s pace at clock time ``t`` if no FLOOD_WAIT changes it (pure: no state)."""
        inf = math.inf
        if not p.held:
            start = p.since
            if t < start:
                return p.base / p.count, start
            step = self.recover / PACE_RAMP_STEPS
            j = int((t - start) / step)
            while start + (j + 1) * step <= t:
                j += 1
            if j >= PACE_RAMP_STEPS:
                return None, inf
            learned = p.count / p.base
            rate = learned + (max(p.pre, learned) - learned) * j / PACE_RAMP_STEPS
            return 1.0 / rate, start + (j + 1) * step
        hold_end = p.flood_at + p.hold
        if t < hold_end:
            return p.base / p.count, hold_end
        step = p.span / _DROP_STEP
        k = int((t - hold_end) / step) + 1
        while hold_end + k * step <= t:
            k += 1
        if k >= _DROP_STEP:
            return None, inf
        return p.base * 2.0 ** (-k / PACE_RELAX_STEPS) / p.count, hold_end + k * step

    def drain(self, account: str, method: str, slots: float) -> float | None:
        """Seconds from now until ``slots`` more evenly spaced calls have passed under the pace
        of ``method`` as it is scheduled to ramp, relax or be dropped (if no FLOOD_WAIT changes
        it; ``0.0`` once it is dropped); ``None`` without a pace. The limiter's estimate of a
        queued call's wait when its slot lies beyond the pace's next change."""
        if not self._learned or self.window(account, method) is None:
            return None
        return self._drain(self._paces[(account, method)], self._clock.now(), slots)

    def _drain(self, p: _Pace, now: float, slots: float) -> float:
        t = now
        left = max(0.0, slots)
        for _ in range(4 * (PACE_RAMP_STEPS + _DROP_STEP)):
            spacing, change = self._spacing_at(p, t)
            if spacing is None:
                return t - now
            n = (change - t) / spacing
            if n >= left:
                return t + left * spacing - now
            left -= n
            t = change
        return t - now  # pragma: no cover (a schedule is dropped within its steps)

    def slot_times(self, account: str, method: str, start: float) -> Iterator[float] | None:
        """Clock times (seconds, monotonic) at which successive evenly spaced calls, the first
        at clock time ``start``, pass under the pace of ``method`` as it is scheduled to ramp,
        relax or be dropped (if no FLOOD_WAIT changes it): the ``i``-th is ``start`` plus
        what :meth:`drain` of ``i`` slots measures from ``start`` (every call at the drop
        time once the pace is dropped). An endless iterator, to be consumed before the pace
        changes; ``None`` without a pace in force now. The flood ledger's estimate of where a
        call waiting out a block will go when the block ends
        (:class:`~telethon_guard.flood.FloodLedger`)."""
        if not self._learned or self.window(account, method) is None:
            return None
        return self._slot_times(self._paces[(account, method)], start)

    def _slot_times(self, p: _Pace, start: float) -> Iterator[float]:
        t = start  # start of the schedule's current step
        passed = 0.0  # slots (fractional, as _drain counts them) passed before t
        i = 0
        spacing, change = self._spacing_at(p, t)
        while True:
            if spacing is None:  # dropped: no pace delays anyone from t on
                yield t
                continue
            if passed + (change - t) / spacing >= i:  # slot i lies in this step
                yield t + (i - passed) * spacing
                i += 1
            else:
                passed += (change - t) / spacing
                t = change
                spacing, change = self._spacing_at(p, t)

    def max_wait(self, account: str, method: str) -> float | None:
        """The wait (seconds) Telegram asked for when the pace of ``method`` was set (``X``),
        or two spacings if longer; ``None`` without a pace. Informational: the limiter bounds
        a pace's wait by the call's deadline and ``max_flood_wait`` (as the flood ledger does
        for a FLOOD_WAIT), not by ``X``."""
        if not self._learned:
            return None
        p = self._paces.get((account, method))
        if p is None or not p.count:
            return None
        return max(p.wait, 2.0 * p.period / p.count)

    def learned(self) -> dict[str, tuple[int, float]]:
        """Active paces: ``{"<account>/<method>": (count, period now)}``."""
        out: dict[str, tuple[int, float]] = {}
        for a, m in list(self._learned):
            if self.window(a, m):
                p = self._paces[(a, m)]
                out[f"{a}/{m}"] = (p.count, p.period)
        return out

    def is_held(self, account: str, method: str) -> bool:
        """``True`` when ``method`` has a pace in force that repeated FLOOD_WAITs made hold
        (``False``: no pace, or a first flood's hypothesis on its way back)."""
        p = self._paces.get((account, method))
        return p is not None and bool(p.count) and p.held and (
            self.window(account, method) is not None)

    def _pace(self, account: str, method: str) -> _Pace:
        key = (account, method)
        p = self._paces.get(key)
        if p is None:
            if len(self._paces) >= self.max_methods:
                # Drop the oldest entry without a learned pace (or the oldest at all).
                victim = next((k for k, v in self._paces.items() if not v.count),
                              next(iter(self._paces)))
                del self._paces[victim]
                self._learned.pop(victim, None)
            p = self._paces[key] = _Pace()
            first = self._once.pop(key, None)
            if first is not None:  # its one answer so far, as on_success records it
                p.history.append(first)
        return p

    def on_success(self, account: str, method: str, now: float | None = None) -> None:
        """Record one call of ``method`` answered by Telegram (its time, for learning);
        ``now``: the answer's time on the pacer's clock when the caller has read it (answer
        times are recorded in clock order: the clock is monotonic and the caller reads it
        when the answer is processed, with no await in between)."""
        p = self._paces.get((account, method))
        if p is None:
            key = (account, method)
            once = self._once
            if key not in once:  # the first answer: its time only (see __init__)
                if len(once) >= self.max_methods:
                    del once[next(iter(once))]
                once[key] = self._now() if now is None else now
                return
            p = self._pace(account, method)
        if now is None:
            now = self._now()
        history = p.history
        history.append(now)
        if len(history) >= _HISTORY_TRIM:  # trimmed 64 at a time (amortized O(1))
            self._trim(p)
        if p.evidence is not None:
            if now < p.since and p.count:
                p.late += 1
                self._refine((account, method), p)
            else:
                p.evidence = None

    @staticmethod
    def _trim(p: _Pace) -> None:
        """Drop the 64 oldest answer times of ``p.history`` (counted into the buckets
        first)."""
        history = p.history
        if p.folded < 64:
            _fold(p, 64)
        p.folded -= 64
        p.trimmed = history[63]
        del history[:64]

    def _refine(self, key: tuple[str, str], p: _Pace) -> None:
        """Count an answer that arrived during a new pace's wait (accepted before the
        refusal): the pace becomes faster if the evidence now shows a faster rate."""
        ev = p.evidence
        assert ev is not None
        learned_at = p.flood_at
        n = len(ev)
        late = p.late
        best: tuple[int, float] | None = None
        if late >= PACE_MIN_CALLS:
            # The late answers alone: accepted just before the refusal, their answers spread
            # over about the time their arrivals did.
            best = (late, p.wait + self._clock.now() - learned_at)
        for k in range(1, n + 1):
            w = learned_at - ev[n - k] + p.wait
            if best is None or (k + late) * best[1] > best[0] * w:
                best = (k + late, w)
        if best is not None and p.held:  # learned from a burst: the window is whole seconds
            best = (best[0], _burst_window(best[1] - p.wait, p.wait))
        if best is None or best[0] * p.base <= p.count * best[1] * PACE_MARGIN:
            return
        p.widest = max(p.widest, best[1])
        p.count, p.base = best[0], best[1] * PACE_MARGIN
        p.period = p.base
        window = _spacing(p.count, p.base)
        if p.held:  # learned from a burst: it holds from the flood on
            self._set_hold(p)
            self._learned[key] = (window, p.flood_at + p.hold)
        else:  # a hypothesis: unchanged until its wait's end
            self._learned[key] = (window, p.since)
        self._announce(key, p)

    def on_flood(self, account: str, method: str, seconds: float) -> Windows | None:
        """Learn from a FLOOD_WAIT of ``seconds`` on ``method``; return the pace window now in
        force (``None``: nothing learned). Sets :attr:`seed_ages` when a *new* pace should start
        with the calls it was learned from (empty otherwise); calls :attr:`on_change` and
        :attr:`listeners` when a pace is in force."""
        window = self._on_flood(account, method, seconds)
        if window is not None:
            if self.on_change is not None:
                self.on_change(account, method)
            for listener in self.listeners:
                listener(account, method)
        return window

    def _on_flood(self, account: str, method: str, seconds: float) -> Windows | None:
        self.seed_ages = []
        now = self._clock.now()
        key = (account, method)
        p = self._pace(account, method)
        _fold(p, len(p.history))  # the buckets as of now, before ``since`` moves
        if now < p.since or seconds < PACE_MIN_WAIT:
            # A reply to a call sent before the wait we already learned from ended (its
            # siblings in flight): the same event, nothing new to learn.
            return None
        active = bool(p.count) and self.window(account, method) is not None
        # A call answered since the last wait ended: the rate, not the block, was refused.
        fresh = bool(p.history) and p.history[-1] >= p.since
        probation = not active and p.last is not None and now < p.probation_until
        start = max(p.since, now - PACE_HORIZON)
        calls = [t for t in p.history[-PACE_HISTORY:] if t > start]
        prev_since = p.since
        p.since = now + seconds
        cand: tuple[int, float] | None = None
        if len(calls) >= PACE_MIN_CALLS:
            # The server accepted these calls, then refused: for the k most recent of them,
            # (k, span_k + X) is a window the server allowed. The fastest such rate is the
            # estimate: the pace never goes below what the server was seen to accept (a
            # lookback reaching into a quiet stretch, e.g. an outage, only averages it down).
            cand = _estimate(calls, now, seconds)
            p.widest = max(p.widest, cand[1])
            cand = (cand[0], cand[1] * PACE_MARGIN)
        if active and p.held and not fresh:
            # The first call after the wait refused again (no call answered since): the block
            # lasted longer, the rate was not tested. The held pace restarts its schedule
            # (hold or probe schedule) after this wait, unchanged.
            p.evidence = None
            count, period = p.count, p.base
        elif active and p.held:
            p.evidence = None
            if now >= p.flood_at + p.hold:
                # The relaxed pace was too fast; the held one held for its whole hold: restore
                # it, and hold it longer next time. (Calls counted over a cycle that did not
                # start from an empty server window overstate the rate: nothing more learned.)
                count, period = p.count, p.base
                p.grow = min(PACE_MAX_HOLD_GROWTH, p.grow * 2.0)
                self._probe_refused(p)
            else:
                # Too fast while holding: slow down by PACE_BACKOFF. The calls answered
                # since the wait teach nothing slower: they did not start from an empty
                # server window (those before the wait were still in it), so their rate
                # understates the limit (issue 13: a second flood halved a 20/s pace).
                count, period = p.count, p.period * PACE_BACKOFF
                self._probe_refused(p)
        elif (active or probation) and fresh:
            # A repeated flood: the hypothesis (or a dropped held pace) failed its test.
            p.evidence = None
            ref = (p.count, p.base) if active else p.last
            assert ref is not None
            if p.held:  # in the probation of a held pace: restore it, hold longer
                count, period = ref
                p.grow = min(PACE_MAX_HOLD_GROWTH, p.grow * 2.0)
                self._probe_refused(p)
            else:
                p.grow = 1.0
                count, period = ref
                if active and now < prev_since + self.recover / PACE_RAMP_STEPS:
                    # Refused during the wait or the ramp's first step, at the estimate
                    # itself: stretch the estimate by PACE_BACKOFF (the calls since the wait
                    # shared the server's window with those before it: their own rate
                    # understates the limit, as for a held pace).
                    period = ref[1] * PACE_BACKOFF
                # else: refused above the estimate, on the way back to the pre-flood rate:
                # the estimate was not refuted, it holds.
            p.held = True
        elif active:
            # The first call after the wait was refused again: the block lasted longer, the
            # rate was not tested. Keep the hypothesis; its ramp starts after the new wait.
            p.evidence = None
            p.flood_at = now
            p.wait = seconds
            p.period = p.base
            window = _spacing(p.count, p.base)
            self._learned[key] = (window, p.since)
            return window
        else:
            # A first flood: a hypothesis to test, or (after a burst shorter than the wait,
            # which shows no sustained rate to return to) a pace that holds at once.
            if cand is None:
                return None
            count, period = cand
            p.grow = 1.0
            rate = self._pre_flood_rate(p, calls, start, now, seconds)
            p.held = rate is None
            if rate is None:  # a burst: the window is whole seconds (PACE_JITTER)
                period = _burst_window(now - calls[-count], seconds) * PACE_MARGIN
            # A burst's pace holds on the probe schedule: X, then relaxed over
            # max(pace_recover, period) and dropped. A limit that is there refuses the
            # relaxed pace (restored, then the pace_relax schedule); a one-off flood costs
            # X + max(pace_recover, period), not 3 holds (a paging loop's third call refused
            # once: 2,000 messages in 15.0 s against plain Telethon's 4.2 s). Not for file
            # parts: a download's opening burst meets a real per-DC part limit (issue 15).
            p.short = rate is None and method not in TRANSFER_METHODS
            p.quick = 1.0
            p.pre = rate if rate is not None else count / period
            self.seed_ages = [now - t for t in calls]
            p.evidence = calls
            p.late = 0
        cap = PACE_MAX_STRETCH * PACE_MARGIN * max(p.widest, seconds)
        period = min(period, cap)
        p.count, p.base, p.period = count, period, period
        p.flood_at = now
        p.wait = seconds
        window = _spacing(count, period)
        if p.held:
            self._set_hold(p)
            self._learned[key] = (window, now + p.hold)
        else:
            p.hold = 0.0
            self._learned[key] = (window, p.since)
        self._announce(key, p)
        return window

    @staticmethod
    def _pre_flood_rate(p: _Pace, calls: list[float], start: float, now: float,
                        seconds: float) -> float | None:
        """The pre-flood rate of ``p`` (:func:`pre_flood_rate`): from the answer times
        ``calls`` when they hold every call answered in the lookback, else (more answered
        than ``PACE_HISTORY`` in it) from the success counts per bucket."""
        lookstart = max(start, now - max(PACE_RATE_LOOKBACK, seconds))
        h = p.history
        missing = h[-PACE_HISTORY - 1] if len(h) > PACE_HISTORY else p.trimmed
        if missing <= lookstart:
            return pre_flood_rate(calls, now, seconds)
        _fold(p, len(h))
        counts = p.b_counts
        if counts:
            counts[-1] = p.b_n  # _fold keeps the last bucket's count in b_n
        return _bucket_rate(p.b_firsts, counts, start, now, seconds)

    def _set_hold(self, p: _Pace) -> None:
        """A held pace's hold and relaxation span (seconds) after a FLOOD_WAIT: ``max(pace_relax,
        2 * period) * grow`` and twice that; on the probe schedule ``X * quick`` and
        ``max(pace_recover, period) * quick`` (see the module docstring)."""
        if p.short:
            p.hold, p.span = self._probe_schedule(p)
            return
        p.hold = max(self.relax, 2.0 * p.base) * p.grow
        p.span = 2.0 * p.hold

    @staticmethod
    def _probe_refused(p: _Pace) -> None:
        """A FLOOD_WAIT on a held pace: if it was on the probe schedule, that probe was refused
        (the limit is still there): back to the pace_relax schedule, next probe later."""
        if p.short:
            p.short = False
            p.quick *= PACE_PROBE_BACKOFF

    def _probe_schedule(self, p: _Pace) -> tuple[float, float]:
        """``(hold, span)`` of the probe schedule after ``p``'s last FLOOD_WAIT: ``X *
        quick`` and ``max(pace_recover, period) * quick`` seconds."""
        return p.wait * p.quick, max(self.recover, p.base) * p.quick

    def _probe_hold(self, p: _Pace, now: float) -> tuple[float, float] | None:
        """``(hold, span)`` of ``p`` on the probe schedule from ``now`` (the hold not ending
        before now, the span not longer than the pace_relax schedule's), or ``None`` when it
        cannot be put on it (not a held pace in its hold, on it already, not shorter)."""
        if not p.count or not p.held or p.short or now >= p.flood_at + p.hold:
            return None
        hold, span = self._probe_schedule(p)
        hold = max(hold, now - p.flood_at)
        if hold >= p.hold:
            return None
        return hold, min(span, p.span)

    def expedite(self, account: str, method: str, slots: float) -> float | None:
        """Calls queued behind the *held* pace of ``method`` cannot wait for its pace_relax
        schedule: the rate limiter is about to refuse one whose expected wait (``slots``
        calls to pass, itself included) does not fit its deadline. If the *probe schedule*
        serves it sooner, put the pace on it and return that wait (seconds, as
        :meth:`drain`); else change nothing and return ``None``.

        The probe schedule: held for ``X * quick`` seconds after the last FLOOD_WAIT (until
        now, if that is past), then relaxed over ``max(pace_recover, period) * quick`` seconds
        and dropped, as a first flood's hypothesis is: a limit that went away (a wave) stops
        costing calls within about ``X + max(pace_recover, period)`` seconds of its last
        flood. A FLOOD_WAIT on the probe schedule restores the pace that held, with the
        pace_relax schedule, and multiplies ``quick`` by ``PACE_PROBE_BACKOFF`` (4): at a
        limit that stays, probes get rarer. Only a call the probe can serve triggers it (a
        call whose deadline is shorter than one spacing does not)."""
        key = (account, method)
        p = self._paces.get(key)
        if p is None or self.window(account, method) is None:
            return None
        now = self._clock.now()
        probe = self._probe_hold(p, now)
        if probe is None:
            return None
        saved = (p.hold, p.span)
        p.hold, p.span = probe
        wait = self._drain(p, now, slots)
        p.hold, p.span = saved
        return wait

    def commit_expedite(self, account: str, method: str) -> bool:
        """Put the held pace of ``method`` on the probe schedule (see :meth:`expedite`, which
        says whether it would serve a call); ``True`` when the schedule changed."""
        key = (account, method)
        p = self._paces.get(key)
        if p is None or self.window(account, method) is None:
            return False
        probe = self._probe_hold(p, self._clock.now())
        if probe is None:
            return False
        p.short = True
        p.hold, p.span = probe
        self._learned[key] = (_spacing(p.count, p.period), p.flood_at + p.hold)
        self._relax(key)
        return True

    # ------------------------------------------------------------------ sharing (storage)
    def export(self, account: str, method: str) -> dict[str, Any] | None:
        """The state of ``method``'s pace in force as plain data (JSON-safe), every time
        relative to now (seconds; negative: in the past), for other processes on shared
        storage (:mod:`telethon_guard.shared_pace`); ``None`` without a pace in force. Also
        ``"ttl"``: seconds the state matters (until the pace is dropped, plus its probation).
        The evidence (call history) stays local."""
        if self.window(account, method) is None:
            return None
        p = self._paces[(account, method)]
        now = self._clock.now()
        probation = max(self.relax, PACE_PROBATION * p.wait)
        if p.held:
            end = p.flood_at + p.hold + p.span
        else:
            end = p.since + self.recover
        return {"count": p.count, "base": p.base, "held": p.held, "pre": p.pre,
                "flood_at": p.flood_at - now, "since": p.since - now, "hold": p.hold,
                "grow": p.grow, "widest": p.widest, "wait": p.wait, "span": p.span,
                "short": p.short, "quick": p.quick,
                "ttl": max(1.0, end + probation - now)}

    def adopt(self, account: str, method: str, state: dict[str, Any]) -> bool:
        """Apply a pace another process learned (``state`` from :meth:`export` there, its
        relative times taken as relative to now here): it replaces this process's pace of
        ``method`` unless that one was set by a later FLOOD_WAIT. Returns ``True`` when
        adopted. Emits no ``PaceLearned`` (the learning process did). Raises ``KeyError`` /
        ``TypeError`` / ``ValueError`` on malformed state."""
        key = (account, method)
        now = self._clock.now()
        flood_at = now + float(state["flood_at"])
        count = int(state["count"])
        base = float(state["base"])
        if count < 1 or not base > 0:
            raise ValueError(f"not a pace: {state!r}")
        p = self._pace(account, method)
        if p.count and self.window(account, method) is not None and p.flood_at > flood_at:
            return False  # ours is newer: it will be published and adopted by the others
        p.count, p.base, p.period = count, base, base
        p.held = bool(state["held"])
        p.pre = float(state["pre"])
        p.flood_at = flood_at
        _fold(p, len(p.history))  # the buckets as of now, before ``since`` moves
        p.since = now + float(state["since"])
        p.hold = float(state["hold"])
        # The relaxation span and probe schedule (issue 13); a process that does not send
        # them relaxes over twice its hold, with the pace_relax schedule.
        p.span = float(state.get("span", 2.0 * p.hold))
        p.short = bool(state.get("short", False))
        p.quick = float(state.get("quick", 1.0))
        p.grow = float(state["grow"])
        p.widest = max(p.widest, float(state["widest"]))
        p.wait = float(state["wait"])
        p.evidence = None
        p.late = 0
        p.announced = (count, base)
        self._learned[key] = (_spacing(count, base), now)  # recomputed by _relax
        return self._relax(key) is not None

    def _announce(self, key: tuple[str, str], p: _Pace) -> None:
        """Emit ``PaceLearned`` when the learned ``(count, period)`` changed (a restore of the
        pace that was already announced, or a hypothesis that now holds, is not news)."""
        value = (p.count, p.base)
        if value != p.announced:
            p.announced = value
            if self._events is not None:
                self._events.emit(PaceLearned(key[1], p.count, p.base, key[0]))


__all__ = [
    "PACE_BACKOFF",
    "PACE_BUCKET",
    "PACE_DROP",
    "PACE_HORIZON",
    "PACE_JITTER",
    "PACE_MARGIN",
    "PACE_MAX_HOLD_GROWTH",
    "PACE_MAX_STRETCH",
    "PACE_MIN_CALLS",
    "PACE_MIN_WAIT",
    "PACE_PROBATION",
    "PACE_RAMP_STEPS",
    "PACE_RATE_LOOKBACK",
    "PACE_RELAX_STEPS",
    "AdaptivePacer",
    "pre_flood_rate",
]
