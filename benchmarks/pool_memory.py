"""Benchmark: memory per connected client and per idle pool entry, guarded vs plain Telethon.

Run from the repository root: ``python benchmarks/pool_memory.py [--clients N] [--json PATH]``.

The embedded MTProto server runs in its own process (``telethon_guard.bench.serverproc``), so
the figures are the clients' own Python allocations (tracemalloc), without the server's share.
Measured side by side in one process, one kind after the other, each from its own baseline
after ``gc.collect()``, after a warm-up round of each kind (one-time imports and caches are
not counted per client):

* ``plain``: ``TelegramClient``, connected (``connect()`` + one ``get_me()``);
* ``guarded``: ``GuardedTelegramClient`` with its own in-memory guard storage;
* ``guarded_shared``: ``GuardedTelegramClient`` sharing one ``GuardConfig`` whose storage is
  one in-memory storage for all (what a pool factory passing ``guard_config=`` with
  ``storage=pool.storage`` gives);
* ``pool_idle``: a ``GuardedClientPool`` whose N tenants were each used once and then
  disconnected as idle (the entries keep counters only).

The guard's own cost per connected client is ``guarded - plain`` (and ``guarded_shared -
plain``). Also printed: seconds to connect all N under the process connection budget
(:mod:`telethon_guard.budget`, default windows), and the event loop's lag p99 (a 10 ms
ticker) with all connected and then all idle.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import TelegramClient

from telethon_guard.bench.serverproc import ServerProcess
from telethon_guard.client import GuardedTelegramClient
from telethon_guard.config import GuardConfig
from telethon_guard.pool import GuardedClientPool
from telethon_guard.storage.memory import MemoryStorage

KIB = 1024.0


async def lag_p99(seconds: float) -> float:
    """p99 lateness (seconds) of a 10 ms ticker over ``seconds``."""
    lags: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        await asyncio.sleep(0.01)
        lags.append(max(0.0, time.monotonic() - t - 0.01))
    lags.sort()
    return lags[min(len(lags) - 1, int(0.99 * len(lags)))]


async def gather_bounded(fns: list[Callable[[], Awaitable[Any]]], at_once: int) -> list[Any]:
    sem = asyncio.Semaphore(at_once)

    async def one(fn: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await fn()

    return await asyncio.gather(*(one(f) for f in fns))


def allocated() -> int:
    gc.collect()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def connected_clients(srv: ServerProcess, sessions: list[str], kind: str,
                            settle: float = 2.0) -> dict[str, float]:
    """Build and connect one client per session; memory per client (KiB) while connected."""
    shared = (GuardConfig(storage=MemoryStorage()) if kind == "guarded_shared" else None)
    base = allocated()

    def build(session: str) -> Any:
        if kind == "plain":
            return srv.client(TelegramClient, session, receive_updates=False)
        kwargs: dict[str, Any] = {"receive_updates": False}
        if shared is not None:
            kwargs["guard_config"] = shared
        return srv.client(GuardedTelegramClient, session, **kwargs)

    clients = [build(s) for s in sessions]

    async def up(client: Any) -> None:
        await client.connect()
        await client.get_me()

    started = time.monotonic()
    await asyncio.wait_for(gather_bounded([lambda c=c: up(c) for c in clients], 20), 600)
    connect_s = time.monotonic() - started
    lag = await lag_p99(settle)
    per = (allocated() - base) / len(clients) / KIB
    await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients)), 60)
    del clients
    return {"kib_per_client": per, "connect_all_s": connect_s, "lag_p99_ms": lag * 1000}


async def idle_pool(srv: ServerProcess, sessions: list[str], settle: float = 2.0,
                    ) -> dict[str, float]:
    """A pool of N tenants, each used once, all disconnected as idle: memory per entry."""
    by_tenant = dict(enumerate(sessions))
    base = allocated()
    pool: GuardedClientPool

    def factory(tenant: int) -> Any:
        return srv.client(GuardedTelegramClient, by_tenant[tenant], receive_updates=False,
                          storage=pool.storage)

    pool = GuardedClientPool(factory, idle_timeout=0.5, max_concurrent_connects=20,
                             max_connected=len(sessions))
    async with pool:
        async def use(tenant: int) -> None:
            async with pool.lease(tenant) as client:
                await client.get_me()

        await asyncio.wait_for(asyncio.gather(*(use(t) for t in by_tenant)), 600)
        for _ in range(600):  # at most 60 s for the idle reaper
            if not pool.connected:
                break
            await asyncio.sleep(0.1)
        assert pool.connected == 0, "clients did not go idle"
        await asyncio.sleep(0.5)  # the disconnected clients' tasks end
        lag = await lag_p99(settle)
        per = (allocated() - base) / len(sessions) / KIB
    return {"kib_per_entry": per, "lag_p99_ms": lag * 1000}


async def run(n: int) -> dict[str, Any]:
    tracemalloc.start()
    out: dict[str, Any] = {"clients": n}
    async with ServerProcess() as srv:
        for kind in ("plain", "guarded", "guarded_shared"):  # warm-up: imports, caches
            await connected_clients(srv, [s for s, _ in await srv.sessions(2)], kind, 0.1)
        await idle_pool(srv, [s for s, _ in await srv.sessions(2)], settle=0.1)
        for kind in ("plain", "guarded", "guarded_shared"):
            sessions = [s for s, _ in await srv.sessions(n)]
            out[kind] = await connected_clients(srv, sessions, kind)
        sessions = [s for s, _ in await srv.sessions(n)]
        out["pool_idle"] = await idle_pool(srv, sessions)
    tracemalloc.stop()
    plain = out["plain"]["kib_per_client"]
    out["guard_cost_kib"] = out["guarded"]["kib_per_client"] - plain
    out["guard_cost_shared_kib"] = out["guarded_shared"]["kib_per_client"] - plain
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="clients per kind (100)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be >= 1")
    out = asyncio.run(run(args.clients))
    print(f"{'kind':<16} {'KiB/client':>10} {'connect all s':>14} {'lag p99 ms':>11}")
    for kind in ("plain", "guarded", "guarded_shared"):
        r = out[kind]
        print(f"{kind:<16} {r['kib_per_client']:>10.1f} {r['connect_all_s']:>14.2f} "
              f"{r['lag_p99_ms']:>11.2f}")
    idle = out["pool_idle"]
    print(f"{'pool_idle':<16} {idle['kib_per_entry']:>10.2f} {'':>14} "
          f"{idle['lag_p99_ms']:>11.2f}")
    print(f"guard's own cost per connected client: {out['guard_cost_kib']:.1f} KiB "
          f"(own storage), {out['guard_cost_shared_kib']:.1f} KiB (shared storage); "
          f"per idle pool entry: {idle['kib_per_entry']:.2f} KiB "
          f"({args.clients} clients, one run)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
