"""Four processes, one Telegram account, guard state on the real Redis (issue 5).

The MTProto test server runs in this process (its log is the ground truth); four worker
processes (``redis_worker.py``), each a ``GuardedTelegramClient`` with
``storage="redis://127.0.0.1:6379/0?prefix=<unique>"`` and the same ``account`` key, connect to
it with their own auth keys of one server account. The scenarios run in order on the same
workers (starting processes is the slow part on a shared 2-core machine):

1. the user's limit of 20 requests per second for the account (``rate_limits=((20, 1.0),)``,
   with the guard's default ``rate_margin``), 6 callers per process for 3 s: the slots the four
   guards reserved in Redis hold at most 20 in any window of 1 s plus the margin, every
   ``messages.getHistory`` the server executed had its own slot and reached the server no
   earlier than it, and at least 95 % of the 60 a 20-per-second budget allows in 3 s were
   sent (see ``test_four_processes...`` for why the slots, not the server's arrival times, are
   held to the window);
2. one process gets ``FLOOD_WAIT_30`` for getHistory: the others send none and fail fast
   (``max_flood_wait`` 1 s is below the ~30 s left);
3. one process opens the (account, DC 1) breaker with two 500s: the others see it OPEN and get
   ``CircuitOpenError`` without a network call.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import sys
import time
from typing import Any

import redis.asyncio as aioredis

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
RATE_MARGIN = 0.05
"""``GuardConfig.rate_margin``'s default (seconds added to each configured period)."""
POLL = 0.1
"""Seconds between two reads of the account's limiter key in Redis. A slot stays in the key at
least ``1 + RATE_MARGIN`` s after its time (cut only when older than the key's period, and only
once the key holds more than 104 slots), so a read up to 0.9 s late still sees every slot that
was not given back."""
ROUNDING = 1e-6
"""Seconds of rounding in a slot: Redis keeps them as doubles of wall-clock seconds since the
epoch (about 0.24 microseconds apart at today's dates)."""
CLOCK_SLACK = 0.005
"""Seconds an arrival may seem to precede its slot: the slots are on Redis' ``TIME`` (the wall
clock), converted to the server log's monotonic clock with one offset read at the end of the
run; NTP may slew the wall clock by up to 0.5 ms/s meanwhile."""


def most_in_window(times: list[float], window: float) -> int:
    """Most of ``times`` inside any half-open window ``[t, t + window)``."""
    ts = sorted(times)
    return max((bisect.bisect_left(ts, t + window - 1e-9, lo=i) - i
                for i, t in enumerate(ts)), default=0)


async def poll_slots(client: Any, key: str, slots: dict[bytes, float],
                     stop: asyncio.Event) -> float:
    """Copy every reservation (token -> slot, Redis clock) of limiter key ``key`` into
    ``slots`` every :data:`POLL` s until ``stop`` is set; returns the longest gap in seconds
    between two reads (the reads are complete when it stays below 1 s)."""
    gap = 0.0
    last = time.monotonic()
    while True:
        for token, score in await asyncio.wait_for(
                client.zrange(key, 0, -1, withscores=True), 5):
            slots[token] = score
        now = time.monotonic()
        gap, last = max(gap, now - last), now
        if stop.is_set():
            return gap
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL)


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
    rdb = aioredis.from_url(redis_url)
    async with TelegramTestServer(dcs=1, strict=False) as server:
        user_id = server.world.register_account(None)
        account = f"acct-{prefix[-12:]}"
        dc = server.dc(1)
        guard = {
            # Redis' answers are bounded by 2 s, not the default 0.25 s: with 2 CPU hogs and a
            # second run of this test on the 2-core machine, admissions took up to 0.41 s, and a
            # process whose Redis does not answer in time uses its local state (by design;
            # test_redis_outage), which is not the sharing measured here.
            "storage": f"{redis_url}?prefix={prefix}&timeout=2",
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
            # What the guards control is when they send: each call first reserves a slot in
            # the account's limiter key in Redis (one sorted set, read here while they run)
            # and is sent when its slot comes. The server logs an arrival one send path later
            # (the worker waking, Telethon's send loop, the server's read loop), and on this
            # shared 2-core machine that delay varies with the load: with 2 CPU hogs the same
            # reserved slots, exactly 1.05 s apart for every 20, reached the server with
            # 1-280 ms of delay, up to 27 arrivals in 1 s. The margin (0.05 s) absorbs only
            # the usual variation, so the window is held against the slots; the arrivals must
            # each have a slot of their own and never precede it.
            start = time.monotonic() + 0.5
            slots: dict[bytes, float] = {}
            stop = asyncio.Event()
            poller = asyncio.create_task(poll_slots(
                rdb, f"{prefix}:rl:{{acct:{account}}}", slots, stop))
            try:
                results = await asyncio.gather(*(
                    w.ask({"cmd": "load", "start": start, "duration": DURATION, "tasks": 6})
                    for w in workers))
            finally:
                stop.set()
                gap = await poller
            # Redis slots are on the wall clock (Redis TIME), the server log on monotonic.
            offset = time.time() - time.monotonic()
            assert all(not r["errors"] for r in results), results
            # Redis answered every process throughout (else it used local state, by design,
            # and the four processes did not share one limit: test_redis_outage covers that).
            assert all(not r["fallbacks"] for r in results), results
            per_process = [r["ok"] for r in results]
            assert all(n > 0 for n in per_process), per_process  # everyone got a share
            times = server.log.times(HISTORY, user_id)
            assert len(times) == sum(per_process)
            assert gap < 1.0, f"Redis read only every {gap:.2f} s: some slots may be unseen"
            reserved = sorted(s - offset for s in slots.values())
            shown = ([round(t - start, 3) for t in reserved], [round(t - start, 3) for t in times])
            # Every slot of the account's requests counts (connecting sends a few before the
            # run); a slot is ``1 + RATE_MARGIN`` after the one 20 before it, up to rounding.
            assert most_in_window(reserved, 1.0 + RATE_MARGIN - ROUNDING) <= LIMIT, shown
            # The run's getHistory slots: none before its start. Slots given back (callers
            # cancelled at the end) are among them: extra slots only make the next two checks
            # easier, never fail them.
            run = [r for r in reserved if r >= start - CLOCK_SLACK]
            assert len(times) <= len(run), shown  # no call went without a slot
            late = [a - r for a, r in zip(times, run, strict=False)]
            assert min(late) >= -CLOCK_SLACK, shown  # the k-th arrival is not before slot k
            assert len(times) >= 0.95 * LIMIT * DURATION, (len(times), per_process)

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
            await rdb.aclose()
