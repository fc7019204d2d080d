"""Goodput at a known and at an unknown limit.

The server enforces per-method sliding-window limits (``FloodWindow``: at most ``limit``
accepted calls per ``window`` seconds per account and method, then ``FLOOD_WAIT_X`` with the
true seconds left, as Telegram's flood control does). Several tasks per method call as fast
as they can. Three clients run at once, each on its own account (so their windows are
independent): plain Telethon (which sleeps FLOOD_WAITs itself), telethon-guard told the limits
(``method_limits``), and telethon-guard not told (adaptive pacing only).

Goodput of one (client, method) is the number of calls the server *accepted* in ``k`` whole
windows starting at that client's first accepted call, divided by ``k * limit`` (the most the
window allows): 1.00 is the limit exactly. Over several methods the counts and capacities are
summed. FLOOD_WAITs are the ``FLOOD_WAIT_X`` replies the server sent to that account. For the
unknown limit, "after convergence" is the second half of the run.

Targets (issue 4): known >= 97 % with 0 FLOOD_WAITs; unknown >= 90 % with at most one
FLOOD_WAIT per method after convergence.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from telethon import TelegramClient, functions, types
from telethon.tl.tlobject import TLRequest

from telethon_guard.bench.common import (
    BenchTimeout,
    ClientSpec,
    bounded,
    cancel_all,
    connected_clients,
    error_name,
    guarded_class,
    history_request,
)
from telethon_guard.bench.context import BenchSettings, WorkloadContext
from telethon_guard.bench.results import Chart, Row
from telethon_guard.bench.serverproc import ServerProcess

KNOWN_TARGET = 0.97
UNKNOWN_TARGET = 0.90
TASKS_PER_METHOD = 4


@dataclass(frozen=True)
class MethodLimit:
    """``limit`` accepted calls per ``window`` seconds of ``method`` (per account)."""

    method: str
    limit: int
    window: float
    make: Callable[[], TLRequest]


def _full_user() -> TLRequest:
    return functions.users.GetFullUserRequest(types.InputUserSelf())


# Scaled-down versions of the community-observed ~30 getHistory per 30 s (design-notes §3): short
# windows so a run covers many of them.
LIMITS = (
    MethodLimit("messages.getHistory", 20, 2.0, history_request),
    MethodLimit("users.getFullUser", 8, 2.0, _full_user),
)


@dataclass
class ClientOutcome:
    """What one client achieved: per method accepted calls / capacity and FLOOD_WAIT times."""

    name: str
    accepted: dict[str, int] = field(default_factory=dict)
    capacity: dict[str, int] = field(default_factory=dict)
    flood_waits: dict[str, int] = field(default_factory=dict)
    flood_waits_late: dict[str, int] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def ratio(self) -> float:
        cap = sum(self.capacity.values())
        return sum(self.accepted.values()) / cap if cap else float("nan")

    @property
    def total_flood_waits(self) -> int:
        return sum(self.flood_waits.values())

    @property
    def max_late_flood_waits(self) -> int:
        return max(self.flood_waits_late.values(), default=0)


@dataclass
class GoodputRun:
    plain: ClientOutcome
    known: ClientOutcome | None
    unknown: ClientOutcome | None
    windows: int
    seconds: float


def windows_for(settings: BenchSettings) -> int:
    """Whole windows measured: ``--quick``: 6 at the default ``duration`` (2.5 s), at least 2;
    else ``duration`` x 1.5 (15 at the default 10 s), at least 10."""
    if settings.quick:
        return max(2, round(settings.duration * 2.4))
    return max(10, round(settings.duration * 1.5))


async def _callers(client: Any, stop_at: float, errors: Counter[str]) -> None:
    loop = asyncio.get_running_loop()

    async def caller(make: Callable[[], TLRequest]) -> None:
        while True:
            left = stop_at - loop.time()
            if left <= 0:
                return
            try:
                await bounded(client(make()), left + 1.0)
            except BenchTimeout:
                return
            except Exception as e:
                # A well-behaved caller: honour a flood wait that reached it, back off a
                # little on anything else (never spin on an immediate error).
                errors[error_name(e)] += 1
                pause = float(getattr(e, "retry_after", None) or getattr(e, "seconds", 0) or 0)
                await asyncio.sleep(min(max(pause, 0.05), max(0.0, stop_at - loop.time())))

    await asyncio.gather(*(caller(m.make) for m in LIMITS for _ in range(TASKS_PER_METHOD)))


def _outcome(name: str, account: int, summary: dict[str, Any], windows: int,
             mid: float, errors: Counter[str]) -> ClientOutcome:
    acc = str(account)
    out = ClientOutcome(name, errors=errors)
    ok_times: dict[str, list[float]] = summary["ok_times"].get(acc, {})
    flood_times: dict[str, list[float]] = summary["flood_times"].get(acc, {})
    for m in LIMITS:
        times = sorted(ok_times.get(m.method, []))
        span = windows * m.window
        if times:
            t0 = times[0]
            out.accepted[m.method] = sum(1 for t in times if t0 <= t < t0 + span - 1e-9)
        else:
            out.accepted[m.method] = 0
        out.capacity[m.method] = windows * m.limit
        floods = flood_times.get(m.method, [])
        out.flood_waits[m.method] = len(floods)
        out.flood_waits_late[m.method] = sum(1 for t in floods if t >= mid)
    return out


async def measure(ctx: WorkloadContext, known: bool, unknown: bool) -> GoodputRun:
    """Run plain and the requested guarded variants at once; see the module docstring."""
    windows = windows_for(ctx.settings)
    seconds = windows * max(m.window for m in LIMITS)
    rules = [("FloodWindow", {"method": m.method, "limit": m.limit, "window": m.window})
             for m in LIMITS]
    method_limits = {m.method: ((m.limit, m.window),) for m in LIMITS}
    async with ServerProcess() as srv:
        await srv.add_rules(*rules)
        specs: list[ClientSpec] = [
            ("plain", TelegramClient, {})]
        if known:
            specs.append(("known", guarded_class(), {"method_limits": method_limits}))
        if unknown:
            specs.append(("unknown", guarded_class(), {}))
        async with connected_clients(srv, specs) as (clients, accounts):
            errors: dict[str, Counter[str]] = {name: Counter() for name in clients}
            loop = asyncio.get_running_loop()
            start = loop.time()
            stop_at = start + seconds + 0.5
            ctx.progress(f"{', '.join(clients)} calling for {seconds:.0f} s "
                         f"({windows} windows of {LIMITS[0].window:g} s)")
            tasks = [asyncio.ensure_future(_callers(c, stop_at, errors[n]))
                     for n, c in clients.items()]
            try:
                await _wait_with_progress(ctx, tasks, stop_at + 5.0)
            except asyncio.CancelledError:
                await cancel_all(tasks)
                await _partial_rows(ctx, srv, accounts, errors, start, loop.time() - start,
                                    known, unknown)
                raise
            finally:
                await cancel_all(tasks)
            summary = await srv.summary(since=start, accounts=list(accounts.values()),
                                        times_for=[m.method for m in LIMITS])
    mid = start + seconds / 2
    outcomes = {n: _outcome(n, accounts[n], summary, windows, mid, errors[n]) for n in clients}
    return GoodputRun(outcomes["plain"], outcomes.get("known"), outcomes.get("unknown"),
                      windows, seconds)


async def _partial_rows(ctx: WorkloadContext, srv: ServerProcess, accounts: dict[str, int],
                        errors: dict[str, Counter[str]], start: float, elapsed: float,
                        known: bool, unknown: bool) -> None:
    """Ctrl-C during the run: the rows over the whole windows measured so far (read from the
    server's log, bounded by 5 s) as ``ctx.partial`` / ``ctx.more_partial``; nothing when not
    one window was complete or the log cannot be read."""
    window = max(m.window for m in LIMITS)
    windows = int(elapsed // window)
    if windows < 1:
        return
    try:
        summary = await asyncio.wait_for(
            srv.summary(since=start, accounts=list(accounts.values()),
                        times_for=[m.method for m in LIMITS]), 5.0)
    except (Exception, asyncio.TimeoutError):
        return
    mid = start + windows * window / 2
    outcomes = {n: _outcome(n, accounts[n], summary, windows, mid, errors[n]) for n in accounts}
    run = GoodputRun(outcomes["plain"], outcomes.get("known"), outcomes.get("unknown"),
                     windows, windows * window)
    rows = ([known_row(run, complete=False)] if known else []) + (
        [unknown_row(run, complete=False)] if unknown else [])
    ctx.partial, ctx.more_partial = rows[0], rows[1:]


async def _wait_with_progress(ctx: WorkloadContext, tasks: Sequence[asyncio.Future[None]],
                              until: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        left = until - loop.time()
        if left <= 0:
            return
        _, pending = await asyncio.wait(tasks, timeout=min(5.0, left))
        if not pending:
            return
        ctx.progress(f"{loop.time() - start:.0f} s")


def _cell(o: ClientOutcome) -> str:
    return f"{o.ratio:.1%} of limit, {o.total_flood_waits} FLOOD_WAIT"


def _errors_note(outcomes: list[ClientOutcome]) -> str:
    parts = []
    for o in outcomes:
        if o.errors:
            parts.append(f"{o.name} errors: " + ", ".join(
                f"{k} x{v}" for k, v in o.errors.most_common()))
    return "; ".join(parts)


def known_row(run: GoodputRun, complete: bool = True) -> Row:
    assert run.known is not None
    g, p = run.known, run.plain
    met = g.ratio >= KNOWN_TARGET and g.total_flood_waits == 0
    notes = []
    if g.ratio < KNOWN_TARGET:
        notes.append(f"goodput {g.ratio:.1%} is {(KNOWN_TARGET - g.ratio) * 100:.1f} points "
                     f"below {KNOWN_TARGET:.0%} (rate limiter layer)")
    if g.total_flood_waits:
        notes.append(f"{g.total_flood_waits} FLOOD_WAITs although the limits were configured "
                     f"(rate limiter layer: it admits calls the server's sliding window refuses)")
    extra = _errors_note([p, g])
    if extra:
        notes.append(extra)
    return Row(
        workload="goodput-known",
        label=f"goodput, known limit ({run.windows} x {LIMITS[0].window:g} s)",
        plain=_cell(p), guarded=_cell(g),
        result=f"{g.ratio:.1%} of limit",
        target=f">= {KNOWN_TARGET:.0%}, 0 FLOOD_WAIT",
        met=met,
        figures={
            "goodput_known_ratio": round(g.ratio, 4),
            "flood_waits_known": g.total_flood_waits,
            "goodput_plain_ratio": round(p.ratio, 4),
            "flood_waits_plain": p.total_flood_waits,
            **{f"goodput_known_ratio[{m}]": round(g.accepted[m] / g.capacity[m], 4)
               for m in g.capacity},
            "goodput_seconds": run.seconds,
        },
        note="; ".join(notes),
        complete=complete,
        chart=Chart("share of limit (%)", "plain", p.ratio * 100, "guard", g.ratio * 100),
    )


def unknown_row(run: GoodputRun, complete: bool = True) -> Row:
    assert run.unknown is not None
    g, p = run.unknown, run.plain
    met = g.ratio >= UNKNOWN_TARGET and g.max_late_flood_waits <= 1
    notes = []
    if g.ratio < UNKNOWN_TARGET:
        notes.append(f"goodput {g.ratio:.1%} is {(UNKNOWN_TARGET - g.ratio) * 100:.1f} points "
                     f"below {UNKNOWN_TARGET:.0%} (flood ledger / adaptive pacing layer)")
    if g.max_late_flood_waits > 1:
        notes.append(f"up to {g.max_late_flood_waits} FLOOD_WAITs per method in the second half "
                     f"(adaptive pacing does not converge)")
    extra = _errors_note([g])
    if extra:
        notes.append(extra)
    late = ", ".join(f"{m.split('.')[-1]} {n}" for m, n in g.flood_waits_late.items())
    return Row(
        workload="goodput-unknown",
        label=f"goodput, unknown limit ({run.windows} x {LIMITS[0].window:g} s)",
        plain=_cell(p), guarded=_cell(g) + f" ({late} late)",
        result=f"{g.ratio:.1%} of limit",
        target=f">= {UNKNOWN_TARGET:.0%}, <= 1 late FLOOD_WAIT/method",
        met=met,
        figures={
            "goodput_unknown_ratio": round(g.ratio, 4),
            "flood_waits_unknown": g.total_flood_waits,
            "flood_waits_unknown_after_convergence_max_per_method": g.max_late_flood_waits,
            "goodput_plain_ratio": round(p.ratio, 4),
            "flood_waits_plain": p.total_flood_waits,
            **{f"goodput_unknown_ratio[{m}]": round(g.accepted[m] / g.capacity[m], 4)
               for m in g.capacity},
        },
        note="; ".join(notes),
        complete=complete,
        chart=Chart("share of limit (%)", "plain", p.ratio * 100, "guard", g.ratio * 100),
    )


# Both rows come from one run when both workloads are selected (three clients at once, on
# separate accounts, so they do not disturb each other's windows): the second row is kept here.
_shared: dict[int, GoodputRun] = {}


async def run_known(ctx: WorkloadContext) -> Row:
    both = not ctx.settings.only or "goodput-unknown" in ctx.settings.only
    run = await measure(ctx, known=True, unknown=both)
    if both:
        _shared[id(ctx.settings)] = run
    return known_row(run)


async def run_unknown(ctx: WorkloadContext) -> Row:
    run = _shared.pop(id(ctx.settings), None)
    if run is None or run.unknown is None:
        run = await measure(ctx, known=False, unknown=True)
    return unknown_row(run)
