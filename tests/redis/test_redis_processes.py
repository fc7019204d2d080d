"""Four processes, one Telegram account, guard state on the real Redis (issue 5).

The MTProto test server runs in this process (its log is the ground truth); four worker
processes (``redis_worker.py``), each a ``GuardedTelegramClient`` with
``storage="redis://127.0.0.1:6379/0?prefix=<unique>"`` and the same ``account`` key, connect to
it with their own auth keys of one server account. The scenarios run in order on the same
workers (starting processes is the slow part on a shared 2-core machine):

1. a limit of 20 ``messages.getHistory`` per second for the account (configured as 20 per 1.25 s:
   see ``MARGIN``), 6 callers per process for 3 s: the server sees at most 20 in any 1 s
   window and at least 95 % of the 60 a 20-per-second budget allows in 3 s;
2. one process gets ``FLOOD_WAIT_30`` for getHistory: the others send none and fail fast
   (``max_flood_wait`` 1 s is below the ~30 s left);
3. one process opens the (account, DC 1) breaker with two 500s: the others see it OPEN and get
   ``CircuitOpenError`` without a network call.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

WORKER = os.path.join(os.path.dirname(__file__), "redis_worker.py")
N_PROCS = 4
LIMIT = 20
DURATION = 3.0
MARGIN = 0.25
"""Seconds added to the 1 s period in the guard's config. The limiter spaces *reservations* by
exactly its period; the server sees each request one send latency later, and that latency varies
between bursts (measured here: 40-160 ms on a loaded 2-core machine with 24 callers before the
workers warmed up, 30-50 ms after). Without a margin the 21st request can reach the server a few
ms less than 1 s after the 1st (seen: 24 in one second). With 0.25 s the bursts land at 0, 1.25
and 2.5 s, so a 3 s run still allows 60."""
HISTORY = "messages.getHistory"


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, cfg: dict[str, Any]) -> Worker:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, WORKER, json.dumps(cfg), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env)
        return cls(proc)

    async def read(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert line, f"worker exited with {await self.proc.wait()}"
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def ask(self, cmd: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read(timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 15)
            except Exception:
                self.proc.kill()
                await self.proc.wait()


async def test_four_processes_share_limits_flood_waits_and_breakers(
        redis_url: str, prefix: str) -> None:
    async with TelegramTestServer(dcs=1, strict=False) as server:
        user_id = server.world.register_account(None)
        account = f"acct-{prefix[-12:]}"
        dc = server.dc(1)
        guard = {
            "storage": f"{redis_url}?prefix={prefix}",
            "account": account,
            "method_limits": {HISTORY: [[LIMIT, 1.0 + MARGIN]]},
            "max_flood_wait": 1.0,
            "breaker_failure_threshold": 2,
            "breaker_open_seconds": 30.0,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
            "deadline": 10.0,
            "adaptive_pacing": False,
        }
        workers: list[Worker] = []
        try:
            for _ in range(N_PROCS):
                session = server.session(account=user_id)
                assert session.server_address == dc.host and session.port == dc.port
                workers.append(await Worker.start({
                    "session": session.save(), "api_id": server.api_id,
                    "api_hash": server.api_hash, "guard": guard}))
            for w in workers:
                assert (await w.read(60))["ready"]

            # 1. shared rate limit ---------------------------------------------------------
            start = time.monotonic() + 0.5
            results = await asyncio.gather(*(
                w.ask({"cmd": "load", "start": start, "duration": DURATION, "tasks": 6})
                for w in workers))
            assert all(not r["errors"] for r in results), results
            per_process = [r["ok"] for r in results]
            assert all(n > 0 for n in per_process), per_process  # everyone got a share
            times = server.log.times(HISTORY, user_id)
            in_run = [t for t in times if start <= t < start + DURATION]
            allowed = LIMIT * DURATION
            assert server.log.max_in_window(HISTORY, 1.0, user_id) <= LIMIT, (
                [round(t - start, 3) for t in times])
            assert len(in_run) >= 0.95 * allowed, (len(in_run), per_process)
            assert len(times) == sum(per_process)

            # 2. FLOOD_WAIT_30 seen by one process blocks all of them ----------------------
            server.faults.add(ErrorOnCalls(HISTORY, 420, "FLOOD_WAIT_30", times=1))
            sent_before = server.log.count(HISTORY)
            first = await workers[0].ask({"cmd": "call", "method": "history"})
            assert first["error"] == "FloodWaitBlocked" and first["from_server"], first
            assert first["seconds"] == 30
            others = await asyncio.gather(*(
                w.ask({"cmd": "call", "method": "history"}) for w in workers[1:]))
            for r in others:
                assert r["error"] == "FloodWaitBlocked" and r["from_server"] is False, r
                assert 25 <= r["seconds"] <= 30 and r["elapsed"] < 1.0, r
            assert server.log.count(HISTORY) == sent_before + 1  # only the first one

            # 3. a breaker opened by one process is OPEN for all ---------------------------
            server.faults.add(ErrorOnCalls("users.getUsers", 500, "INTERNAL"))
            users_before = server.log.count("users.getUsers")
            opened = await workers[1].ask({"cmd": "call", "method": "me"})
            assert not opened["ok"], opened
            assert server.log.count("users.getUsers") - users_before == 2  # threshold
            for w in workers:
                state = await w.ask({"cmd": "breaker"})
                assert state["state"] == "OPEN" and state["retry_after"] > 20, state
            sent = server.log.count()
            for w in (workers[0], workers[2], workers[3]):
                r = await w.ask({"cmd": "call", "method": "me"})
                assert r["error"] == "CircuitOpenError" and r["elapsed"] < 1.0, r
            assert server.log.count() == sent  # rejected without a network call
        finally:
            await asyncio.gather(*(w.stop() for w in workers))
