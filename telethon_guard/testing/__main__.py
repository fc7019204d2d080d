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

Exit status: 0 after SIGTERM; 130 after Ctrl-C (SIGINT) once the imports are done (a Ctrl-C
while Python imports the package, the first second or so, gets Python's own traceback under
``python -m``; ``telethon-guard serve``, the same command, exits 130 with one line then; a
server started with ``&`` from a script inherits an ignored SIGINT: use SIGTERM); 2 with one line
on stderr (no traceback) for a mistake: a bad value, a port in use or out of range, a host that
cannot be bound, a ``--json`` path that cannot be written (checked before the server starts);
141 (128 + SIGPIPE), quietly, when stdout's reader has gone (``... serve | head -c 20``) by the
time the JSON document or the summary is printed (the server is stopped then).
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
from collections.abc import Callable
from typing import Any, NoReturn

from telethon_guard.testing import crypto
from telethon_guard.testing.faults import FaultPlan
from telethon_guard.testing.server import MAX_DCS, TelegramTestServer

PROG = "python -m telethon_guard.testing"
"""The command's name in usage lines and errors (``telethon-guard serve`` passes its own)."""
_prog = PROG


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump, like ``telethon-guard``'s), status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=_prog)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("serve", help="run a TelegramTestServer until interrupted")
    s.add_argument("--dcs", type=int, default=2, help="number of DCs (listeners)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0,
                   help="port of DC 1; DC n uses port + n - 1 (0: the OS picks every port)")
    s.add_argument("--sessions", type=int, default=1, help="pre-shared sessions to print")
    s.add_argument("--json", default=None, help="also write the JSON document to this file")
    s.add_argument("--rsa", action="store_true",
                   help="include the server's public RSA key (rsa_public_key): a client that makes "
                   "a new auth key registers it with telethon_guard.testing.register_public_key")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fault", action="append", default=[], metavar="LINE",
                   help="a fault-plan script line (repeatable), e.g. 'at 2s: transport 429'")
    s.add_argument("--no-log", action="store_true",
                   help="keep no request log (long benchmarks; connection events stay)")
    return p


EXIT_OK = 0
EXIT_USAGE = 2
"""A mistake in the arguments or the environment: bad value, port in use, address that cannot
be bound, unwritable ``--json`` path. One line on stderr, no traceback."""
EXIT_BROKEN_PIPE = 141
"""stdout's reader went away (128 + SIGPIPE, as a shell reports it); nothing is printed."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT), also during start-up; like the ``telethon-guard`` command. SIGTERM is the
ordinary way to stop a server started by another program and exits 0."""


def _error(message: str) -> int:
    print(f"{_prog} serve: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def _check_args(args: argparse.Namespace) -> str | None:
    """The first problem with ``args`` (checked before anything is started), or ``None``."""
    if not 1 <= args.dcs <= MAX_DCS:
        return f"--dcs must be between 1 and {MAX_DCS}, got {args.dcs}"
    if args.sessions < 0:
        return f"--sessions must be >= 0, got {args.sessions}"
    if not 0 <= args.port <= 65535:
        return f"--port must be between 0 and 65535 (0: the OS picks), got {args.port}"
    if args.port and args.port + args.dcs - 1 > 65535:
        return (f"--port {args.port} with --dcs {args.dcs} needs ports up to "
                f"{args.port + args.dcs - 1}, beyond 65535")
    if not args.host.strip():
        return "--host must not be empty"
    if args.json:
        return _check_writable(args.json)
    return None


def _check_writable(path: str) -> str | None:
    """``None`` when ``path`` can be written (atomically, through ``path + ".tmp"``)."""
    if os.path.isdir(path):
        return f"cannot write --json {path}: it is a directory"
    probe = path + ".tmp"
    existed = os.path.exists(probe)
    try:
        with open(probe, "a"):
            pass
    except OSError as e:
        return f"cannot write --json {path}: {e.strerror or e}"
    if not existed:
        with contextlib.suppress(OSError):
            os.remove(probe)
    return None


async def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT (exit 130) or SIGTERM (exit 0); 2 on a usage error."""
    problem = _check_args(args)
    if problem is not None:
        return _error(problem)
    # Signals first, so a Ctrl-C while binding or generating the RSA key ends cleanly too.
    stop = asyncio.Event()
    interrupted = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal interrupted
        interrupted = interrupted or sig == signal.SIGINT
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    ports = [args.port + i if args.port else 0 for i in range(args.dcs)]
    try:
        plan = FaultPlan.script(*args.fault, seed=args.seed)
    except ValueError as e:
        return _error(f"bad --fault: {e}")
    try:
        server = TelegramTestServer(dcs=args.dcs, host=args.host, seed=args.seed, ports=ports,
                                    faults=plan, strict=False)
    except (TypeError, ValueError) as e:
        return _error(str(e))
    try:
        await server.start()
    except (OSError, OverflowError) as e:
        await server.stop()  # listeners of the DCs already bound
        where = f"{args.host}:{args.port}" if args.port else args.host
        reason = getattr(e, "strerror", None) or str(e)
        return _error(f"cannot listen on {where}: {reason}")
    try:
        return await _serve_started(server, args, stop, lambda: interrupted)
    finally:
        await server.stop()


async def _serve_started(server: TelegramTestServer, args: argparse.Namespace,
                         stop: asyncio.Event, interrupted: Callable[[], bool]) -> int:
    if stop.is_set():
        return EXIT_INTERRUPTED if interrupted() else EXIT_OK
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
    if stop.is_set():
        return EXIT_INTERRUPTED if interrupted() else EXIT_OK
    text = json.dumps(doc)
    if args.json:
        try:
            _write_atomically(args.json, text)
        except OSError as e:
            return _error(f"cannot write --json {args.json}: {e.strerror or e}")
    print(text, flush=True)
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
    return EXIT_INTERRUPTED if interrupted() else EXIT_OK


def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


class _Discard(list[Any]):
    """A log that keeps only connection events (request entries are dropped)."""

    def append(self, entry: Any) -> None:
        if entry.kind != "request":
            super().append(entry)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Exit status: 0 stopped by SIGTERM, 2 usage error (one line on stderr), 130 Ctrl-C,
    141 stdout's reader gone. ``prog``: the command's name in usage lines and errors."""
    global _prog
    _prog = prog
    try:
        try:
            args = _parser().parse_args(argv)
            if args.command == "serve":
                return asyncio.run(serve(args))
            return EXIT_USAGE
        except KeyboardInterrupt:  # Ctrl-C before the loop's handler is installed
            return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _quiet_broken_pipe() -> int:
    """Point stdout at ``os.devnull`` (so the interpreter's final flush cannot raise again) and
    return :data:`EXIT_BROKEN_PIPE`; Python's documented recipe for SIGPIPE. (The same as
    ``telethon_guard.bench.command.quiet_broken_pipe``, not imported: the server stands alone.)"""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no stdout file descriptor (replaced, closed)
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
