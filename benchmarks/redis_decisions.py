"""Limiter decisions per second against Redis, and round trips per decision.

::

    python benchmarks/redis_decisions.py                    # 1 and 4 processes, c=1 and c=16
    python benchmarks/redis_decisions.py --procs 1 4 8 --modes admit gcra --seconds 5
    python benchmarks/redis_decisions.py --url redis+cluster://127.0.0.1:7000  # a cluster

Modes (``--modes``, each measured the same way):

* ``reserve``: one limiter reservation (``RedisStorage.reserve``) over two keys;
* ``admit``: what a guarded call asks shared storage on its fast path, one
  ``RedisStorage.admit`` (breaker acquire + flood check of the method scope + the same
  reservation, one script: :mod:`telethon_guard.shared_admit`);
* ``admit_paced``: the same with the method's shared adaptive pace read in the same script
  (what a guarded call asks when ``adaptive_pacing`` is on, the default; no pace recorded);
* ``separate``: the same four questions asked one by one (breaker acquire, flood check,
  reservation, breaker success), as before the admission step;
* ``gcra``: the anchor, a plain GCRA rate limiter in Lua (``TIME``, ``GET``, ``SET PX``: about
  the smallest useful limiter script), run with ``EVALSHA`` through the same client.

A *decision* is one :meth:`RedisStorage.reserve` over two limiter keys of one account (the
account's ``rate_limits`` and one method's ``method_limits``, as a guarded call makes it) with
budgets large enough that nobody waits: what is measured is the cost of deciding, not the
limit. ``--concurrency`` callers per process share one connection pool (c=1: one decision at a
time, latency bound; c=16: concurrent decisions, as many guarded calls in one process make).

Round trips per decision are counted twice: commands each process writes on its sockets
(redis-py's ``Connection.send_packed_command``, which both the ``execute_command`` path and the
admission's own connections use, a new socket's handshake excluded; one command = one
request/response round trip, nothing is pipelined), and ``EVALSHA`` calls seen by the server
(``INFO commandstats`` delta; on a Redis shared with other work that delta includes their
commands, so the client count is the exact one).

Cost per decision, less sensitive to the machine's load than the rates: the server's
microseconds per ``EVALSHA`` (``commandstats`` usec delta / calls: time inside Redis, script
included) and each process's client CPU per decision (``time.process_time``; mean over the
processes).
Target (issues 5, 14): >= 5,000 decisions/s per process with 4 processes on a quiet machine,
exactly 1 round trip per decision (``admit``: per admitted guarded call). The load average is
printed with every row: on a shared machine the figures are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection as AsyncConnection

from telethon_guard.storage import LimitSpec
from telethon_guard.storage.redis import from_url

GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - burst * interval
if allow_at > now then return tostring(allow_at - now) end
tat = tat + interval
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
return '0'
"""
"""The anchor: a plain GCRA on Redis (one key, emission interval and burst as arguments)."""

BREAKER = "acct:bench/dc:2"
SCOPE = "acct:bench/method:messages.getHistory"
PACE = ("acct:bench/pace:messages.getHistory", b"")  # (pace key, version seen): none yet

SPECS = [
    LimitSpec("acct:bench", ((100_000, 1.0),)),
    LimitSpec("acct:bench/dc:2/method:messages.getHistory", ((100_000, 10.0),)),
]


async def _run(url: str, prefix: str, start_at: float, seconds: float,
               concurrency: int, mode: str = "reserve") -> dict[str, Any]:
    st = from_url(url, prefix=prefix, storage_fallback="fail", timeout=2.0)
    sent = 0
    # Every command written on a socket (redis-py's execute_command path and the admission's
    # own connections alike), except a new socket's handshake.
    conn_cls = AsyncConnection
    original = conn_cls.send_packed_command

    async def counted(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal sent
        packed = command if isinstance(command, bytes) else b"".join(command)
        if packed.split(b"\r\n", 3)[2].upper() not in SETUP:
            sent += 1
        return await original(self, command, *args, **kwargs)

    conn_cls.send_packed_command = counted  # type: ignore[method-assign]
    gcra = st.client.register_script(GCRA)
    gcra_key = f"{prefix}:gcra:{{acct:bench}}"
    await st.reserve(SPECS)  # connect + load the scripts before timing
    await st.admit(BREAKER, 60.0, (SCOPE,), SPECS)
    if mode == "admit_paced":
        await st.admit(BREAKER, 60.0, (SCOPE,), SPECS, PACE)
    await st.flood_left(SCOPE)
    await st.breaker_acquire(BREAKER, 60.0)
    await st.breaker_success(BREAKER)
    await gcra(keys=[gcra_key], args=[1e-6, 1_000_000])
    await asyncio.sleep(max(0.0, start_at - time.time()))
    sent = 0
    decisions = 0
    sent_at_end = 0
    end = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal decisions
        while time.perf_counter() < end:
            if mode == "admit":  # a guarded call's fast path on shared storage
                await st.admit(BREAKER, 60.0, (SCOPE,), SPECS)
            elif mode == "admit_paced":  # ... with adaptive pacing on
                await st.admit(BREAKER, 60.0, (SCOPE,), SPECS, PACE)
            elif mode == "separate":  # the same questions asked one by one
                await st.breaker_acquire(BREAKER, 60.0)
                await st.flood_left(SCOPE)
                await st.reserve(SPECS)
                await st.breaker_success(BREAKER)
            elif mode == "gcra":
                await gcra(keys=[gcra_key], args=[1e-6, 1_000_000])
            else:
                await st.reserve(SPECS)
            decisions += 1

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    sent_at_end = sent
    # Floor: bare PINGs on the same client for a third of the time (what redis-py's asyncio
    # client can do at all on this machine right now, with no script and no guard code).
    pings = 0
    end = time.perf_counter() + seconds / 3

    async def pinger() -> None:
        nonlocal pings
        while time.perf_counter() < end:
            await st.client.ping()
            pings += 1

    t1 = time.perf_counter()
    await asyncio.gather(*(pinger() for _ in range(concurrency)))
    ping_rate = pings / (time.perf_counter() - t1)
    await st.aclose()
    return {"decisions": decisions, "seconds": elapsed, "round_trips": sent_at_end,
            "per_second": decisions / elapsed, "ping_per_second": ping_rate,
            "client_cpu_us": 1e6 * cpu / max(1, decisions)}


def _child(url: str, prefix: str, start_at: float, seconds: float, concurrency: int,
           mode: str, out: Any) -> None:
    out.put(asyncio.run(_run(url, prefix, start_at, seconds, concurrency, mode)))


def _admin(url: str) -> Any:
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        return RedisCluster.from_url(url.replace("+cluster", "", 1))
    return aioredis.Redis.from_url(url)


async def _evalsha_calls(url: str) -> tuple[int, int]:
    """``(calls, usec)`` of ``EVALSHA`` on the server (every primary of a cluster, summed)."""
    admin = _admin(url)
    try:
        if isinstance(admin, RedisCluster):  # every primary's count, summed
            await admin.initialize()
            calls = usec = 0
            for node in admin.get_primaries():
                one = aioredis.Redis(host=node.host, port=node.port)
                try:
                    info = await one.info("commandstats")
                finally:
                    await one.aclose()
                calls += int(info.get("cmdstat_evalsha", {}).get("calls", 0))
                usec += int(info.get("cmdstat_evalsha", {}).get("usec", 0))
            return calls, usec
        info = await admin.info("commandstats")
        stat = info.get("cmdstat_evalsha", {})
        return int(stat.get("calls", 0)), int(stat.get("usec", 0))
    finally:
        await admin.aclose()


def _cleanup(url: str, prefix: str) -> None:
    async def run() -> None:
        admin = _admin(url)
        try:
            keys = [k async for k in admin.scan_iter(match=f"{prefix}:*", count=1000)]
            for k in keys:  # one by one: a cluster's keys live in several slots
                await admin.delete(k)
        finally:
            await admin.aclose()

    asyncio.run(run())


SETUP = {b"HELLO", b"CLIENT", b"AUTH", b"SELECT", b"READONLY"}
"""Commands redis-py sends once when a socket connects (not decisions: not counted)."""

ROUND_TRIPS = {"reserve": 1.0, "admit": 1.0, "admit_paced": 1.0, "separate": 4.0, "gcra": 1.0}
"""Round trips per unit of each mode (what the client count must show)."""


def measure(url: str, procs: int, concurrency: int, seconds: float,
            mode: str = "reserve") -> dict[str, Any]:
    """Run ``procs`` processes of ``concurrency`` callers for ``seconds``; return the figures.
    ``mode``: what one unit is (see the module docstring)."""
    prefix = f"tg-guard-bench-{uuid.uuid4().hex[:8]}"
    server_before = asyncio.run(_evalsha_calls(url))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 1.5 + 0.3 * procs  # every child connected and warmed up
    children = [ctx.Process(target=_child, args=(url, prefix, start_at, seconds, concurrency,
                                                 mode, out)) for _ in range(procs)]
    for c in children:
        c.start()
    results = [out.get(timeout=seconds + 60) for _ in children]
    for c in children:
        c.join(10)
    server_after = asyncio.run(_evalsha_calls(url))
    _cleanup(url, prefix)
    decisions = sum(r["decisions"] for r in results)
    # EVALSHA per process before timing (the GCRA's goes via EVALSHA too)
    warmups = procs * (6 if mode == "admit_paced" else 5)
    calls = server_after[0] - server_before[0]
    return {
        "mode": mode,
        "unit": "decision",
        "procs": procs,
        "concurrency": concurrency,
        "seconds": seconds,
        "per_process": [round(r["per_second"]) for r in results],
        "per_process_mean": round(statistics.mean(r["per_second"] for r in results)),
        "total_per_second": round(sum(r["per_second"] for r in results)),
        "ping_per_second_mean": round(statistics.mean(r["ping_per_second"] for r in results)),
        "load_average": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "round_trips_per_decision_client": sum(r["round_trips"] for r in results) / decisions,
        "evalsha_per_decision_server": calls / (decisions + warmups),
        "server_us_per_evalsha": (server_after[1] - server_before[1]) / max(1, calls),
        "client_cpu_us_per_decision": round(statistics.mean(r["client_cpu_us"]
                                                            for r in results), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("TG_GUARD_REDIS", "redis://127.0.0.1:6379/0"))
    p.add_argument("--procs", type=int, nargs="+", default=[1, 4])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--json", action="store_true", help="one JSON document per line")
    p.add_argument("--modes", nargs="+", default=["reserve", "admit"],
                   choices=sorted(ROUND_TRIPS), help="what one unit is (see above)")
    args = p.parse_args(argv)
    rows = []
    for mode in args.modes:
        for procs in args.procs:
            for conc in args.concurrency:
                row = measure(args.url, procs, conc, args.seconds, mode)
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                    continue
                print(f"{mode:>8} procs={procs} concurrency={conc:>2}: "
                      f"{row['per_process_mean']:>6}/s per process "
                      f"(each: {row['per_process']}), total {row['total_per_second']}/s "
                      f"[bare PING {row['ping_per_second_mean']}/s], "
                      f"round trips each: client "
                      f"{row['round_trips_per_decision_client']:.3f}"
                      f", server EVALSHA {row['evalsha_per_decision_server']:.3f}; "
                      f"cost: server {row['server_us_per_evalsha']:.1f} us per EVALSHA, "
                      f"client CPU {row['client_cpu_us_per_decision']:.1f} us per decision"
                      f" (load average {row['load_average']:.1f}, {row['cpus']} CPUs)",
                      flush=True)
    ok = all(r["round_trips_per_decision_client"] == ROUND_TRIPS[r["mode"]] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
