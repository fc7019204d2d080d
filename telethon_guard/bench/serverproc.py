"""The embedded MTProto server in its own process, driven over a pipe.

On a 2-core machine the server must not share the clients' event loop: its CPU time would be
counted against the client being measured. :class:`ServerProcess` starts
``python -m telethon_guard.bench.serverproc`` (a
:class:`~telethon_guard.testing.server.TelegramTestServer` with one DC) and talks to it
with one JSON object per line on stdin / stdout:

- ``hello`` -> address, api id / hash, the fault plan's start time;
- ``sessions n`` -> ``n`` pre-shared ``StringSession`` strings, each a new account;
- ``add_rules`` -> add fault rules by name (a fixed whitelist, see :data:`RULES`); a storm's
  ``start_in`` is seconds from now;
- ``clear_rules``; ``summary`` -> counts from the server's ground-truth log, and the
  server's own internal errors (``internal_errors``: ``repr`` of each, since start: the child
  runs with ``strict=False``, so a test checks this list instead); ``quit``.

The child exits when its stdin closes, so a killed parent leaves no server behind. Both
processes use ``time.monotonic()`` (CLOCK_MONOTONIC, system-wide on Linux), so times in a
summary are comparable with the parent's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from telethon import TelegramClient
from telethon.sessions import StringSession

MAX_LINE = 64 * 1024 * 1024


class ServerProcessError(RuntimeError):
    """The server process failed to start, died, or answered a command with an error."""


# ---- child side ---------------------------------------------------------------------------


def _build_rule(name: str, kwargs: dict[str, Any], plan: Any) -> Any:
    from telethon_guard.testing import faults_calls, faults_limits, faults_transport

    rules: dict[str, Any] = {
        "FloodWindow": faults_limits.FloodWindow,
        "GlobalRate": faults_limits.GlobalRate,
        "Latency": faults_calls.Latency,
        "ErrorOnCalls": faults_calls.ErrorOnCalls,
        "Transport429Storm": faults_transport.Transport429Storm,
        "AlwaysTransportError": faults_transport.AlwaysTransportError,
    }
    if name not in rules:
        raise ValueError(f"unknown rule {name!r}")
    kwargs = dict(kwargs)
    if "start_in" in kwargs:  # seconds from now -> seconds from the plan's start
        t0 = plan.started_at if plan.started_at is not None else time.monotonic()
        kwargs["start"] = max(0.0, time.monotonic() + float(kwargs.pop("start_in")) - t0)
    if "seconds" in kwargs and isinstance(kwargs["seconds"], list):
        kwargs["seconds"] = tuple(kwargs["seconds"])
    return rules[name](**kwargs)


def _summary(server: Any, since: float, accounts: list[int] | None,
             times_for: list[str]) -> dict[str, Any]:
    wanted = set(accounts) if accounts else None
    ok: dict[str, Counter[str]] = defaultdict(Counter)
    errors: dict[str, Counter[str]] = defaultdict(Counter)
    flood_times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    ok_times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    opened = refused = transport = 0
    for e in server.log.entries:
        if e.time < since:
            continue
        if e.kind == "opened":
            opened += 1
            continue
        if e.kind == "refused":
            refused += 1
            transport += 1
            continue
        if e.kind != "request":
            continue
        if wanted is not None and e.account not in wanted:
            continue
        acc = str(e.account)
        method = e.method or "?"
        if e.outcome == "ok":
            ok[acc][method] += 1
            if method in times_for:
                ok_times[acc][method].append(e.time)
        elif e.outcome == "rpc_error":
            msg = e.error_message or "?"
            kind = "FLOOD_WAIT" if msg.startswith("FLOOD_WAIT_") else msg
            errors[acc][kind] += 1
            if kind == "FLOOD_WAIT":
                flood_times[acc][method].append(e.time)
        elif e.outcome == "transport_error":
            transport += 1
            errors[acc][f"transport_{e.error_code}"] += 1
        else:
            errors[acc][str(e.outcome)] += 1
    return {
        "now": time.monotonic(),
        "ok_counts": {a: dict(c) for a, c in ok.items()},
        "errors": {a: dict(c) for a, c in errors.items()},
        "flood_times": {a: dict(m) for a, m in flood_times.items()},
        "ok_times": {a: dict(m) for a, m in ok_times.items()},
        "connections_opened": opened,
        "connections_refused": refused,
        "transport_errors": transport,
        "internal_errors": [repr(e) for e in server.internal_errors],
    }


async def _child_main() -> None:
    from telethon_guard.testing.faults import FaultPlan
    from telethon_guard.testing.server import TelegramTestServer

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    plan = FaultPlan(seed=int(os.environ.get("TG_BENCH_SEED", "1")))
    async with TelegramTestServer(dcs=1, faults=plan, strict=False) as server:
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                cmd = json.loads(line)
                op = cmd.get("op")
                if op == "hello":
                    addr = server.dc(1)
                    reply({"ok": True, "host": addr.host, "port": addr.port,
                           "api_id": server.api_id, "api_hash": server.api_hash,
                           "t0": plan.started_at, "pid": os.getpid()})
                elif op == "sessions":
                    sessions = []
                    for _ in range(int(cmd["n"])):
                        s = server.session()
                        user_id = server.auth_states()[-1].user_id
                        sessions.append({"session": s.save(), "account": user_id})
                    reply({"ok": True, "sessions": sessions})
                elif op == "add_rules":
                    for name, kwargs in cmd["rules"]:
                        plan.add(_build_rule(name, kwargs, plan))
                    reply({"ok": True, "now": time.monotonic()})
                elif op == "clear_rules":
                    plan.clear()
                    reply({"ok": True})
                elif op == "summary":
                    reply({"ok": True, **_summary(server, float(cmd.get("since", 0.0)),
                                                  cmd.get("accounts"),
                                                  list(cmd.get("times_for", [])))})
                elif op == "quit":
                    reply({"ok": True})
                    return
                else:
                    reply({"ok": False, "error": f"unknown op {op!r}"})
            except Exception as e:  # report to the parent, keep serving
                reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


# ---- parent side --------------------------------------------------------------------------


class ServerProcess:
    """``async with ServerProcess() as srv:`` a test server in a child process.

    ``await srv.sessions(n)`` gives ``[(session_string, account_id), ...]``;
    ``srv.client(cls, session_string, **kwargs)`` builds a not-yet-connected client of ``cls``
    (Telethon's own defaults unless overridden); ``await srv.add_rules(...)`` changes the
    fault plan; ``await srv.summary(...)`` reads the ground-truth log. Raises
    :class:`ServerProcessError` if the child fails. The child is killed on exit (after a 3 s
    grace period for ``quit``).
    """

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.host = "127.0.0.1"
        self.port = 0
        self.api_id = 0
        self.api_hash = ""

    async def __aenter__(self) -> ServerProcess:
        env = {**os.environ, "TG_BENCH_SEED": str(self.seed), "PYTHONUNBUFFERED": "1"}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "telethon_guard.bench.serverproc",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env, start_new_session=True, limit=MAX_LINE,
        )
        try:
            hello = await asyncio.wait_for(self.call("hello"), 30)
        except BaseException:
            await self.close()
            raise
        self.host, self.port = hello["host"], int(hello["port"])
        self.api_id, self.api_hash = int(hello["api_id"]), str(hello["api_hash"])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write(b'{"op": "quit"}\n')
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 3)

    async def call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise ServerProcessError("server process is not running")
        async with self._lock:
            proc.stdin.write((json.dumps({"op": op, **kwargs}) + "\n").encode())
            await proc.stdin.drain()
            line = await proc.stdout.readline()
        if not line:
            raise ServerProcessError(f"server process exited (status {proc.returncode})")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise ServerProcessError(f"server process: {answer.get('error')}")
        return answer

    async def sessions(self, n: int) -> list[tuple[str, int]]:
        answer = await self.call("sessions", n=n)
        return [(s["session"], int(s["account"])) for s in answer["sessions"]]

    async def add_rules(self, *rules: tuple[str, dict[str, Any]]) -> float:
        """Add rules ``(name, kwargs)``; returns the server's monotonic time after adding."""
        answer = await self.call("add_rules", rules=[list(r) for r in rules])
        return float(answer["now"])

    async def clear_rules(self) -> None:
        await self.call("clear_rules")

    async def summary(self, since: float = 0.0, accounts: list[int] | None = None,
                      times_for: list[str] | None = None) -> dict[str, Any]:
        return await self.call("summary", since=since, accounts=accounts,
                               times_for=times_for or [])

    def client(self, cls: type[TelegramClient], session: str, **kwargs: Any) -> Any:
        """A not-yet-connected ``cls`` client on ``session`` with Telethon's defaults."""
        return cls(StringSession(session), self.api_id, self.api_hash, **kwargs)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_child_main())
