"""Overhead: what the guard costs when Telegram is calm.

``tasks`` concurrent tasks on one client call ``updates.getState`` in a loop; nothing pushes
back. The guarded client runs with an account-wide rate limit far above the achieved rate, so
every call goes through the whole pipeline (deadline, breaker, flood ledger, limiter, retry)
without ever waiting. Plain and guarded alternate in ABBA rounds (both connected all along) so
slow drift of a shared machine hits both alike; the result is guarded calls/s over plain
calls/s (1.00 = free). Target (issue 4): >= 0.98. That headline is the worst case (no
latency: the client's CPU is the bottleneck); the same ABBA rounds are then repeated with a
20 ms server round trip (``overhead_ratio_rtt_20ms``), which is closer to real Telegram.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from telethon import TelegramClient, functions

from telethon_guard.bench.common import (
    connect,
    disconnect_all,
    error_name,
    guarded_class,
    make_clients,
)
from telethon_guard.bench.context import WorkloadContext
from telethon_guard.bench.results import Chart, Row
from telethon_guard.bench.serverproc import ServerProcess

TARGET = 0.98
NON_BINDING_LIMIT = ((1_000_000, 1.0),)  # calls per second: never reached
RTT_SECONDS = 0.020  # the secondary measurement's server round trip


async def drive(client: Any, tasks: int, seconds: float, errors: Counter[str]) -> int:
    """Run ``tasks`` looping callers on ``client`` for ``seconds``; return completed calls."""
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while loop.time() < stop_at:
            try:
                await client(functions.updates.GetStateRequest())
                done += 1
            except Exception as e:
                errors[error_name(e)] += 1

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(tasks))), seconds + 30)
    return done


def _row(plain: tuple[int, float], guarded: tuple[int, float], tasks: int,
         errors: Counter[str], complete: bool) -> Row:
    p_rate = plain[0] / plain[1] if plain[1] else float("nan")
    g_rate = guarded[0] / guarded[1] if guarded[1] else float("nan")
    ratio = g_rate / p_rate if p_rate and p_rate == p_rate else float("nan")
    met = ratio >= TARGET if ratio == ratio else None
    note = ""
    if met is False:
        note = (f"overhead ratio {ratio:.3f} is {TARGET - ratio:.3f} below {TARGET}: the guard "
                f"pipeline (guard core / client layers) costs "
                f"{(1 / g_rate - 1 / p_rate) * 1e6:.1f} us more per call")
    if errors:
        note = (note + "; " if note else "") + "errors: " + ", ".join(
            f"{k} x{v}" for k, v in errors.most_common())
    return Row(
        workload="overhead",
        label=f"overhead ({tasks} tasks)",
        plain=f"{p_rate:,.0f} calls/s",
        guarded=f"{g_rate:,.0f} calls/s",
        result=f"ratio {ratio:.3f}",
        target=f">= {TARGET}",
        met=met,
        figures={
            "overhead_ratio": round(ratio, 4) if ratio == ratio else None,
            "overhead_plain_calls_per_s": round(p_rate, 1),
            "overhead_guarded_calls_per_s": round(g_rate, 1),
            "overhead_tasks": tasks,
            "overhead_seconds_per_client": round(plain[1], 2),
        },
        note=note,
        complete=complete,
        chart=Chart("calls / s", "plain", p_rate, "guard", g_rate),
    )


Totals = dict[str, list[float]]


async def abba(clients: dict[str, Any], tasks: int, per_round: float, rounds: int,
               errors: Counter[str], on_round: Callable[[int, Totals], None]) -> Totals:
    """``rounds`` rounds per client in ABBA order; ``{"plain"|"guard": [calls, seconds]}``."""
    totals: Totals = {"plain": [0, 0.0], "guard": [0, 0.0]}
    order = ["plain", "guard", "guard", "plain"]
    for r in range(rounds * 2):
        name = order[r % 4]
        t = time.perf_counter()
        n = await drive(clients[name], tasks, per_round, errors)
        totals[name][0] += n
        totals[name][1] += time.perf_counter() - t
        if r % 2 == 1:
            on_round(r // 2 + 1, totals)
    return totals


def _pair(totals: Totals, name: str) -> tuple[int, float]:
    return int(totals[name][0]), totals[name][1]


def _rate_ratio(totals: Totals) -> float:
    p, g = _pair(totals, "plain"), _pair(totals, "guard")
    if not p[1] or not g[1] or not p[0]:
        return float("nan")
    return (g[0] / g[1]) / (p[0] / p[1])


async def run(ctx: WorkloadContext) -> Row:
    s = ctx.settings
    rounds = 4 if s.quick else 8
    per_round = s.duration / rounds
    errors: Counter[str] = Counter()
    async with ServerProcess() as srv:
        (plain,), _ = await make_clients(srv, TelegramClient, 1)
        (guarded,), _ = await make_clients(srv, guarded_class(), 1,
                                           rate_limits=NON_BINDING_LIMIT)
        clients = {"plain": plain, "guard": guarded}
        totals: Totals = {"plain": [0, 0.0], "guard": [0, 0.0]}
        try:
            for c in clients.values():
                await connect(c)
            warm = min(0.5, per_round)
            for c in clients.values():  # warm-up, not measured
                await drive(c, s.tasks, warm, errors)

            def on_round(i: int, t: Totals) -> None:
                totals.update(t)
                ctx.progress(f"round {i}/{rounds}: plain {int(t['plain'][0]):,} calls, "
                             f"guard {int(t['guard'][0]):,} calls")
                ctx.partial = _row(_pair(t, "plain"), _pair(t, "guard"), s.tasks, errors,
                                   complete=False)

            totals = await abba(clients, s.tasks, per_round, rounds, errors, on_round)
            row = _row(_pair(totals, "plain"), _pair(totals, "guard"), s.tasks, errors,
                       complete=False)
            ctx.partial = row
            # The same with a real round trip: the client's CPU is no longer the bottleneck.
            await srv.add_rules(("Latency", {"method": "updates.getState",
                                             "seconds": RTT_SECONDS}))
            rtt_rounds = 2 if s.quick else 4
            ctx.progress(f"again with a {RTT_SECONDS * 1000:.0f} ms server round trip")
            rtt = await abba(clients, s.tasks, per_round, rtt_rounds, errors,
                             lambda i, t: None)
        finally:
            await disconnect_all(list(clients.values()))
    row.complete = True
    ratio = _rate_ratio(rtt)
    row.figures["overhead_ratio_rtt_20ms"] = round(ratio, 4) if ratio == ratio else None
    row.figures["overhead_rtt_20ms_plain_calls_per_s"] = round(
        rtt["plain"][0] / rtt["plain"][1], 1) if rtt["plain"][1] else None
    extra = (f"with a {RTT_SECONDS * 1000:.0f} ms server round trip the ratio is {ratio:.3f} "
             f"(the headline ratio is the worst case: no latency, client CPU-bound)")
    row.note = f"{row.note}; {extra}" if row.note else extra
    return row
