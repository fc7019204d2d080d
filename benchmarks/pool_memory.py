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
plain``), taken within each round and reported as the median (min..max) over ``--rounds``
rounds; the kinds alternate their order from round to round (plain first, then last...), so
neither side always runs on a fresher heap. Both sides count the same things: the client
process's own allocations, the server's in neither. Also printed: asyncio tasks per connected
client, seconds to connect all N under the process connection budget
(:mod:`telethon_guard.budget`, default windows), and the event loop's lag p99 (a 10 ms
ticker) with all connected and then all idle.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import statistics
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


def attribute(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int,
              top: int) -> dict[str, Any]:
    """Bytes per client allocated between two snapshots, each allocation attributed to the
    innermost frame of its traceback in telethon_guard (``module.py:line``) or Telethon
    (``telethon/...``), else to the stdlib line that made it; the ``top`` sites and the sum
    per guard module."""
    sites: dict[str, int] = {}
    for stat in after.compare_to(before, "traceback"):
        key = None
        for frame in reversed(stat.traceback):  # innermost first
            name = frame.filename.replace("\\", "/")
            if "/telethon_guard/" in name and "/bench/" not in name:
                key = name.split("/telethon_guard/")[-1] + f":{frame.lineno}"
                break
            if "/telethon/" in name:
                key = "telethon/" + name.split("/telethon/")[-1] + f":{frame.lineno}"
                break
        if key is None:
            frame = stat.traceback[-1]
            key = "(stdlib) " + frame.filename.rsplit("/", 1)[-1] + f":{frame.lineno}"
        sites[key] = sites.get(key, 0) + stat.size_diff
    modules: dict[str, int] = {}
    for key, size in sites.items():
        if not key.startswith(("telethon/", "(stdlib)")):
            mod = key.rsplit(":", 1)[0]
            modules[mod] = modules.get(mod, 0) + size
    ranked = sorted(sites.items(), key=lambda kv: -kv[1])[:top]
    return {"sites": [(k, v / n) for k, v in ranked],
            "guard_modules": sorted(((k, v / n) for k, v in modules.items()),
                                    key=lambda kv: -kv[1])}


def allocated() -> int:
    gc.collect()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def connected_clients(srv: ServerProcess, sessions: list[str], kind: str,
                            settle: float = 2.0, top: int = 0) -> dict[str, Any]:
    """Build and connect one client per session; memory per client (KiB) while connected.
    ``top`` > 0 (needs ``tracemalloc.start(frames)`` with frames > 1): also the ``top``
    allocation sites per client (:func:`attribute`)."""
    shared = (GuardConfig(storage=MemoryStorage()) if kind == "guarded_shared" else None)
    base = allocated()
    before = tracemalloc.take_snapshot() if top else None

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

    tasks_before = len(asyncio.all_tasks())
    started = time.monotonic()
    await asyncio.wait_for(gather_bounded([functools.partial(up, c) for c in clients], 20), 600)
    connect_s = time.monotonic() - started
    lag = await lag_p99(settle)
    per = (allocated() - base) / len(clients) / KIB
    tasks = (len(asyncio.all_tasks()) - tasks_before) / len(clients)
    breakdown = None
    if before is not None:
        breakdown = attribute(before, tracemalloc.take_snapshot(), len(clients), top)
    await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients)), 60)
    del clients
    out: dict[str, Any] = {"kib_per_client": per, "tasks_per_client": tasks,
                           "connect_all_s": connect_s, "lag_p99_ms": lag * 1000}
    if breakdown is not None:
        out["breakdown"] = breakdown
    return out


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


KINDS = ("plain", "guarded", "guarded_shared")


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of one figure over the rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def run(n: int, rounds: int = 1, top: int = 0) -> dict[str, Any]:
    tracemalloc.start(30 if top else 1)
    out: dict[str, Any] = {"clients": n, "rounds": rounds}
    per_round: list[dict[str, Any]] = []
    async with ServerProcess() as srv:
        for kind in KINDS:  # warm-up: imports, caches
            await connected_clients(srv, [s for s, _ in await srv.sessions(2)], kind, 0.1)
        await idle_pool(srv, [s for s, _ in await srv.sessions(2)], settle=0.1)
        for r in range(rounds):
            one: dict[str, Any] = {}
            for kind in (KINDS if r % 2 == 0 else KINDS[::-1]):
                sessions = [s for s, _ in await srv.sessions(n)]
                one[kind] = await connected_clients(
                    srv, sessions, kind, top=top if r == rounds - 1 else 0)
            sessions = [s for s, _ in await srv.sessions(n)]
            one["pool_idle"] = await idle_pool(srv, sessions)
            plain = one["plain"]["kib_per_client"]
            one["guard_cost_kib"] = one["guarded"]["kib_per_client"] - plain
            one["guard_cost_shared_kib"] = one["guarded_shared"]["kib_per_client"] - plain
            per_round.append(one)
    tracemalloc.stop()
    out["per_round"] = per_round
    for kind in KINDS:
        out[kind] = {k: summary([r[kind][k] for r in per_round])
                     for k in per_round[0][kind] if k != "breakdown"}
        if "breakdown" in per_round[-1][kind]:
            out[kind]["breakdown"] = per_round[-1][kind]["breakdown"]
    out["pool_idle"] = {k: summary([r["pool_idle"][k] for r in per_round])
                        for k in per_round[0]["pool_idle"]}
    for k in ("guard_cost_kib", "guard_cost_shared_kib"):
        out[k] = summary([r[k] for r in per_round])
    return out


def fmt(s: dict[str, float], digits: int = 1) -> str:
    """``median (min..max)``, or the value alone when every round gave the same."""
    if s["min"] == s["max"]:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="clients per kind (100)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds, the kinds' order alternating (1)")
    parser.add_argument("--top", type=int, default=0,
                        help="also print the K largest allocation sites per connected "
                             "guarded client and the sum per guard module (last round; "
                             "tracemalloc keeps 30 frames: slower)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be >= 1")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.top < 0:
        parser.error("--top must be >= 0")
    out = asyncio.run(run(args.clients, args.rounds, args.top))
    print(f"{args.clients} clients per kind, {args.rounds} round(s): median (min..max)")
    print(f"{'kind':<16} {'KiB/client':>20} {'tasks':>6} {'connect all s':>20} "
          f"{'lag p99 ms':>20}")
    for kind in KINDS:
        r = out[kind]
        print(f"{kind:<16} {fmt(r['kib_per_client']):>20} "
              f"{r['tasks_per_client']['median']:>6.1f} {fmt(r['connect_all_s'], 2):>20} "
              f"{fmt(r['lag_p99_ms'], 2):>20}")
    idle = out["pool_idle"]
    print(f"{'pool_idle':<16} {fmt(idle['kib_per_entry'], 2):>20} {'':>6} {'':>20} "
          f"{fmt(idle['lag_p99_ms'], 2):>20}")
    print(f"guard's own cost per connected client: {fmt(out['guard_cost_kib'])} KiB "
          f"(own storage), {fmt(out['guard_cost_shared_kib'])} KiB (shared storage); "
          f"per idle pool entry: {fmt(idle['kib_per_entry'], 2)} KiB")
    for kind in ("plain", "guarded") if args.top else ():
        bd = out[kind]["breakdown"]
        print(f"\n{kind}: the {args.top} largest allocation sites, bytes per client "
              "(innermost guard or Telethon frame)")
        for site, size in bd["sites"]:
            print(f"  {size:8.0f}  {site}")
        if kind == "guarded":
            print("guarded: bytes per client by guard module")
            for mod, size in bd["guard_modules"]:
                if abs(size) >= 50:
                    print(f"  {size:8.0f}  {mod}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
