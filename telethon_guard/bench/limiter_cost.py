"""Limiter cost: CPU time of one rate-limiter decision that does not wait.

telethon-guard's limiter (:meth:`telethon_guard.limiter.RateLimiter.decide`, a synchronous
reserve-and-commit on local storage, the path the pipeline takes) beside aiolimiter's
``await AsyncLimiter.acquire()`` with capacity to spare, on the same machine in the same run.
Each figure is the best of several repeats (nanoseconds per decision), the usual way to time a
micro-operation on a shared machine. The measurement itself lives in
``benchmarks/limiter_cost.py`` (guard core: thread CPU time, the incident's limits 10/s AND
200/min); when that file is not available (an installed wheel) an equivalent measurement here
(wall time, one window) is used.
Target (issue 4): <= 500 ns per decision.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from telethon_guard.bench.context import WorkloadContext
from telethon_guard.bench.results import Chart, Row

TARGET_NS = 500.0
AIOLIMITER_NOMINAL_NS = 800.0  # issue 4: "aiolimiter takes about 800 ns on these machines"


def _repo_benchmark() -> ModuleType | None:
    """``benchmarks/limiter_cost.py`` of a source checkout, or ``None``."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "limiter_cost.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_tg_bench_limiter_cost", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:
        return None
    return module


def _best_ns(fn: Callable[[int], float], n: int, repeats: int) -> float:
    return min(fn(n) for _ in range(repeats))


def ours_ns(n: int = 100_000, repeats: int = 5) -> float:
    """ns per ``RateLimiter.decide`` with room in the window (local memory storage)."""
    from telethon_guard.clock import MonotonicClock
    from telethon_guard.limiter import RateLimiter
    from telethon_guard.storage import LimitSpec
    from telethon_guard.storage.memory import MemoryStorage

    def once(k: int) -> float:
        clock = MonotonicClock()
        limiter = RateLimiter(MemoryStorage(clock), clock)
        specs = [LimitSpec("acct:1/dc:2/method:messages.getHistory", ((10 * k, 1.0),))]
        decide = limiter.decide
        t = time.perf_counter_ns()
        for _ in range(k):
            decide(specs)
        return (time.perf_counter_ns() - t) / k

    return _best_ns(once, n, repeats)


def aiolimiter_ns(n: int = 100_000, repeats: int = 5) -> float:
    """ns per ``await AsyncLimiter.acquire()`` with capacity to spare."""
    from aiolimiter import AsyncLimiter

    async def run(k: int) -> float:
        limiter = AsyncLimiter(10 * k, 1.0)
        acquire = limiter.acquire
        t = time.perf_counter_ns()
        for _ in range(k):
            await acquire()
        return (time.perf_counter_ns() - t) / k

    def once(k: int) -> float:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(run(k))
        finally:
            loop.close()

    return _best_ns(once, n, repeats)


def measure(n: int, repeats: int) -> tuple[float, float | None, float | None, str]:
    """``(ours_ns, aiolimiter_ns or None, ours_async_ns or None, source)``, best of ``repeats``.

    Uses ``bench_guard_sync`` / ``bench_guard_async`` / ``bench_aiolimiter`` of
    ``benchmarks/limiter_cost.py`` (CPU time of the thread, incident limits 10/s AND 200/min)
    when the source checkout has it; else :func:`ours_ns` / :func:`aiolimiter_ns`.
    """
    module = _repo_benchmark()
    sync_fn: Any = getattr(module, "bench_guard_sync", None) if module else None
    async_fn: Any = getattr(module, "bench_guard_async", None) if module else None
    aio_fn: Any = getattr(module, "bench_aiolimiter", None) if module else None
    if sync_fn is None or aio_fn is None:
        ours = ours_ns(n, repeats)
        try:
            aio: float | None = aiolimiter_ns(n, repeats)
        except ImportError:
            aio = None
        return ours, aio, None, "telethon_guard.bench.limiter_cost"

    ours = min(float(sync_fn(n)) for _ in range(repeats))

    async def run_async() -> tuple[float | None, float | None]:
        g = min([float(await async_fn(n)) for _ in range(repeats)]) if async_fn else None
        try:
            a: float | None = min([float(await aio_fn(n)) for _ in range(repeats)])
        except ImportError:
            a = None
        return g, a

    loop = asyncio.new_event_loop()
    try:
        ours_async, aio = loop.run_until_complete(run_async())
    finally:
        loop.close()
    return ours, aio, ours_async, "benchmarks/limiter_cost.py"


def row(ours: float, aio: float | None, ours_async: float | None = None) -> Row:
    met = ours <= TARGET_NS
    note = ""
    if not met:
        note = (f"{ours:.0f} ns is {ours - TARGET_NS:.0f} ns over {TARGET_NS:g} ns "
                f"(rate limiter layer)")
        if aio:
            # The issue puts aiolimiter at about 800 ns on these machines: when aiolimiter
            # itself measures far slower, the machine is loaded; say what the ratio implies.
            note += (f"; aiolimiter took {aio:.0f} ns in the same run (nominal ~"
                     f"{AIOLIMITER_NOMINAL_NS:.0f} ns), ratio {ours / aio:.2f} = "
                     f"~{ours / aio * AIOLIMITER_NOMINAL_NS:.0f} ns at nominal speed")
    return Row(
        workload="limiter",
        label="limiter cost per decision",
        plain=f"aiolimiter {aio:.0f} ns" if aio is not None else "aiolimiter not installed",
        guarded=f"{ours:.0f} ns",
        result=f"{ours / aio:.2f} x aiolimiter" if aio else "-",
        target=f"<= {TARGET_NS:g} ns",
        met=met,
        figures={
            "limiter_ns_per_decision": round(ours, 1),
            "aiolimiter_ns_per_decision": round(aio, 1) if aio is not None else None,
            "limiter_ratio_vs_aiolimiter": round(ours / aio, 3) if aio else None,
            "limiter_async_ns_per_decision": (
                round(ours_async, 1) if ours_async is not None else None),
        },
        note=note,
        chart=Chart("ns / decision", "aiolimiter", aio, "guard", ours),
    )


async def run(ctx: WorkloadContext) -> Row:
    n, repeats = (50_000, 3) if ctx.settings.quick else (200_000, 7)
    ctx.progress(f"timing {n:,} decisions x {repeats} repeats")
    # CPU-bound and short; in a worker thread so aiolimiter can have its own event loop and
    # Ctrl-C (which cancels this task) is not delayed.
    ours, aio, ours_async, source = await asyncio.to_thread(measure, n, repeats)
    ctx.progress(f"measured by {source}")
    return row(ours, aio, ours_async)
