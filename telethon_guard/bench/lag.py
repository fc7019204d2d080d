"""Health-tick lag in milliseconds, measured by :class:`telethon_guard.loop.LoopLagMonitor`.

A service's health endpoint runs on the same loop as its Telegram client; when the loop is
busy (a reconnect storm, a tight retry loop) a 10 ms ticker wakes up late. The lag of one tick
is ``actual wake-up - (start + 10 ms)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from telethon_guard.loop import LoopLagMonitor

TICK_SECONDS = 0.010


@dataclass(frozen=True)
class LagStats:
    """Tick-lag summary in milliseconds; ``ticks`` is the number of ticks measured."""

    ticks: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def health_ticker() -> LoopLagMonitor:
    """A 10 ms ticker (not started)."""
    return LoopLagMonitor(interval=TICK_SECONDS)


def lag_stats(monitor: LoopLagMonitor) -> LagStats:
    """``monitor``'s samples as :class:`LagStats` (milliseconds)."""
    s = monitor.stats()
    return LagStats(
        ticks=int(s.get("samples", 0)),
        p50_ms=s["p50"] * 1000.0,
        p99_ms=s["p99"] * 1000.0,
        max_ms=s["max"] * 1000.0,
    )
