"""The demo's per-outcome reasons and its plot data, in-process (pure logic, no server)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from telethon import errors as tl_errors
from telethon.tl import functions

from telethon_guard.bench.common import BenchTimeout
from telethon_guard.bench.demo import DemoOutcome, Timeline, late_failures, render
from telethon_guard.bench.demo_plot import rates, waiting, write_demo_plot
from telethon_guard.bench.demo_why import WhyTable, explain, span
from telethon_guard.errors import (
    CircuitOpenError,
    DeadlineExceeded,
    FloodWaitBlocked,
    batch_error,
)

METHOD = "messages.getHistory"


def _blocked(seconds: float, from_server: bool = False) -> FloodWaitBlocked:
    return FloodWaitBlocked(None, seconds, method=METHOD, scope=f"acct:1/method:{METHOD}",
                            from_server=from_server)


def test_flood_blocked_longer_than_the_deadline_left_says_so() -> None:
    why = explain(_blocked(5.0), deadline=14.0, after=11.0, max_flood_wait=60.0, phase="wave")
    assert why.error == "FloodWaitBlocked" and why.phase == "wave"
    assert "> the deadline left" in why.reason and "refused before sending" in why.reason
    assert dict(why.figures) == {"wait": 5.0, "left": 3.0}


def test_flood_blocked_within_the_deadline_names_the_network_budget_or_max_flood_wait(
        ) -> None:
    # A learned pace's wait is bounded by the deadline (issue 13), not by Telegram's X: a
    # refusal with the wait inside the deadline left is the attempt's network budget.
    pace = explain(_blocked(2.1), deadline=14.0, after=11.5, max_flood_wait=60.0)
    assert "network budget > the deadline left" in pace.reason
    assert dict(pace.figures) == {"wait": 2.1, "left": 2.5}
    over = explain(_blocked(30.0, from_server=True), deadline=None, after=0.2,
                   max_flood_wait=10.0)
    assert "> max_flood_wait 10 s" in over.reason
    assert over.reason.startswith("Telegram answered FLOOD_WAIT")


def test_batches_name_their_items() -> None:
    reqs = [functions.help.GetNearestDcRequest(), functions.help.GetConfigRequest()]
    floods = batch_error([_blocked(2.0), None], [None, object()], reqs)
    why = explain(floods, deadline=14.0, after=0.5)
    assert why.error == "FloodWaitMultiError"
    assert "1 FloodWaitBlocked" in why.reason and "ok 1" in why.reason
    assert "catchable as FloodWaitError" in why.reason
    mixed = batch_error([_blocked(2.0), tl_errors.BadRequestError(None, "X")], [None, None],
                        reqs)
    assert explain(mixed, deadline=14.0, after=0.5).error == "MultiError"


def test_other_errors_have_a_reason() -> None:
    assert "OPEN" in explain(CircuitOpenError("acct:1/dc:1", 3.0), deadline=14.0,
                             after=0.0).reason
    assert "14 s ran out" in explain(DeadlineExceeded(METHOD, 13.99997), deadline=14.0,
                                     after=14.0).reason
    early = explain(DeadlineExceeded(METHOD, 14.0), deadline=14.0, after=2.0).reason
    assert "raised before the deadline ran out" in early
    hung = explain(BenchTimeout(15.0), deadline=None, after=15.0)
    assert hung.error == "no answer" and "would have hung" in hung.reason
    gone = explain(ConnectionError("Cannot send requests while disconnected"), deadline=None,
                   after=0.0)
    assert "does not reconnect" in gone.reason


def test_why_table_groups_counts_and_ranges() -> None:
    table = WhyTable()
    for wait, after, phase in ((2.0, 0.1, "storm"), (3.0, 0.3, "storm"), (2.5, 0.2, "wave")):
        table.add(explain(_blocked(wait), deadline=14.0, after=after, max_flood_wait=60.0,
                          phase=phase))
    table.add(explain(_blocked(20.0), deadline=14.0, after=0.0, phase="after"))
    lines = table.lines()
    assert len(lines) == 2
    assert lines[0].startswith("FloodWaitBlocked 3: ")  # most frequent first
    assert "2.0-3.0 s (median 2.5)" in lines[0] and "storm 2, wave 1" in lines[0]
    assert lines[1].startswith("FloodWaitBlocked 1: ") and "deadline left" in lines[1]
    assert [g["calls"] for g in table.to_json()] == [3, 1]
    assert span([]) == "-" and span([1.0]) == "1.0 s"


def test_timeline_phases() -> None:
    tl = Timeline.for_seconds(20.0)  # storm 1-4 s, wave 5-10 s
    assert [tl.phase(t) for t in (0.5, 1.0, 4.5, 5.0, 9.9, 10.0)] == [
        "calm", "storm", "calm", "wave", "wave", "after"]


def _outcome(name: str, calls: list[tuple[float, float, bool]]) -> DemoOutcome:
    o = DemoOutcome(name, complete=True, wall=4.0)
    o.timeline = calls
    o.ok = sum(1 for c in calls if c[2])
    o.failed = Counter({"FloodWaitBlocked": len(calls) - o.ok})
    return o


def test_rates_and_waiting_count_each_call_once() -> None:
    calls = [(0.0, 0.2, True), (0.1, 1.2, False), (0.2, 1.3, True), (3.0, 9.0, True)]
    starts, ok, failed = rates(calls, until=2.0, bin_s=0.5)
    assert starts == [0.0, 0.5, 1.0, 1.5]
    assert ok == [2.0, 0.0, 2.0, 2.0]  # 1 call per 0.5 s bin = 2/s; the late one in the last
    assert failed == [0.0, 0.0, 2.0, 0.0]
    assert waiting(calls, [0.15, 1.0, 1.25, 5.0]) == [2, 2, 1, 1]


def test_demo_plot_and_table(tmp_path: Path) -> None:
    tl = Timeline.for_seconds(3.0)
    plain = _outcome("plain Telethon", [(0.1 * k, 0.1 * k + 0.05, k < 5) for k in range(30)])
    guard = _outcome("telethon-guard", [(0.1 * k, 0.1 * k + 1.0, True) for k in range(30)])
    png = tmp_path / "demo.png"
    write_demo_plot([plain, guard], tl, png, offered=20.0)
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = render([plain, guard], tl)
    assert "first success after the storm" in text and "why calls failed" in text


def test_late_failures_are_those_in_the_last_tenth_of_the_deadline() -> None:
    """The demo's "failed late" row (issue 13 item 3): a failure in the last 10 % of the
    call's deadline waited nearly all of it; one earlier failed when the guard knew."""
    tl = Timeline.for_seconds(3.0)
    o = _outcome("telethon-guard", [(0.0, 0.1, False), (0.0, 1.0, True)])
    o.bound = 14.0
    o.failed_after = [0.0, 3.5, 12.59, 12.6, 14.0]
    assert late_failures(o) == 2
    row = next(line for line in render([o], tl).splitlines() if "failed late" in line)
    assert "2 late, 3 within 0.0-12.6 s (median 3.5)" in row
    o.failed_after = []
    assert late_failures(o) == 0
