"""Benchmark: a transport -429 storm on every connection of N pooled clients, with and without
the process connection budget.

Run from the repository root: ``python benchmarks/pool_storm.py [--clients N] [--storm S]
[--no-budget] [--json PATH]``.

N ``GuardedTelegramClient`` (TDLib's reconnect pacing each, the default
:class:`~telethon_guard.budget.ConnectionBudget` for the process unless ``--no-budget``) are
connected through a :class:`~telethon_guard.pool.GuardedClientPool` to the embedded server in
its own process. Then the server refuses every connection (and answers every request on live
ones) with transport -429 for ``S`` seconds, while every client makes one ``get_me`` (bounded
by ``wait_for``). Reported from the server's log, sampled once per second: connection attempts
(served + refused) per second, the most in one sample, refused connections in all; and how
long until every client answered, how many calls ended in a typed error, and how many hung
(none may).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from telethon_guard.bench.serverproc import ServerProcess
from telethon_guard.budget import set_process_budget
from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import GuardError
from telethon_guard.pool import GuardedClientPool

CALL_BOUND = 180.0  # seconds one call may take before it counts as hung


async def run(n: int, storm: float, budget: bool) -> dict[str, Any]:
    if not budget:
        set_process_budget(None)
    async with ServerProcess() as srv:
        sessions = dict(enumerate(s for s, _ in await srv.sessions(n)))
        pool: GuardedClientPool

        def factory(tenant: int) -> Any:
            return srv.client(GuardedTelegramClient, sessions[tenant], receive_updates=False,
                              storage=pool.storage, max_reconnect_seconds=CALL_BOUND)

        pool = GuardedClientPool(factory, max_connected=n, max_concurrent_connects=50,
                                 connect_timeout=CALL_BOUND)
        async with pool:
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(
                *(pool.call(t, lambda c: c.get_me()) for t in sessions)), 600)
            connect_s = time.monotonic() - started
            storm_at = await srv.add_rules(("Transport429Storm", {"start_in": 0.2,
                                                                  "duration": storm}))
            await asyncio.sleep(0.5)
            began = time.monotonic()
            done_at: list[float] = []

            async def one(tenant: int) -> str:
                try:
                    await asyncio.wait_for(pool.call(tenant, lambda c: c.get_me()), CALL_BOUND)
                    done_at.append(time.monotonic() - began)
                    return "ok"
                except GuardError as e:  # DeadlineExceeded is a TimeoutError too: first
                    return type(e).__name__
                except asyncio.TimeoutError:
                    return "hung"

            calls = asyncio.ensure_future(asyncio.gather(*(one(t) for t in sessions)))
            per_second: list[int] = []
            last = 0
            while not calls.done():
                await asyncio.wait({calls}, timeout=1.0)
                s = await srv.summary(since=storm_at)
                total = s["connections_opened"] + s["connections_refused"]
                per_second.append(total - last)
                last = total
            outcomes = calls.result()
            summary = await srv.summary(since=storm_at)
    return {
        "clients": n, "storm_s": storm, "budget": budget, "connect_all_s": connect_s,
        "attempts": summary["connections_opened"] + summary["connections_refused"],
        "refused": summary["connections_refused"],
        "max_attempts_per_s": max(per_second, default=0), "attempts_per_s": per_second,
        "all_answered_s": max(done_at, default=0.0),
        "ok": outcomes.count("ok"), "hung": outcomes.count("hung"),
        "errors": {k: outcomes.count(k) for k in set(outcomes) - {"ok", "hung"}},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="connected clients (200)")
    parser.add_argument("--storm", type=float, default=6.0, help="seconds of -429 (6)")
    parser.add_argument("--no-budget", action="store_true", help="switch the budget off")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.storm <= 0:
        parser.error("--clients must be >= 1 and --storm > 0")
    r = asyncio.run(run(args.clients, args.storm, not args.no_budget))
    print(f"{r['clients']} clients, {r['storm_s']:g} s of -429, budget "
          f"{'on' if r['budget'] else 'off'}: connected all in {r['connect_all_s']:.1f} s")
    print(f"  connection attempts {r['attempts']} ({r['refused']} refused), at most "
          f"{r['max_attempts_per_s']} in one 1 s sample; per second: {r['attempts_per_s']}")
    print(f"  every client answered after {r['all_answered_s']:.1f} s: ok {r['ok']}, "
          f"typed errors {r['errors']}, hung {r['hung']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
