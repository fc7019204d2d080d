"""Event-loop lag: :class:`LoopLagMonitor` measures how late a ``sleep(interval)`` wakes up.

A loop that is blocked (CPU-bound work, a synchronous call) delays every coroutine on it, the
guard's timers and Telethon's pings included; the lag is the first sign of it. The metrics
exporters publish the monitor's recent maximum (``telethon_guard_loop_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Iterable

log = logging.getLogger("telethon_guard")


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


class LoopLagMonitor:
    """Measures event-loop lag: how late a ``sleep(interval)`` wakes up (seconds, monotonic).

    ``interval`` is the ticker period in seconds (default 10 ms); ``window`` bounds how many
    samples are kept (memory is O(window)). Use ``start()`` / ``await stop()`` or
    ``async with LoopLagMonitor() as mon:``; :meth:`stats` returns ``p50``, ``p99``, ``max``
    (seconds) and ``samples``. Raises ``TypeError`` for an ``interval`` that is not a number
    or a ``window`` that is not an ``int``, ``ValueError`` for a non-positive or non-finite
    ``interval`` or a non-positive ``window``.
    """

    def __init__(self, interval: float = 0.01, window: int = 100_000) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"LoopLagMonitor: interval must be a number of seconds, e.g. 0.01; "
                            f"got {type(interval).__name__} {interval!r}")
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"LoopLagMonitor: interval must be a finite number of seconds "
                             f"> 0, got {interval!r}")
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(f"LoopLagMonitor: window must be an integer number of samples, "
                            f"got {type(window).__name__} {window!r}")
        if window <= 0:
            raise ValueError(f"LoopLagMonitor: window must be > 0 samples, got {window!r}")
        self.interval = interval
        self._samples: deque[float] = deque(maxlen=window)
        self._task: asyncio.Task[None] | None = None
        self._max = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> LoopLagMonitor:
        """Start ticking on the running loop (idempotent)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> dict[str, float]:
        """Stop ticking and return :meth:`stats`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(outcome, Exception):  # the ticker died before it was stopped
                log.error("loop-lag monitor failed: %r", outcome, exc_info=outcome)
        return self.stats()

    def reset(self) -> None:
        self._samples.clear()
        self._max = 0.0

    async def _run(self) -> None:
        interval = self.interval
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            lag = max(0.0, time.monotonic() - before - interval)
            self._samples.append(lag)
            if lag > self._max:
                self._max = lag

    @property
    def samples(self) -> Iterable[float]:
        """Every kept sample, oldest first (seconds)."""
        return tuple(self._samples)

    def recent_max(self, count: int) -> float:
        """The largest of the last ``count`` samples, seconds (``0.0`` without samples);
        O(count), without copying the window."""
        return max(itertools.islice(reversed(self._samples), count), default=0.0)

    def stats(self) -> dict[str, float]:
        """``{"p50", "p99", "max"}`` lag in seconds and ``"samples"`` (count)."""
        values = sorted(self._samples)
        return {
            "p50": _percentile(values, 0.50),
            "p99": _percentile(values, 0.99),
            "max": self._max,
            "samples": float(len(values)),
        }

    async def __aenter__(self) -> LoopLagMonitor:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


__all__ = ["LoopLagMonitor"]
