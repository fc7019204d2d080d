"""Limiter cost: CPU time of one rate-limiter decision that does not wait.

telethon-guard's limiter (:meth:`telethon_guard.limiter.RateLimiter.decide`, a synchronous
reserve-and-commit on local storage) beside aiolimiter's ``await AsyncLimiter.acquire()`` with
capacity to spare, on the same machine in the same run. Each figure is the best of several
repeats (nanoseconds per decision), the usual way to time a micro-operation on a shared
machine. The measurement itself lives in ``benchmarks/limiter_cost.py`` (guard core); when that
file is not available (an installed wheel) an equivalent measurement here is used.
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

from telethon_guard.bench.results import Chart, Row
from telethon_guard.bench.runner import WorkloadContext

TARGET_NS = 500.0


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


def measure(n: int, repeats: int) -> tuple[float, float | None, str]:
    """``(ours_ns, aiolimiter_ns or None, source)``."""
    module = _repo_benchmark()
    ours_fn: Any = getattr(module, "ours_ns", None) if module else None
    aio_fn: Any = getattr(module, "aiolimiter_ns", None) if module else None
    source = "benchmarks/limiter_cost.py" if ours_fn else "telethon_guard.bench.limiter_cost"
    ours = float((ours_fn or ours_ns)(n, repeats))
    try:
        aio: float | None = float((aio_fn or aiolimiter_ns)(n, repeats))
    except ImportError:
        aio = None
    return ours, aio, source


def row(ours: float, aio: float | None, source: str) -> Row:
    met = ours <= TARGET_NS
    note = ""
    if not met:
        note = (f"{ours:.0f} ns is {ours - TARGET_NS:.0f} ns over {TARGET_NS:g} ns "
                f"(rate limiter layer)")
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
        },
        note=note,
        chart=Chart("ns / decision", "aiolimiter", aio, "guard", ours),
    )


async def run(ctx: WorkloadContext) -> Row:
    n, repeats = (50_000, 3) if ctx.settings.quick else (200_000, 7)
    ctx.progress(f"timing {n:,} decisions x {repeats} repeats")
    # CPU-bound and short; in a worker thread so aiolimiter can have its own event loop and
    # Ctrl-C (which cancels this task) is not delayed.
    ours, aio, source = await asyncio.to_thread(measure, n, repeats)
    ctx.progress(f"measured by {source}")
    return row(ours, aio, source)
