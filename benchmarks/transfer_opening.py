"""Parallel downloads against a file-part limit: floods drawn in the opening and in all, and
throughput, for plain Telethon and the guard's transfer settings (issue 15, item 4).

The server (``telethon_guard.testing``, in this process) accepts ``--limit`` (20)
``upload.getFile`` per second per account and answers ``FLOOD_WAIT_X`` above it (the true
seconds left; refused parts are not counted, like Telegram). Two shapes of parallel download,
``--parts`` (64) parts of 4 KiB each:

* ``burst``: every part is its own task on the main sender (``asyncio.gather`` of
  ``client(GetFileRequest)``), file on DC 1;
* ``fast``: FastTelethon-style, file on DC 2 (``FILE_MIGRATE`` from DC 1): ``--senders`` (8)
  senders built by the caller (exported / imported authorization), each downloading every
  8th part in turn with ``client._call(sender, GetFileRequest)``.

Variants: ``plain`` (Telethon with its default ``request_retries=5``; it sleeps FLOOD_WAITs
up to 60 s itself), ``unbounded``
(guard, ``transfer_concurrency=None``), ``bound16`` (guard, the fixed bound of 16 parts in
flight: ``transfer_start_parts=None``), ``aimd`` (guard defaults: the window opens at 4, grows
per second, halves on a flood), ``limits`` (defaults plus ``method_limits`` for
``upload.getFile`` at the server's limit). Each with no added latency and with a server latency
of 30-80 ms per part (``--latency``). Rounds interleave the variants.

Figures per run: ``opening`` = floods within 0.5 s of the first flood, ``floods`` = all
FLOOD_WAIT replies, ``seconds`` = first part's arrival to the last part's accepted arrival,
``rate`` = parts / seconds, ``ok`` = parts with the right bytes. Printed: median [min-max].

    python benchmarks/transfer_opening.py [--rounds 3] [--parts 64] [--limit 20] [--senders 8]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from telethon.tl import functions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telethon_guard import GuardedTelegramClient
from telethon_guard.testing.faults_calls import Latency
from telethon_guard.testing.faults_limits import FloodWindow
from telethon_guard.testing.server import TelegramTestServer
from telethon_guard.testing.world_state import WorldConfig
from tests.integration._fast_transfer import (
    Download,
    close_senders,
    document_location,
    exported_senders,
    parallel_download,
)

PART = 4096
METHOD = "upload.getFile"
VARIANTS = ("plain", "unbounded", "bound16", "aimd", "limits")
BOUND = 120.0


def _client(server: TelegramTestServer, variant: str, limit: int) -> Any:
    if variant == "plain":
        return server.client(request_retries=5)  # Telethon's default (the server's is 1)
    kwargs: dict[str, Any] = {"deadline": 60, "max_flood_wait": 30}
    if variant == "unbounded":
        kwargs["transfer_concurrency"] = None
    elif variant == "bound16":
        kwargs["transfer_start_parts"] = None
    elif variant == "limits":
        kwargs["method_limits"] = {METHOD: ((limit, 1.0),)}
    return server.client(cls=GuardedTelegramClient, **kwargs)


async def _burst(server: TelegramTestServer, client: Any, parts: int) -> Download:
    where = document_location(server.world.file_document())
    result = Download()

    async def part(n: int) -> None:
        try:
            got = await client(functions.upload.GetFileRequest(where, n * PART, PART))
            result.parts[n] = bytes(got.bytes)
        except Exception as exc:
            result.parts[n] = exc

    t0 = time.monotonic()
    await asyncio.gather(*(part(n) for n in range(parts)))
    result.seconds = time.monotonic() - t0
    return result


async def _fast(server: TelegramTestServer, client: Any, parts: int, senders: int) -> Download:
    doc = server.world.file_document()
    built = await exported_senders(client, doc.dc_id, senders)
    try:
        return await parallel_download(client, built, document_location(doc), parts * PART, PART)
    finally:
        await close_senders(built)


async def one_run(shape: str, variant: str, latency: bool, args: argparse.Namespace,
                  ) -> dict[str, float]:
    file_dc = 1 if shape == "burst" else 2
    server = TelegramTestServer(world_config=WorldConfig(file_dc=file_dc,
                                                         file_size=args.parts * PART))
    if latency:
        server.faults.add(Latency(METHOD, (0.03, 0.08)))
    server.faults.add(FloodWindow(METHOD, args.limit, 1.0))
    async with server:
        client = _client(server, variant, args.limit)
        async with client:
            mark = len(server.log.requests(METHOD))
            if shape == "burst":
                got = await asyncio.wait_for(_burst(server, client, args.parts), BOUND)
            else:
                got = await asyncio.wait_for(_fast(server, client, args.parts, args.senders),
                                             BOUND)
        entries = server.log.requests(METHOD)[mark:]
    floods = sorted(e.time for e in entries if (e.error_message or "").startswith("FLOOD"))
    opening = [t for t in floods if t < floods[0] + 0.5] if floods else []
    accepted = sorted(e.time for e in entries if e.outcome == "ok")
    arrivals = sorted(e.time for e in entries)
    seconds = (accepted[-1] - arrivals[0]) if accepted else float("nan")
    ok = got.correct(server.world.file_bytes(), PART)
    return {"opening": len(opening), "floods": len(floods), "seconds": seconds,
            "rate": ok / seconds if seconds else float("nan"), "ok": ok,
            "failed": len(got.failed())}


def _fmt(values: list[float]) -> str:
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    if all(float(v).is_integer() for v in values):
        return f"{med:g} [{lo:g}-{hi:g}]"
    return f"{med:.2f} [{lo:.2f}-{hi:.2f}]"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", type=int, default=64)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--shapes", default="burst,fast")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--latency", default="0,1", help="0: none, 1: 30-80 ms; comma-separated")
    args = ap.parse_args()
    logging.getLogger("telethon_guard").setLevel(logging.ERROR)  # one event line per flood
    shapes = args.shapes.split(",")
    variants = args.variants.split(",")
    latencies = [bool(int(x)) for x in args.latency.split(",")]
    results: dict[tuple[str, bool, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for shape in shapes:
            for latency in latencies:
                for variant in variants:
                    r = await one_run(shape, variant, latency, args)
                    results.setdefault((shape, latency, variant), []).append(r)
    load = [f"{x:.2f}" for x in os.getloadavg()]
    print(f"{args.parts} parts x {PART} B, limit {args.limit}/s, {args.rounds} rounds, "
          f"load average {' '.join(load)}")
    print(f"{'shape':6} {'latency':8} {'variant':10} {'opening':>12} {'floods':>12} "
          f"{'seconds':>18} {'parts/s':>20} {'ok':>10} {'failed':>8}")
    for (shape, latency, variant), rs in results.items():
        cols = [_fmt([r[k] for r in rs]) for k in ("opening", "floods", "seconds", "rate", "ok",
                                                   "failed")]
        print(f"{shape:6} {'30-80ms' if latency else 'none':8} {variant:10} {cols[0]:>12} "
              f"{cols[1]:>12} {cols[2]:>18} {cols[3]:>20} {cols[4]:>10} {cols[5]:>8}")


if __name__ == "__main__":
    asyncio.run(main())
