"""Overhead: what the guard costs when Telegram is calm.

``tasks`` concurrent tasks on one client call ``updates.getState`` in a loop; nothing pushes
back. The guarded client runs with an account-wide rate limit far above the achieved rate, so
every call goes through the whole pipeline (deadline, breaker, flood ledger, limiter, retry)
without ever waiting. Plain and guarded alternate in ABBA rounds (both connected all along) so
slow drift of a shared machine hits both alike; the result is guarded calls/s over plain
calls/s (1.00 = free). Target (issue 4): >= 0.98.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from telethon import TelegramClient, functions

from telethon_guard.bench.common import (
    connect,
    disconnect_all,
    error_name,
    guarded_class,
    make_clients,
)
from telethon_guard.bench.results import Chart, Row
from telethon_guard.bench.runner import WorkloadContext
from telethon_guard.bench.serverproc import ServerProcess

TARGET = 0.98
NON_BINDING_LIMIT = ((1_000_000, 1.0),)  # calls per second: never reached


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
        try:
            for c in clients.values():
                await connect(c)
            warm = min(0.5, per_round)
            for c in clients.values():  # warm-up, not measured
                await drive(c, s.tasks, warm, errors)
            totals = {"plain": [0, 0.0], "guard": [0, 0.0]}
            order = ["plain", "guard", "guard", "plain"]
            for r in range(rounds * 2):
                name = order[r % 4]
                t = time.perf_counter()
                n = await drive(clients[name], s.tasks, per_round, errors)
                totals[name][0] += n
                totals[name][1] += time.perf_counter() - t
                if r % 2 == 1:
                    ctx.progress(f"round {r // 2 + 1}/{rounds}: plain {totals['plain'][0]:,} "
                                 f"calls, guard {totals['guard'][0]:,} calls")
                ctx.partial = _row((int(totals["plain"][0]), totals["plain"][1]),
                                   (int(totals["guard"][0]), totals["guard"][1]),
                                   s.tasks, errors, complete=False)
        finally:
            await disconnect_all(list(clients.values()))
    return _row((int(totals["plain"][0]), totals["plain"][1]),
                (int(totals["guard"][0]), totals["guard"][1]), s.tasks, errors, complete=True)
