"""Benchmark: worker mode, N accounts sharing one workload under a per-method limit.

Run from the repository root: ``python benchmarks/pool_workers.py [--accounts N]
[--seconds S] [--tasks T] [--json PATH]``.

The embedded server (its own process) limits ``messages.getHistory`` per account with a
``FloodWindow`` (``LIMIT`` calls per ``WINDOW`` s, then ``FLOOD_WAIT_X`` with the true seconds
left, as Telegram's flood control does). ``T`` tasks call as fast as they can for ``S`` seconds,
in three set-ups, one after the other, each on fresh accounts:

* ``one guarded``: one ``GuardedTelegramClient`` told the limit (``method_limits``): the
  single-account ceiling, ``LIMIT / WINDOW`` per second;
* ``N guarded, routed``: a ``GuardedClientPool`` of N such clients (``max_flood_wait=0``) and a
  ``WorkerRouter``: each call goes to an account with a free slot; when none is free the task
  sleeps the ``NoAccountAvailableError.retry_after``;
* ``N plain, round-robin``: N plain ``TelegramClient`` used in turn, Telethon's defaults (it
  sleeps FLOOD_WAITs up to ``flood_sleep_threshold`` = 60 s itself).

Goodput is the calls the server *accepted* per second of the run (ground truth: the server's
log); FLOOD_WAITs are the ``FLOOD_WAIT_X`` replies it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

from telethon import TelegramClient

from telethon_guard.bench.serverproc import ServerProcess
from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import NoAccountAvailableError
from telethon_guard.pool import GuardedClientPool

METHOD = "messages.getHistory"
LIMIT = 10
WINDOW = 2.0


async def history(client: Any) -> Any:
    return await client.get_messages("news", limit=1)


async def run_for(seconds: float, tasks: int, one_call: Any) -> None:
    end = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < end:
            await one_call()

    runners = [asyncio.ensure_future(worker()) for _ in range(tasks)]
    await asyncio.sleep(seconds)
    for r in runners:
        r.cancel()
    for r in runners:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(r, 70)


async def setup(srv: ServerProcess, kind: str, n: int, seconds: float, tasks: int,
                ) -> dict[str, Any]:
    sessions = await srv.sessions(n)
    accounts = [a for _, a in sessions]
    limits = {METHOD: ((LIMIT, WINDOW),)}
    if kind == "plain":
        clients = [srv.client(TelegramClient, s, receive_updates=False) for s, _ in sessions]
        for c in clients:
            await asyncio.wait_for(c.connect(), 30)
        turn = itertools.cycle(clients)
        since = time.monotonic()

        async def plain_call() -> None:
            await history(next(turn))

        await run_for(seconds, tasks, plain_call)
        await asyncio.gather(*(c.disconnect() for c in clients))
    else:
        by_tenant = dict(enumerate(s for s, _ in sessions))
        pool: GuardedClientPool

        def factory(tenant: int) -> Any:
            return srv.client(GuardedTelegramClient, by_tenant[tenant], receive_updates=False,
                              storage=pool.storage, method_limits=limits, max_flood_wait=0)

        pool = GuardedClientPool(factory, max_connected=n)
        async with pool:
            router = pool.workers(by_tenant)
            for t in by_tenant:  # connected before the clock starts
                async with pool.lease(t) as c:
                    await c.get_me()
            since = time.monotonic()

            async def routed_call() -> None:
                try:
                    await router.call(METHOD, history)
                except NoAccountAvailableError as e:
                    await asyncio.sleep(min(e.retry_after or 0.05, WINDOW))

            await run_for(seconds, tasks, routed_call)
    summary = await srv.summary(since=since, accounts=accounts)
    ok = sum(c.get(METHOD, 0) for c in summary["ok_counts"].values())
    floods = sum(e.get("FLOOD_WAIT", 0) for e in summary["errors"].values())
    return {"accounts": n, "accepted": ok, "goodput_per_s": ok / seconds,
            "flood_waits": floods, "ceiling_per_s": n * LIMIT / WINDOW}


async def run(n: int, seconds: float, tasks: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with ServerProcess() as srv:
        await srv.add_rules(("FloodWindow", {"method": METHOD, "limit": LIMIT,
                                             "window": WINDOW}))
        out["one guarded"] = await setup(srv, "guarded", 1, seconds, tasks)
        out[f"{n} guarded, routed"] = await setup(srv, "guarded", n, seconds, tasks)
        out[f"{n} plain, round-robin"] = await setup(srv, "plain", n, seconds, tasks)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=4, help="accounts N (4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per set-up (10)")
    parser.add_argument("--tasks", type=int, default=16, help="calling tasks (16)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.seconds <= 0 or args.tasks < 1:
        parser.error("--accounts and --tasks must be >= 1, --seconds > 0")
    out = asyncio.run(run(args.accounts, args.seconds, args.tasks))
    print(f"limit: {LIMIT} {METHOD} per {WINDOW:g} s per account; {args.tasks} tasks, "
          f"{args.seconds:g} s each")
    print(f"{'set-up':<24} {'accepted/s':>10} {'ceiling/s':>10} {'FLOOD_WAITs':>12}")
    for name, r in out.items():
        print(f"{name:<24} {r['goodput_per_s']:>10.1f} {r['ceiling_per_s']:>10.1f} "
              f"{r['flood_waits']:>12}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
