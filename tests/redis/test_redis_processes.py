"""Four processes, one Telegram account, guard state on the real Redis (issue 5).

The MTProto test server runs in this process (its log is the ground truth); four worker
processes (``redis_worker.py``), each a ``GuardedTelegramClient`` with
``storage="redis://127.0.0.1:6379/0?prefix=<unique>"`` and the same ``account`` key, connect to
it with their own auth keys of one server account. The scenarios run in order on the same
workers (starting processes is the slow part on a shared 2-core machine):

1. the user's limit of 20 requests per second for the account (``rate_limits=((20, 1.0),)``,
   with the guard's default ``rate_margin``), 6 callers per process for 3 s: the server sees at
   most 20 ``messages.getHistory`` in any 1 s window and at least 95 % of the 60 a 20-per-second
   budget allows in 3 s;
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
"""Seconds of load. The limiter spaces *reservations* by the period plus ``rate_margin``
(``GuardConfig`` default 0.05 s); the server counts arrivals one varying send latency later,
and the margin absorbs that variation. The cost: the bursts start at 0, 1.05, 2.10, 3.15 s...,
so a run of D seconds gets ``20 * ceil(D / 1.05)`` where a 20-per-second budget allows
``20 * ceil(D)``. For D = 3 that is 60 of 60 (the third burst starts at 2.10 s, 0.9 s before the
end). D must be a whole number of seconds: a run ending just after one (D = 2.02: 40 of 60)
would miss 95 % by the margin's shift alone."""
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
            "rate_limits": [[LIMIT, 1.0]],
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
