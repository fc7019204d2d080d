"""The bench storm row's ``met``: a quiet event loop is not enough, every guarded call must be
answered (a new-user trial: 260/1000 calls ok, "no answer in 17 s x740", yet ``met: yes``)."""

from __future__ import annotations

from collections import Counter

from telethon_guard.bench.lag import LagStats
from telethon_guard.bench.storm import StormOutcome, _row

IDLE = LagStats(ticks=100, p50_ms=0.2, p99_ms=0.5, max_ms=1.0)
QUIET = LagStats(ticks=100, p50_ms=0.3, p99_ms=1.2, max_ms=3.0)
PLAIN = StormOutcome("plain", QUIET, ok=0, failed=Counter(InvalidBufferError=1000))


def test_storm_row_is_not_met_when_guarded_calls_went_unanswered() -> None:
    guard = StormOutcome("guard", QUIET, ok=260, failed=Counter({"no answer in 17 s": 740}))
    row = _row(PLAIN, guard, 50, 1000, IDLE, complete=True)
    assert row.met is False
    assert "260/1000" in row.note and "every call ok" in row.target


def test_storm_row_is_met_with_a_quiet_loop_and_every_call_ok() -> None:
    guard = StormOutcome("guard", QUIET, ok=1000)
    assert _row(PLAIN, guard, 50, 1000, IDLE, complete=True).met is True


def test_storm_row_is_not_met_with_a_late_loop() -> None:
    late = LagStats(ticks=100, p50_ms=1.0, p99_ms=9.0, max_ms=20.0)
    assert _row(PLAIN, StormOutcome("guard", late, ok=1000), 50, 1000, IDLE,
                complete=True).met is False


def test_storm_row_without_the_guarded_phase_is_not_judged() -> None:
    assert _row(PLAIN, None, 50, 1000, IDLE, complete=False).met is None
