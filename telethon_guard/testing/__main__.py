"""Run the test server as its own process.

::

    python -m telethon_guard.testing serve --dcs 2 --sessions 4 --json /tmp/server.json \
        --fault "messages.getHistory limit 30/30s" --fault "at 10s: transport 429 refuse 5s"

Writes (and prints) a JSON document with the DC addresses, ``api_id`` / ``api_hash``, the
requested number of pre-shared ``StringSession`` strings (each a new logged-in account) and,
with ``--rsa``, the server's public RSA key (register it in the client process with
``telethon_guard.testing.register_public_key(pem)`` before a key exchange). Serves until
SIGINT / SIGTERM, then prints a summary of the log. ``--fault`` lines use the script form of
:mod:`telethon_guard.testing.faults_script`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

from telethon_guard.testing import crypto
from telethon_guard.testing.faults import FaultPlan
from telethon_guard.testing.server import TelegramTestServer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m telethon_guard.testing")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run a TelegramTestServer until interrupted")
    s.add_argument("--dcs", type=int, default=2, help="number of DCs (listeners)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0,
                   help="port of DC 1; DC n uses port + n - 1 (0: the OS picks every port)")
    s.add_argument("--sessions", type=int, default=1, help="pre-shared sessions to print")
    s.add_argument("--json", default=None, help="also write the JSON document to this file")
    s.add_argument("--rsa", action="store_true", help="include the server's public RSA key")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fault", action="append", default=[], metavar="LINE",
                   help="a fault-plan script line (repeatable), e.g. 'at 2s: transport 429'")
    s.add_argument("--no-log", action="store_true",
                   help="keep no request log (long benchmarks; connection events stay)")
    return p


async def serve(args: argparse.Namespace) -> int:
    if args.dcs < 1 or args.sessions < 0:
        print("--dcs must be >= 1 and --sessions >= 0", file=sys.stderr)
        return 2
    ports = [args.port + i if args.port else 0 for i in range(args.dcs)]
    try:
        plan = FaultPlan.script(*args.fault, seed=args.seed)
    except ValueError as e:
        print(f"bad --fault: {e}", file=sys.stderr)
        return 2
    server = TelegramTestServer(dcs=args.dcs, host=args.host, seed=args.seed, ports=ports,
                                faults=plan, strict=False)
    async with server:
        if args.no_log:
            server.log.entries = _Discard()
        doc: dict[str, Any] = {
            "dcs": [{"dc_id": d.dc_id, "host": d.host, "port": d.port} for d in server.dcs],
            "api_id": server.api_id,
            "api_hash": server.api_hash,
            "sessions": [server.session().save() for _ in range(args.sessions)],
        }
        if args.rsa:
            doc["rsa_public_key"] = crypto.public_pem(server._rsa_key())
        text = json.dumps(doc)
        if args.json:
            _write_atomically(args.json, text)
        print(text, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        started = time.monotonic()
        await stop.wait()
        elapsed = time.monotonic() - started
        summary = {
            "seconds": round(elapsed, 3),
            "requests": None if args.no_log else server.log.summary(),
            "connections_opened": server.log.connections_opened(),
            "internal_errors": [repr(e) for e in server.internal_errors],
        }
        print(json.dumps(summary), flush=True)
    return 0


def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


class _Discard(list[Any]):
    """A log that keeps only connection events (request entries are dropped)."""

    def append(self, entry: Any) -> None:
        if entry.kind != "request":
            super().append(entry)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return asyncio.run(serve(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
