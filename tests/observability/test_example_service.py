"""The example FastAPI service (examples/fastapi_service) through a transport -429 storm and
FLOOD_WAITs, driven in-process through httpx's ASGI transport.

Real Telethon against the embedded MTProto server. The server runs in a process of its own
(:class:`~telethon_guard.bench.serverproc.ServerProcess`, the same world and fault rules): the
/health bound is about the service's loop (guard + service), and on a shared 2-core machine a
server on that loop (encryption, the storm's reconnects) made the loop late by its own CPU
share, which the idle reference loop in another process cannot model. Issue 6: "/health p99
under 10 ms, /channels answers from the cache while the breaker is open and live again after,
no request times out, /metrics shows the 429s".
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

import httpx
import pytest

from examples.fastapi_service.app import ChannelService, create_app
from telethon_guard import GuardedTelegramClient
from telethon_guard.bench.serverproc import ServerProcess
from telethon_guard.testing.server import CLIENT_DEFAULTS

TIMEOUT = 1.0  # seconds /channels may spend on Telegram
STORM = 2.5  # seconds of -429 (every request and every new connection)
BOUND = 20.0  # no single wait of this test exceeds this
# One /channels answer may take the budget plus scheduling noise on a shared 2-core machine.
ANSWER_BOUND = TIMEOUT + 1.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# A reference event loop in a process of its own, ticking every 10 ms while /health is measured
# and doing about one /health answer's CPU per tick (REFERENCE_WORK_S: httpx + ASGI + FastAPI
# in-process, 1-2 ms from due to answer on a quiet machine): from when each tick was due to the
# end of that work is what the machine's scheduling alone does to a loop with /health's work in
# the same seconds (other pytest-xdist workers on the same cores: a process that needs CPU on
# each tick waits for a time slice, an idle one hardly does), and nothing this process's loop
# does (the guard included) can add to it. A loop really blocked (30 ms every 100 ms) still
# fails the bound by ~20 ms.
REFERENCE_WORK_S = 0.001
REFERENCE_LOOP = f"""
import asyncio, json, sys, threading, time
WORK_S = {REFERENCE_WORK_S}
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
async def main():
    lags = []
    print("ready", flush=True)
    while not stop.is_set():
        due = time.perf_counter() + 0.01
        await asyncio.sleep(0.01)
        cpu = time.process_time()  # then about one /health answer's CPU (WORK_S), as the
        while time.process_time() - cpu < WORK_S:  # service's loop must do per request
            pass
        lags.append((time.perf_counter() - due) * 1000)
    print(json.dumps(lags), flush=True)
asyncio.run(main())
"""


async def start_reference_loop() -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", REFERENCE_LOOP, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), BOUND)).strip() == b"ready"
    return proc


async def stop_reference_loop(proc: asyncio.subprocess.Process) -> list[float]:
    """The reference loop's tick lateness samples (ms)."""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(b"\n"), BOUND)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lags: list[float] = json.loads(out)
    return lags


def breaker_open(client: Any) -> bool:
    return any(s == "OPEN" for s in client.guard.stats().breakers.values())


# /health p99 < 10 ms is a loop-latency figure: under pytest-xdist it shares a worker (never
# overlaps) with the other loop-lag and CPU-heavy tests (group "loop_timing")
@pytest.mark.xdist_group("loop_timing")
async def test_service_serves_cache_through_429_storm_and_flood_waits() -> None:
    async with ServerProcess() as server:
        await server.add_rules(("Latency", {"method": "channels.getFullChannel",
                                            "seconds": 0.05}))
        [(session, _)] = await server.sessions(1)
        # the in-process server's client defaults (small retries), as before the move
        client = server.client(
            GuardedTelegramClient, session, **CLIENT_DEFAULTS, deadline=5.0,
            attempt_timeout=0.4, breaker_failure_threshold=3, breaker_open_seconds=0.5,
            retry_base_delay=0.01, retry_max_delay=0.05)
        service = ChannelService(client, timeout=TIMEOUT)
        app = create_app(service)
        await asyncio.wait_for(service.start(), BOUND)
        health_ms: list[float] = []
        health_bodies: list[dict[str, Any]] = []
        answers: list[tuple[str, str, float, bool, int]] = []  # phase, source, s, open, status
        stop = asyncio.Event()
        reference: asyncio.subprocess.Process | None = None
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://svc",
                                         timeout=BOUND) as http:

                async def pinger() -> None:
                    # From when each request was due (10 ms after the last answer) to its
                    # answer: in-process (ASGI, no socket) a request waits for a busy loop
                    # only before it starts, as one arriving on a socket would.
                    due = time.perf_counter()
                    while not stop.is_set():
                        r = await http.get("/health")
                        health_ms.append((time.perf_counter() - due) * 1000)
                        assert r.status_code == 200
                        health_bodies.append(r.json())
                        due = time.perf_counter() + 0.01
                        await asyncio.sleep(0.01)

                async def channels(phase: str) -> dict[str, Any]:
                    # Telegram known to be down: the breaker OPEN, or reconnecting (a call
                    # waiting for a paced reconnect no longer times out against the breaker,
                    # so a storm need not open it)
                    was_open = breaker_open(client) or not client.guard.available
                    t = time.perf_counter()
                    r = await asyncio.wait_for(http.get("/channels"), BOUND)
                    body: dict[str, Any] = r.json()
                    answers.append((phase, body["source"], time.perf_counter() - t, was_open,
                                    r.status_code))
                    return body

                reference = await start_reference_loop()
                ping = asyncio.ensure_future(pinger())
                # 1. calm: live, and the cache is filled
                body = await channels("calm")
                assert body["source"] == "live", body
                assert [c["username"] for c in body["channels"]] == list(service.channels)
                assert service.cache.load(service.channels)

                # 2. -429 storm while a /channels is in flight
                # the server's clock is this process's (CLOCK_MONOTONIC is system-wide)
                added = await server.add_rules(
                    ("Transport429Storm", {"start_in": 0.02, "duration": STORM}))
                storm_end = added + 0.02 + STORM
                while time.monotonic() < storm_end:
                    body = await channels("storm")
                    assert body["channels"], body
                    await asyncio.sleep(0.05)

                # 3. after the storm: available again within a bound, then live
                assert await client.guard.wait_available(BOUND)
                end = time.monotonic() + BOUND
                while (await channels("recovery"))["source"] != "live":
                    assert time.monotonic() < end, answers[-5:]
                    await asyncio.sleep(0.1)

                # 4. FLOOD_WAIT longer than the budget: cache at once, live after it
                await server.add_rules(("ErrorOnCalls", {
                    "method": "channels.getFullChannel", "code": 420,
                    "message": "FLOOD_WAIT_2", "times": 1}))
                body = await channels("flood")
                assert body["source"] == "cache" and body["reason"] == "FloodWaitBlocked", body
                body = await channels("flood")  # the ledger answers: no request is sent
                assert body["source"] == "cache", body
                assert answers[-1][2] < 0.5, answers[-1]
                await asyncio.sleep(2.0)
                end = time.monotonic() + BOUND
                while (await channels("after flood"))["source"] != "live":
                    assert time.monotonic() < end, answers[-5:]
                    await asyncio.sleep(0.1)

                metrics = (await http.get("/metrics")).text
                stats = (await http.get("/stats")).json()
                stop.set()
                await asyncio.wait_for(ping, BOUND)
                noise = await stop_reference_loop(reference)
        finally:
            stop.set()
            if reference is not None and reference.returncode is None:
                reference.kill()
                await reference.wait()
            await asyncio.wait_for(service.stop(), BOUND)
        # what strict=True checked in-process: the server's own code never failed
        server_errors = (await asyncio.wait_for(server.summary(), BOUND))["internal_errors"]
    assert server_errors == [], server_errors

    # no request timed out: every /channels answered within the budget plus noise, HTTP 200
    assert all(a[4] == 200 for a in answers), answers
    slowest = max(a[2] for a in answers)
    assert slowest < ANSWER_BOUND, answers
    # the cache answered while Telegram was known to be down (breaker OPEN or reconnecting),
    # at once
    during_open = [a for a in answers if a[3]]
    assert during_open, answers
    assert all(a[1] == "cache" for a in during_open), during_open
    assert max(a[2] for a in during_open) < 0.25, during_open
    assert any(a[0] == "storm" and a[1] == "cache" for a in answers)
    # /health never touched Telegram, reported the degradation, and stayed fast
    assert any(not b["telegram"]["available"] for b in health_bodies)
    assert health_bodies[-1]["telegram"]["available"]
    p50, p99, worst = pct(health_ms, 0.5), pct(health_ms, 0.99), max(health_ms)
    floor = pct(noise, 0.99)
    report = (f"/health n={len(health_ms)} p50={p50:.2f} ms p99={p99:.2f} ms "
              f"max={worst:.2f} ms mean={statistics.fmean(health_ms):.2f} ms; machine noise "
              f"(a reference loop with /health's CPU per tick, in another process, same "
              f"seconds) p99={floor:.2f} ms "
              f"n={len(noise)}; /channels slowest {slowest * 1000:.0f} ms")
    print(report)
    assert len(health_ms) > 100 and len(noise) > 100, report
    # Issue 6's 10 ms, on top of what the machine itself added in those seconds: 10 ms on a
    # quiet machine; a loop the guard blocks for tens of ms still fails, however loaded.
    assert p99 < 10.0 + floor, report
    # /metrics shows the 429s, the fail-fast outcomes and the flood wait
    assert 'telethon_guard_transport_errors_total{code="-429"}' in metrics, metrics
    assert 'outcome="flood_wait"' in metrics
    assert 'telethon_guard_flood_wait_seconds_count{method="channels.getFullChannel"} 1.0' \
        in metrics
    if stats["breaker_transitions"]:  # the storm opened a breaker: the gauge shows it
        assert 'telethon_guard_breaker_state{key="' in metrics, metrics
    assert stats["transport_errors"].get("-429", 0) >= 1, stats
    # if the storm opened a breaker, it closed again
    assert all(s == "CLOSED" for s in stats["breakers"].values()), stats
