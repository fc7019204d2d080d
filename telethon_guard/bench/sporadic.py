"""Sporadic floods: one-off FLOOD_WAIT_X with no rate limit behind them (issue 13).

Floods in production are often sporadic (a burst, a server-side hiccup, a limit that changed):
the guard must pay the X seconds Telegram asked for and then serve at full rate again, not
keep a pace learned from one flood. The workload is the example service's
(``examples/fastapi_service``): every second one request fans out into
``CALLS_PER_REQUEST`` (4) concurrent calls of one method (``/channels``: 4
``channels.getFullChannel``; here ``messages.getHistory``, which every test account can call),
so 4 calls/s. Each call has a budget of ``BUDGET`` (2) seconds, the example's ``/channels``
timeout: a call answered later is useless to its HTTP caller and does not count.

Four clients run at once, each on its own account (one server process, the same seconds of
machine load for all): plain Telethon and telethon-guard (``deadline=BUDGET``), each once with
the floods and once without. A flood is scripted on the server for the two flood accounts:
the next request's first call is answered, its second gets ``FLOOD_WAIT_X`` and every call of
that account and method in the next X seconds is refused with the seconds left (Telegram's
block), then the rule is removed: nothing is rate-limited before or after. FLOOD_WAIT_5 at
about a quarter of the run (45 % with ``--quick``, so that it comes more than its 5 s after the
traffic starts; the example's scripted flood) and, in full runs, FLOOD_WAIT_3 at about 60 % (the
issue's one-off ``getHistory`` flood).

Goodput of a client is the number of calls answered within the budget. Target (issue 13):
guarded goodput with floods >= 95 % of the guarded no-flood goodput times
``(T - sum(X)) / T`` (the X seconds Telegram asked for are the only allowed loss). The row also
shows how long after each flood's X the guard still delayed calls (``held``: from the flood's
end to the last call issued after it that took more than one call interval longer than the
no-flood median), which the pacing model bounds by ``pace_recover`` (2 s).
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telethon import TelegramClient
from telethon.tl.tlobject import TLRequest

from telethon_guard.bench.common import (
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

TARGET = 0.95
METHOD = "messages.getHistory"
CALLS_PER_REQUEST = 4  # the example's /channels fans out into 4 getFullChannel
REQUEST_INTERVAL = 1.0  # seconds between requests: 4 calls/s, the example's load
BUDGET = 2.0  # seconds a call may take (the example's /channels timeout)
SLACK = 10.0  # the bench's time box beyond the budget and the flood (never hang)


@dataclass(frozen=True)
class Flood:
    """``FLOOD_WAIT_{seconds}`` answered to the first call at or after ``at`` s into the run."""

    at: float
    seconds: int


def plan_for(settings: BenchSettings) -> tuple[float, tuple[Flood, ...]]:
    """``(run seconds, floods)``: ``--quick``: 6 x ``duration`` (15 s at 2.5, at least 12)
    with one FLOOD_WAIT_5 at about 45 % (more than X after the traffic starts); else
    6 x ``duration`` (60 s at the default 10, at least 40) with FLOOD_WAIT_5 at about a
    quarter and FLOOD_WAIT_3 at about 60 % (more than the probation apart). Each flood is
    scripted half a request interval before a request, so it hits that request's calls."""
    def at(seconds: float, share: float) -> float:
        return math.floor(seconds * share) - REQUEST_INTERVAL / 2

    if settings.quick:
        # The flood comes more than its X after the traffic starts: a flood within X of the
        # start cannot be told from a real limit reached from idle (the pacer then holds the
        # pace, as documented), which is not the sporadic case this workload measures.
        seconds = float(round(max(12.0, 6.0 * settings.duration)))
        return seconds, (Flood(at(seconds, 0.45), 5),)
    seconds = float(round(max(40.0, 6.0 * settings.duration)))
    return seconds, (Flood(at(seconds, 0.25), 5), Flood(at(seconds, 0.6), 3))


@dataclass
class Calls:
    """One client's calls: ``(issued, answered or None, error name or "")`` in run seconds."""

    name: str
    spans: list[tuple[float, float | None, str]] = field(default_factory=list)

    def good(self) -> int:
        return sum(1 for a, b, _ in self.spans if b is not None and b - a <= BUDGET)

    def errors(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for a, b, e in self.spans:
            if e:
                out[e] += 1
            elif b is not None and b - a > BUDGET:
                out[f"answered after {BUDGET:g} s"] += 1
        return out

    def latencies(self) -> list[float]:
        return [b - a for a, b, e in self.spans if b is not None and not e]


async def _client_load(client: Any, out: Calls, start: float, run: float,
                       make: Callable[[], TLRequest]) -> None:
    """``CALLS_PER_REQUEST`` concurrent calls every ``REQUEST_INTERVAL`` s for ``run`` s."""
    loop = asyncio.get_running_loop()

    async def one() -> None:
        issued = loop.time() - start
        try:
            await bounded(client(make()), BUDGET + SLACK)
        except Exception as e:  # BenchTimeout included
            out.spans.append((issued, None, error_name(e)))
            return
        out.spans.append((issued, loop.time() - start, ""))

    tasks: list[asyncio.Task[None]] = []
    i = 0
    while True:
        t = i * REQUEST_INTERVAL
        if t >= run:
            break
        delay = start + t - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.extend(asyncio.ensure_future(one()) for _ in range(CALLS_PER_REQUEST))
        i += 1
    await asyncio.gather(*tasks)


@dataclass
class SporadicRun:
    run: float
    floods: tuple[Flood, ...]
    calls: dict[str, Calls]
    flood_times: dict[str, list[float]]  # run seconds of the FLOOD_WAITs each client got


async def measure(ctx: WorkloadContext) -> SporadicRun:
    """Run the four clients at once; see the module docstring."""
    run, floods = plan_for(ctx.settings)
    specs: list[ClientSpec] = [
        ("plain", TelegramClient, {}),
        ("guard", guarded_class(), {"deadline": BUDGET}),
        ("plain, no floods", TelegramClient, {}),
        ("guard, no floods", guarded_class(), {"deadline": BUDGET}),
    ]
    async with ServerProcess() as srv:
        async with connected_clients(srv, specs) as (clients, accounts):
            calls = {name: Calls(name) for name in clients}
            loop = asyncio.get_running_loop()
            start = loop.time() + 0.2
            ctx.progress(f"4 clients, {CALLS_PER_REQUEST} calls every {REQUEST_INTERVAL:g} s "
                         f"for {run:.0f} s; floods: "
                         + ", ".join(f"FLOOD_WAIT_{f.seconds} at {f.at:g} s" for f in floods))
            loads = [asyncio.ensure_future(_client_load(c, calls[n], start, run, history_request))
                     for n, c in clients.items()]
            try:
                ctx.partial = _partial(calls, floods, 0.0)
                for f in floods:
                    await asyncio.sleep(max(0.0, start + f.at - loop.time()))
                    # One accepted call, then FLOOD_WAIT_X and X seconds of refusals (each with
                    # the seconds left), as Telegram blocks a flooded method; then no limit.
                    await srv.add_rules(*(
                        ("FloodWindow", {"method": METHOD, "limit": 1, "window": 1e6,
                                         "seconds": f.seconds, "account": accounts[n]})
                        for n in ("plain", "guard")))
                    ctx.progress(f"FLOOD_WAIT_{f.seconds} scripted at {f.at:g} s")
                    fired = math.ceil(f.at / REQUEST_INTERVAL) * REQUEST_INTERVAL
                    await asyncio.sleep(max(0.0, start + fired + f.seconds - 0.05 - loop.time()))
                    await srv.clear_rules()
                await bounded(asyncio.gather(*loads), run + BUDGET + SLACK + 5.0)
            except asyncio.CancelledError:
                # Ctrl-C: the calls answered so far, as an incomplete row.
                ctx.partial = _partial(calls, floods, loop.time() - start)
                raise
            finally:
                await cancel_all(loads)
            summary = await srv.summary(since=start, accounts=list(accounts.values()),
                                        times_for=[METHOD])
    flood_times = {
        n: sorted(t - start for t in summary["flood_times"].get(str(accounts[n]), {})
                  .get(METHOD, []))
        for n in clients}
    return SporadicRun(run, floods, calls, flood_times)


def _partial(calls: dict[str, Calls], floods: tuple[Flood, ...], elapsed: float) -> Row:
    """The row of a run cut short after ``elapsed`` seconds: the calls answered so far, the
    floods scripted so far (not judged: the runner marks it incomplete)."""
    done = tuple(f for f in floods if f.at < elapsed)
    return row(SporadicRun(max(elapsed, 1e-9), done, calls, {}), complete=False)


def held_after(run: SporadicRun, name: str) -> list[float]:
    """Per flood: seconds after ``flood + X`` until the last call issued after the flood (and
    before the next one) that took more than one request interval longer than the no-flood
    median latency of the same client kind (0 when none did)."""
    kind = "guard" if name.startswith("guard") else "plain"
    base = run.calls[f"{kind}, no floods"].latencies()
    median = statistics.median(base) if base else 0.0
    out: list[float] = []
    times = run.flood_times.get(name, [])
    for i, f in enumerate(run.floods):
        fired = next((t for t in times if t >= f.at - 0.5), f.at)
        end = run.floods[i + 1].at if i + 1 < len(run.floods) else run.run
        free = fired + f.seconds
        slow = [a for a, b, e in run.calls[name].spans
                if fired <= a < end and (e or b is None or b - a > median + REQUEST_INTERVAL)]
        out.append(max(0.0, max(slow) - free) if slow else 0.0)
    return out


def target_calls(run: SporadicRun) -> float:
    """The goodput the guard must reach: 95 % of its no-flood goodput scaled by the share of
    the run Telegram did not ask us to wait."""
    base = run.calls["guard, no floods"].good()
    waited = sum(f.seconds for f in run.floods)
    return TARGET * base * (run.run - waited) / run.run


def row(run: SporadicRun, complete: bool = True) -> Row:
    guard, plain = run.calls["guard"], run.calls["plain"]
    gbase, pbase = run.calls["guard, no floods"], run.calls["plain, no floods"]
    need = target_calls(run)
    met = guard.good() >= need
    held = held_after(run, "guard")
    held_plain = held_after(run, "plain")
    waited = sum(f.seconds for f in run.floods)
    ratio = guard.good() / gbase.good() if gbase.good() else float("nan")
    pratio = plain.good() / pbase.good() if pbase.good() else float("nan")
    allowed = (run.run - waited) / run.run
    notes = []
    if not met:
        notes.append(f"guarded goodput {guard.good()} is {need - guard.good():.0f} calls below "
                     f"the target {need:.0f} (adaptive pacing layer: a one-off flood's pace "
                     f"outlived its X)")
    errs = [f"{c.name} errors: " + ", ".join(f"{k} x{v}" for k, v in c.errors().most_common())
            for c in (plain, guard) if c.errors()]
    notes.extend(errs)
    floods = " + ".join(f"FLOOD_WAIT_{f.seconds}" for f in run.floods)
    return Row(
        workload="sporadic",
        label=f"sporadic floods ({floods} in {run.run:.0f} s, 4 calls/s)",
        plain=(f"{plain.good()}/{pbase.good()} calls in {BUDGET:g} s ({pratio:.1%}), held "
               + ", ".join(f"{h:.1f}" for h in held_plain) + " s after X"),
        guarded=(f"{guard.good()}/{gbase.good()} calls in {BUDGET:g} s ({ratio:.1%}), held "
                 + ", ".join(f"{h:.1f}" for h in held) + " s after X"),
        result=f"{ratio:.1%} of no-flood goodput",
        target=f">= {TARGET:.0%} x {allowed:.1%} (X s excluded) = {TARGET * allowed:.1%}",
        met=met,
        figures={
            "sporadic_goodput_ratio": round(ratio, 4),
            "sporadic_goodput_plain_ratio": round(pratio, 4),
            "sporadic_target_ratio": round(TARGET * allowed, 4),
            "sporadic_calls_guard": guard.good(),
            "sporadic_calls_guard_no_floods": gbase.good(),
            "sporadic_calls_plain": plain.good(),
            "sporadic_calls_plain_no_floods": pbase.good(),
            "sporadic_held_after_x_max_s": round(max(held, default=0.0), 3),
            "sporadic_held_after_x_plain_max_s": round(max(held_plain, default=0.0), 3),
            "sporadic_run_seconds": run.run,
        },
        note="; ".join(notes),
        complete=complete,
        chart=Chart("goodput vs no floods (%)", "plain", pratio * 100, "guard", ratio * 100),
    )


async def run(ctx: WorkloadContext) -> Row:
    return row(await measure(ctx))
