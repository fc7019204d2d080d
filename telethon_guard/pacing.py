"""Adaptive pacing: a method's pace learned from its FLOOD_WAITs (used by
:class:`~telethon_guard.flood.FloodLedger`, applied by the rate limiter as the window
``acct:<a>/pace:<m>``).

Telegram does not publish its limits, but a
FLOOD_WAIT_X at time ``t`` says "the calls I accepted lately were the most I allow". A first
pace of method M is learned as ``n`` calls per ``span + X`` seconds: the ``n`` most recent calls
of M answered within the last 120 s (at least 2), ``span`` seconds from the oldest of them to
``t``, with ``n`` chosen for the highest such rate (a lookback into a quiet stretch, such as an
outage, would only average the rate down: the pace never goes below what the server was seen
to accept).
For a sliding-window limit ``(L, W)`` reached from an empty window that is ``(L, ~W)``: the
oldest accepted call leaves the server's window ``X`` seconds later (``X`` is rounded up to
whole seconds, so the estimate errs long: that is the margin). The pace is applied as evenly
spaced calls, one per ``(span + X) / n`` seconds, starting after the calls it was learned from:
no second burst after the wait, no single call held longer than one spacing (plus queueing).

* Replies to calls sent before a learned wait ended are the same event: a refusal teaches
  nothing more (the old design stretched the pace once per refused sibling), an answer that
  arrives during a new pace's wait was accepted before the refusal and refines the estimate
  (with latency, the refusal can overtake the answers of accepted calls).
* A FLOOD_WAIT while the pace *holds* means "still too fast": the pace becomes what the calls
  answered since the last wait teach if that is slower (it never goes below what the server
  was seen to accept), else its period stretches by ``PACE_BACKOFF`` (1.1); never beyond twice
  the widest ``span + X`` seen, so a pace's wait stays of the order of the server's own waits.
* A pace never holds one call longer than the wait Telegram asked for when it was set
  (:meth:`AdaptivePacer.max_wait`, ``X``): a longer wait (a queue of callers above the limit)
  fails that call at once with ``FloodWaitBlocked`` (``from_server=False``), as the server
  would have answered ``FLOOD_WAIT_X``.
* Decay is by time (refused calls teach nothing, so a per-success decay could starve): a pace
  with no FLOOD_WAIT for ``hold = max(pace_relax, 2 * period)`` seconds relaxes, its period
  halving every further ``hold`` seconds (8 steps per halving), and it is dropped at a quarter
  of its period. A FLOOD_WAIT while relaxing restores the learned pace (it held for its whole
  hold) and doubles that method's hold (at most 8x): at a steady limit the probes get rarer;
  after a limit went away the full rate is back within ``3 * hold`` seconds. (gotd's floodwait
  middleware decays its delay 1 s per success instead.)
"""

from __future__ import annotations

from collections import deque

from .clock import Clock
from .config import Windows
from .events import EventBus, PaceLearned

PACE_HORIZON = 120.0
"""Seconds of call history considered when learning a first pace."""
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
"""Steps per halving of a relaxing pace's period (each step: ``2 ** (-1/8)``, about -8 %)."""
PACE_DROP = 4.0
"""A relaxing pace is dropped once its period is ``1/PACE_DROP`` of the learned one."""
PACE_MAX_HOLD_GROWTH = 8.0
"""Largest multiple of its base hold a method's hold grows to after floods on relaxing paces."""


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


class _Pace:
    __slots__ = ("base", "count", "evidence", "flood_at", "grow", "history", "hold", "late",
                 "period", "since", "wait", "widest")

    def __init__(self) -> None:
        self.history: deque[float] = deque(maxlen=512)  # success times (clock seconds)
        self.since = float("-inf")  # end of the last server wait learned from
        self.count = 0  # learned count (0: no pace)
        self.base = 0.0  # learned period, before relaxing
        self.period = 0.0  # current period (relaxed)
        self.flood_at = 0.0  # time of the last FLOOD_WAIT that set or kept the pace
        self.hold = 0.0  # seconds the pace holds unchanged after flood_at
        self.grow = 1.0  # hold multiplier (doubles on a flood while relaxing)
        self.widest = 0.0  # largest window estimate span + X seen (seconds)
        self.wait = 0.0  # X of the FLOOD_WAIT the pace was last set from (seconds)
        # A new pace's evidence (answer times before the FLOOD_WAIT) and the answers that
        # arrived during its wait (calls the server accepted before refusing, whose answers
        # were slower than the refusal): they refine the pace until the wait ends.
        self.evidence: list[float] | None = None
        self.late = 0


class AdaptivePacer:
    """Learns a method's pace from its FLOOD_WAITs (see the module docstring). Local state.

    ``relax``: ``GuardConfig.pace_relax`` (seconds). All times are on ``clock`` (monotonic).
    """

    __slots__ = ("_clock", "_events", "_learned", "_paces", "max_methods", "relax",
                 "seed_ages")

    def __init__(self, clock: Clock, events: EventBus | None = None, *, relax: float = 5.0,
                 max_methods: int = 4096) -> None:
        if not relax > 0:
            raise ValueError(f"relax must be > 0 seconds, got {relax!r}")
        self._clock = clock
        self._events = events
        self._paces: dict[tuple[str, str], _Pace] = {}
        # Active paces only: (window the limiter applies, clock time it next changes).
        # window() is asked on every call, and is one truth test while no pace is learned.
        self._learned: dict[tuple[str, str], tuple[Windows, float]] = {}
        self.relax = relax
        self.max_methods = max_methods
        self.seed_ages: list[float] = []  # ages (s) of the calls a new pace was learned from

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
        """Step a pace held for its ``hold`` towards unpaced; drop it at ``base / PACE_DROP``."""
        p = self._paces.get(key)
        if p is None or not p.count:
            self._learned.pop(key, None)
            return None
        now = self._clock.now()
        hold_end = p.flood_at + p.hold
        if now < hold_end:
            window = _spacing(p.count, p.period)
            self._learned[key] = (window, hold_end)
            return window
        step = p.hold / PACE_RELAX_STEPS
        k = int((now - hold_end) / step) + 1
        factor = 2.0 ** (-k / PACE_RELAX_STEPS)
        if factor * PACE_DROP <= 1.0 + 1e-9:
            self._drop(key, p)
            return None
        p.period = p.base * factor
        window = _spacing(p.count, p.period)
        self._learned[key] = (window, hold_end + k * step)
        return window

    def _drop(self, key: tuple[str, str], p: _Pace) -> None:
        p.count = 0
        p.period = p.base = 0.0
        p.grow = 1.0
        self._learned.pop(key, None)
        if self._events is not None:
            self._events.emit(PaceLearned(key[1], 0, 0.0, key[0]))

    def max_wait(self, account: str, method: str) -> float | None:
        """Longest wait (seconds) the pace of ``method`` may impose on one call: the wait
        Telegram asked for when the pace was set (``X``), or two spacings if longer;
        ``None`` without a pace. A longer pace wait fails that call with ``FloodWaitBlocked``
        (``from_server=False``) instead of queueing it: the server would have answered the
        same with ``FLOOD_WAIT_X``."""
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
        return p

    def on_success(self, account: str, method: str) -> None:
        """Record one call of ``method`` answered by Telegram (its time, for learning)."""
        p = self._paces.get((account, method))
        if p is None:
            p = self._pace(account, method)
        now = self._clock.now()
        p.history.append(now)
        if p.evidence is not None:
            if now < p.since and p.count:
                p.late += 1
                self._refine((account, method), p)
            else:
                p.evidence = None

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
        if best is None or best[0] * p.base <= p.count * best[1] * PACE_MARGIN:
            return
        p.widest = max(p.widest, best[1])
        p.count, p.base = best[0], best[1] * PACE_MARGIN
        p.period = p.base
        p.hold = max(self.relax, 2.0 * p.base) * p.grow
        window = _spacing(p.count, p.base)
        self._learned[key] = (window, p.flood_at + p.hold)
        if self._events is not None:
            self._events.emit(PaceLearned(key[1], p.count, p.base, key[0]))

    def on_flood(self, account: str, method: str, seconds: float) -> Windows | None:
        """Learn from a FLOOD_WAIT of ``seconds`` on ``method``; return the pace window now in
        force (``None``: nothing learned). Sets :attr:`seed_ages` when a *new* pace should start
        with the calls it was learned from (empty otherwise)."""
        self.seed_ages = []
        now = self._clock.now()
        key = (account, method)
        p = self._pace(account, method)
        if now < p.since or seconds < PACE_MIN_WAIT:
            # A reply to a call sent before the wait we already learned from ended (its
            # siblings in flight): the same event, nothing new to learn.
            return None
        active = bool(p.count) and self.window(account, method) is not None
        relaxing = active and now >= p.flood_at + p.hold
        start = max(p.since, now - PACE_HORIZON)
        calls = [t for t in p.history if t > start]
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
        if not active:
            if cand is None:
                return None
            count, period = cand
            p.grow = 1.0
            self.seed_ages = [now - t for t in calls]
            p.evidence = calls
            p.late = 0
        elif relaxing:
            # The relaxed pace was too fast; the learned one held for its whole hold: restore
            # it, and hold it longer next time.
            # (Calls counted over a cycle that did not start from an empty server window
            # overstate the rate, so this cycle teaches nothing more.)
            count, period = p.count, p.base
            p.grow = min(PACE_MAX_HOLD_GROWTH, p.grow * 2.0)
        else:
            # Too fast while holding: slow down to what this cycle's accepted calls teach,
            # or stretch (bounded) when they teach nothing slower.
            count, period = p.count, p.period * PACE_BACKOFF
            if cand is not None and cand[0] / cand[1] < p.count / p.period:
                count, period = cand
        cap = PACE_MAX_STRETCH * PACE_MARGIN * max(p.widest, seconds)
        period = min(period, cap)
        p.count, p.base, p.period = count, period, period
        p.flood_at = now
        p.wait = seconds
        p.hold = max(self.relax, 2.0 * period) * p.grow
        window = _spacing(count, period)
        self._learned[key] = (window, now + p.hold)
        if self._events is not None:
            self._events.emit(PaceLearned(method, count, period, account))
        return window


__all__ = [
    "PACE_BACKOFF",
    "PACE_DROP",
    "PACE_HORIZON",
    "PACE_MARGIN",
    "PACE_MAX_HOLD_GROWTH",
    "PACE_MAX_STRETCH",
    "PACE_MIN_CALLS",
    "PACE_MIN_WAIT",
    "PACE_RELAX_STEPS",
    "AdaptivePacer",
]
