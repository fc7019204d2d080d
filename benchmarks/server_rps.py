"""How many simple requests per second the test server answers, with plain Telethon as load.

The server runs in its own process (``python -m telethon_guard.testing serve``); the load
comes from ``--procs`` other processes, each with ``--clients`` plain ``TelegramClient``s
keeping ``--inflight`` requests in flight each (Telethon packs them into containers), for
``--seconds``. ``--request``: ``nearest`` (``help.getNearestDc``, default), ``ping`` (answered
by the MTProto layer) or ``history`` (``messages.getHistory`` of 20 messages). Reported:

* ``rps``: replies received per second of wall time (all client processes together);
* ``server_cpu``: CPU seconds the server process used per wall second (1.0 = one full core);
* ``rps_per_server_core``: requests answered per CPU second of the server process, i.e. what
  one fully busy server core answers (on a small machine the clients are the bottleneck:
  Telethon's client side costs more CPU per request than the server's).

Usage: ``python benchmarks/server_rps.py [--procs 2 --clients 4 --inflight 64 --seconds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from typing import Any


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _request(kind: str) -> Any:
    from telethon.tl import functions, types

    if kind == "nearest":
        return functions.help.GetNearestDcRequest()
    if kind == "ping":
        return functions.PingRequest(ping_id=1)
    if kind == "history":  # 20 generated messages of @news per reply
        return functions.messages.GetHistoryRequest(
            types.InputPeerChannel(0, 0), 0, None, 0, 20, 0, 0, 0)
    raise SystemExit(f"unknown --request {kind!r}")


async def _load(doc: dict[str, Any], sessions: list[str], inflight: int, seconds: float,
                start_at: float, kind: str) -> int:
    from telethon import TelegramClient
    from telethon.sessions import StringSession

    clients = [
        TelegramClient(StringSession(s), doc["api_id"], doc["api_hash"], receive_updates=False)
        for s in sessions
    ]
    await asyncio.gather(*(asyncio.wait_for(c.connect(), 20) for c in clients))
    done = 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + seconds

    req = _request(kind)
    if kind == "history":
        req.peer = await clients[0].get_input_entity("news")

    async def worker(client: TelegramClient) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await asyncio.wait_for(client(req), 30)
            done += 1

    await asyncio.gather(*(worker(c) for c in clients for _ in range(inflight)))
    for c in clients:
        await c.disconnect()
    return done


def _proc(doc: dict[str, Any], sessions: list[str], inflight: int, seconds: float,
          start_at: float, kind: str, out: Any) -> None:
    out.put(asyncio.run(_load(doc, sessions, inflight, seconds, start_at, kind)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--clients", type=int, default=4, help="TelegramClients per process")
    ap.add_argument("--inflight", type=int, default=64, help="requests in flight per client")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--request", default="nearest", choices=["nearest", "ping", "history"],
                    help="help.getNearestDc (default), ping, or messages.getHistory limit 20")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    ap.add_argument("--log", action="store_true", help="keep the server's request log")
    args = ap.parse_args()

    n_sessions = args.procs * args.clients
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "server.json")
        server = subprocess.Popen(
            [sys.executable, "-m", "telethon_guard.testing", "serve", "--dcs", "2",
             "--sessions", str(n_sessions), "--json", path, *([] if args.log else ["--no-log"])],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            t0 = time.monotonic()
            while not os.path.exists(path):
                if server.poll() is not None or time.monotonic() - t0 > 30:
                    raise SystemExit("server did not start")
                time.sleep(0.05)
            with open(path) as f:
                doc = json.load(f)
            sessions = doc["sessions"]
            q: Any = mp.Queue()
            start_at = time.time() + 2.0 + 0.5 * args.procs  # all connected by then
            procs = [
                mp.Process(target=_proc, args=(doc, sessions[i::args.procs], args.inflight,
                                               args.seconds, start_at, args.request, q))
                for i in range(args.procs)
            ]
            for p in procs:
                p.start()
            time.sleep(max(0.0, start_at - time.time()))
            cpu0, wall0 = _cpu_seconds(server.pid), time.monotonic()
            total = sum(q.get(timeout=args.seconds + 60) for _ in procs)
            cpu1, wall1 = _cpu_seconds(server.pid), time.monotonic()
            for p in procs:
                p.join(10)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    rps = total / args.seconds
    cpu_used = cpu1 - cpu0  # server CPU seconds over the load window (+ teardown)
    result = {
        "requests": total,
        "seconds": args.seconds,
        "rps": round(rps),
        "server_cpu": round(cpu_used / (wall1 - wall0), 3),
        "rps_per_server_core": round(total / cpu_used) if cpu_used > 0 else None,
        "procs": args.procs,
        "clients": n_sessions,
        "inflight_per_client": args.inflight,
        "request": args.request,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
