"""Cost of one rate-limiter decision: telethon-guard's limiter vs aiolimiter, same machine, one run.

Measures nanoseconds per "go now" decision (reserve-and-commit, no waiting):

* ``guard decide (sync)``: :meth:`RateLimiter.decide` on the in-memory storage with the
  incident's limits (10 per second AND 200 per minute); the clock (a builtin, like
  ``time.monotonic``) steps 0.35 s per decision, so every decision is granted at once while the
  sliding logs stay in steady state (one slot trimmed, one appended per decision). This is the
  path the pipeline takes for local storage.
  The specs are one tuple reused for every decision, as the pipeline passes them
  (:class:`~telethon_guard.limiter.LimitKeys` caches one tuple per (account, DC, method)).
* ``guard decide, 2 keys alternating``: the same, alternating between two keys' spec tuples, so
  the decider's last-key memo never hits (a mixed workload's worst case).
* ``guard layer (keys + decide)``: what the pipeline's limiter layer does per call before any
  wait: build the call's specs with :class:`LimitKeys` (config ``rate_limits`` of 10/s AND
  200/min, adaptive pacing on with no pace learned) and decide.
* ``guard acquire (async)``: the same through ``await RateLimiter.acquire(...)``.
* ``aiolimiter acquire``: ``await AsyncLimiter(max_rate=1e9, time_period=1).acquire()`` (never
  waits), aiolimiter's fast path.

Times are CPU time of the benchmark thread (``time.thread_time_ns``), so other processes on a
shared machine inflate them less. Rounds are interleaved (sync, async, aiolimiter, repeat) so
every contender sees the same conditions; each figure is the best of ``--repeat`` runs of
``--n`` decisions (the minimum is the least noisy estimate on a shared machine).
Run: ``python benchmarks/limiter_cost.py``; ``--json`` for a machine-readable line.
Target: guard sync decision <= 500 ns.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from telethon_guard.limiter import RateLimiter
from telethon_guard.storage import LimitSpec
from telethon_guard.storage.memory import MemoryStorage


def _clock_ns() -> int:
    # CPU time of this thread: robust on a shared machine (time spent descheduled while other
    # processes run is not counted). Same clock for every contender.
    return time.thread_time_ns()


SPECS = (LimitSpec("acct:bench", ((10, 1.0), (200, 60.0))),)
OTHER = (LimitSpec("acct:bench/dc:2/method:messages.getHistory", ((10, 1.0), (200, 60.0))),)
STEP = 0.35  # 2.9/s and 171/min: always under both windows


class StepClock:
    """A clock whose ``now()`` is a builtin (like production's ``time.monotonic``) that steps
    ``STEP`` seconds per call: every decision sees time move on, with no loop overhead."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now: Callable[[], float] = itertools.count(0.0, STEP).__next__

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - never waits here
        raise AssertionError("the benchmark must never wait")

    def call_at(self, when: float, callback: Callable[[], Any]) -> Any:  # pragma: no cover
        raise AssertionError("the benchmark must never wait")




def bench_guard_sync(n: int) -> float:
    clock = StepClock()
    lim = RateLimiter(MemoryStorage(clock), clock)
    decide = lim.decide
    specs = SPECS
    t0 = _clock_ns()
    for _ in range(n):
        pass
    overhead = _clock_ns() - t0
    t0 = _clock_ns()
    for _ in range(n):
        if decide(specs)[0] > 0:
            raise AssertionError("unexpected wait")
    elapsed = _clock_ns() - t0
    return max(0.0, (elapsed - overhead) / n)


def bench_guard_sync_alternating(n: int) -> float:
    clock = StepClock()
    lim = RateLimiter(MemoryStorage(clock), clock)
    decide = lim.decide
    pairs = (SPECS, OTHER) * (n // 2)
    t0 = _clock_ns()
    for _ in pairs:
        pass
    overhead = _clock_ns() - t0
    t0 = _clock_ns()
    for specs in pairs:
        if decide(specs)[0] > 0:
            raise AssertionError("unexpected wait")
    elapsed = _clock_ns() - t0
    return max(0.0, (elapsed - overhead) / len(pairs))


def bench_guard_layer(n: int) -> float:
    from telethon.tl.functions.help import GetConfigRequest

    from telethon_guard.call import CallInfo
    from telethon_guard.config import GuardConfig
    from telethon_guard.limiter import LimitKeys
    from telethon_guard.pacing import AdaptivePacer

    clock = StepClock()
    lim = RateLimiter(MemoryStorage(clock), clock)
    decide = lim.decide
    pacer = AdaptivePacer(clock)
    keys = LimitKeys(GuardConfig(rate_limits=SPECS[0].windows), pacer.window).specs
    call = CallInfo(method="messages.getHistory", request=GetConfigRequest(), account="bench",
                    dc_id=2)
    t0 = _clock_ns()
    for _ in range(n):
        pass
    overhead = _clock_ns() - t0
    t0 = _clock_ns()
    for _ in range(n):
        if decide(keys(call))[0] > 0:
            raise AssertionError("unexpected wait")
    elapsed = _clock_ns() - t0
    return max(0.0, (elapsed - overhead) / n)


async def bench_guard_async(n: int) -> float:
    clock = StepClock()
    lim = RateLimiter(MemoryStorage(clock), clock)
    acquire = lim.acquire
    specs = SPECS
    t0 = _clock_ns()
    for _ in range(n):
        pass
    overhead = _clock_ns() - t0
    t0 = _clock_ns()
    for _ in range(n):
        if await acquire(specs) > 0:
            raise AssertionError("unexpected wait")
    elapsed = _clock_ns() - t0
    return max(0.0, (elapsed - overhead) / n)


async def bench_aiolimiter(n: int) -> float:
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(max_rate=1e9, time_period=1)
    acquire = limiter.acquire
    t0 = _clock_ns()
    for _ in range(n):
        pass
    overhead = _clock_ns() - t0
    t0 = _clock_ns()
    for _ in range(n):
        await acquire()
    elapsed = _clock_ns() - t0
    return max(0.0, (elapsed - overhead) / n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="decisions per run (default 200000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs; the best is kept (default 5)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)
    if args.n < 1000 or args.repeat < 1:
        ap.error("--n must be >= 1000 and --repeat >= 1")

    async def run_all() -> tuple[float, float, float, float, float]:
        # Interleaved rounds: on a shared machine every contender sees the same conditions.
        s, alt, lay, g, a = [], [], [], [], []
        for _ in range(args.repeat):
            s.append(bench_guard_sync(args.n))
            alt.append(bench_guard_sync_alternating(args.n))
            lay.append(bench_guard_layer(args.n))
            g.append(await bench_guard_async(args.n))
            a.append(await bench_aiolimiter(args.n))
        return min(s), min(alt), min(lay), min(g), min(a)

    sync_ns, alt_ns, layer_ns, async_ns, aio_ns = asyncio.run(run_all())
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "n": args.n,
        "repeat": args.repeat,
        "guard_decide_sync_ns": round(sync_ns, 1),
        "guard_decide_alternating_ns": round(alt_ns, 1),
        "guard_layer_keys_decide_ns": round(layer_ns, 1),
        "guard_acquire_async_ns": round(async_ns, 1),
        "aiolimiter_acquire_ns": round(aio_ns, 1),
        "ratio_sync_vs_aiolimiter": round(sync_ns / aio_ns, 3) if aio_ns else None,
        "ratio_async_vs_aiolimiter": round(async_ns / aio_ns, 3) if aio_ns else None,
        "target_ns": 500,
        "meets_target": sync_ns <= 500,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"Python {result['python']} on {result['machine']}, best of {args.repeat} x "
              f"{args.n} decisions, limits 10/s AND 200/min")
        print(f"  guard decide (sync)      {sync_ns:8.1f} ns/decision  (target <= 500 ns)")
        print(f"  guard decide, 2 keys alt {alt_ns:8.1f} ns/decision")
        print(f"  guard layer (keys+decide){layer_ns:8.1f} ns/decision")
        print(f"  guard acquire (async)    {async_ns:8.1f} ns/decision")
        print(f"  aiolimiter acquire       {aio_ns:8.1f} ns/decision  (one window only)")
        print(f"  ratio sync/aiolimiter    {result['ratio_sync_vs_aiolimiter']}")
        print(f"  ratio async/aiolimiter   {result['ratio_async_vs_aiolimiter']}")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
