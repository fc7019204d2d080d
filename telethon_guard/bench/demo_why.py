"""Why a demo call failed: one short reason per outcome, read off the typed error itself.

:func:`explain` turns one failed call into a :class:`Why` (the error's name, a reason template
and the figures it needs: how long the method was blocked, how much of the call's deadline was
left, ...). :class:`WhyTable` groups them per (error, reason) and renders one line each, with
the figures as ranges, e.g. ``FloodWaitBlocked 160: messages.getHistory blocked 3.1-24.0 s
(median 12.2) > deadline left 0.0-13.9 s (median 11.0): refused before sending``.

The reasons use only what the error carries (``retry_after``, ``from_server``, ``method``,
``key``, ``deadline``, Telethon's ``seconds`` / ``code``) and the call's own clock (seconds
since the call started, monotonic), so they say what the guard knew when it gave up.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from telethon import errors as tl_errors

from telethon_guard import errors as guard_errors
from telethon_guard.bench.common import BenchTimeout, error_name


@dataclass(frozen=True)
class Why:
    """One failed call: ``error`` (type name), ``reason`` (a ``str.format`` template over
    ``figures``' keys; each figure is rendered as a range of seconds) and ``after`` (seconds
    from the call to its error)."""

    error: str
    reason: str
    figures: tuple[tuple[str, float], ...] = ()
    after: float = 0.0
    phase: str = ""


def _left(deadline: float | None, after: float) -> float | None:
    return None if deadline is None else max(0.0, deadline - after)


def explain(exc: BaseException, *, deadline: float | None, after: float,
            max_flood_wait: float | None = None, phase: str = "") -> Why:
    """The reason ``exc`` ended a call that ran ``after`` seconds with a ``deadline`` (seconds,
    ``None`` for plain Telethon, which has none) and the client's ``max_flood_wait`` (seconds).
    ``phase`` names the part of the incident in which the call was made."""
    why = _explain(exc, deadline, after, max_flood_wait)
    return Why(why.error, why.reason, why.figures, after, phase)


def _explain(exc: BaseException, deadline: float | None, after: float,
             max_flood_wait: float | None) -> Why:
    name = error_name(exc)
    left = _left(deadline, after)
    if isinstance(exc, guard_errors.FloodWaitMultiError):
        items = _item_names(exc.exceptions)
        return Why(name, "batch: every failed item a FLOOD_WAIT (" + items + "), the longest "
                   "{wait}; catchable as FloodWaitError, the other items' results kept",
                   (("wait", float(exc.retry_after or exc.seconds)),), after)
    if isinstance(exc, tl_errors.MultiError):
        return Why(name, "batch: items failed with " + _item_names(exc.exceptions)
                   + "; see .exceptions", (), after)
    if isinstance(exc, (guard_errors.FloodWaitBlocked, guard_errors.SlowModeBlocked,
                        guard_errors.FloodPremiumBlocked)):
        wait = float(exc.retry_after or 0.0)
        figures: list[tuple[str, float]] = [("wait", wait)]
        if left is not None and wait >= left:
            budget = "> the deadline left {left}"
            figures.append(("left", left))
        elif max_flood_wait is not None and wait > max_flood_wait:
            budget = f"> max_flood_wait {max_flood_wait:g} s"
        else:
            # Within the deadline and max_flood_wait as the demo measures them: the wait would
            # have left the attempt less than its network budget (min(attempt_timeout or 1 s,
            # 10 % of the deadline)) before the deadline, as the guard measured it.
            budget = "+ the attempt's network budget > the deadline left"
            if left is not None:
                budget += " {left}"
                figures.append(("left", left))
        if exc.from_server:
            text = (f"Telegram answered FLOOD_WAIT for {exc.method}: {{wait}} {budget}; "
                    "raised at once instead of sleeping")
        else:
            text = (f"{exc.method} would wait {{wait}} (a FLOOD_WAIT Telegram announced, or "
                    f"the pace learned from it) {budget}: refused before sending")
        return Why(name, text, tuple(figures), after)
    if isinstance(exc, guard_errors.CircuitOpenError):
        return Why(name, "circuit breaker OPEN after transport failures: failed without a "
                   "network call, retry after {wait}",
                   (("wait", float(exc.retry_after or 0.0)),), after)
    if isinstance(exc, guard_errors.TransportFloodError):
        return Why(name, "transport -429: the paced reconnect did not fit the deadline",
                   (), after)
    if isinstance(exc, guard_errors.DeadlineExceeded):
        budget = f"{round(exc.deadline, 1):g} s"
        if after < exc.deadline - 0.1:
            return Why(name, f"the call could not finish within its deadline of {budget} "
                       "(a wait it needed ends later): raised before the deadline ran out",
                       (), after)
        return Why(name, f"the call's deadline of {budget} ran out", (), after)
    if isinstance(exc, guard_errors.AttemptTimeoutError):
        return Why(name, f"no answer within the attempt timeout of {exc.timeout:g} s", (),
                   after)
    if isinstance(exc, guard_errors.GuardConnectionError):
        return Why(name, "the connection dropped and no reconnect fitted the deadline", (),
                   after)
    if isinstance(exc, guard_errors.ClientDisconnectedError):
        return Why(name, "the client was disconnected", (), after)
    if isinstance(exc, BenchTimeout):
        return Why("no answer", f"still pending after the demo's time box of {exc.seconds:g} s "
                   "(the call would have hung)", (), after)
    if isinstance(exc, tl_errors.InvalidBufferError):
        return Why(name, f"transport {exc.code} reached the caller; Telethon dropped the "
                   "connection", (), after)
    if isinstance(exc, tl_errors.FloodWaitError):
        return Why(name, "Telegram's FLOOD_WAIT {wait} reached the caller",
                   (("wait", float(exc.seconds)),), after)
    if isinstance(exc, ConnectionError):
        first = (str(exc).splitlines() or [""])[0][:60]
        return Why(name, f"Telethon's connection is gone after the -429 ({first!r}); it does "
                   "not reconnect on its own", (), after)
    first = (str(exc).splitlines() or [""])[0][:60]
    return Why(name, first or "no message", (), after)


def _item_names(items: Sequence[BaseException | None]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for e in items:
        counts["ok" if e is None else error_name(e)] += 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
                     if k != "ok") + (f"; ok {counts['ok']}" if counts.get("ok") else "")


def span(values: Sequence[float]) -> str:
    """``values`` (seconds) as ``1.2 s`` or ``0.0-3.4 s (median 1.1)``."""
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    if hi - lo < 0.05:
        return f"{lo:.1f} s"
    return f"{lo:.1f}-{hi:.1f} s (median {statistics.median(values):.1f})"


@dataclass
class _Group:
    count: int = 0
    figures: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    after: list[float] = field(default_factory=list)
    phases: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class WhyTable:
    """The reasons of one client's failed calls, grouped per (error, reason)."""

    groups: dict[tuple[str, str], _Group] = field(default_factory=dict)

    def add(self, why: Why) -> None:
        g = self.groups.setdefault((why.error, why.reason), _Group())
        g.count += 1
        for k, v in why.figures:
            g.figures[k].append(v)
        g.after.append(why.after)
        if why.phase:
            g.phases[why.phase] += 1

    def lines(self) -> list[str]:
        """One line per group, most frequent first: ``error count: reason; failed after ...``."""
        out = []
        for (error, reason), g in sorted(self.groups.items(), key=lambda kv: -kv[1].count):
            text = reason.format(**{k: span(v) for k, v in g.figures.items()})
            made = ", ".join(f"{p} {n}" for p, n in g.phases.items())
            out.append(f"{error} {g.count}: {text}; failed {span(g.after)} after the call"
                       + (f"; calls made during: {made}" if made else ""))
        return out

    def to_json(self) -> list[dict[str, object]]:
        return [
            {"error": error, "calls": g.count,
             "reason": reason.format(**{k: span(v) for k, v in g.figures.items()}),
             "failed_after_median_s": round(statistics.median(g.after), 3) if g.after else None,
             "failed_after_max_s": round(max(g.after), 3) if g.after else None,
             "made_during": dict(g.phases)}
            for (error, reason), g in sorted(self.groups.items(), key=lambda kv: -kv[1].count)
        ]
