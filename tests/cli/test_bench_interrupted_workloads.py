"""Ctrl-C halfway through a bench workload leaves its row in the table, marked incomplete, with
the figures measured so far (never dropped): sporadic (the calls answered so far), the goodput
pair (the whole windows measured so far, from the server's log; both rows of the shared run),
and any other workload without partial figures (a row saying so). Real server process and
clients for the first two; the runner cancelled as Ctrl-C cancels it."""

from __future__ import annotations

import asyncio
import io

import pytest

from telethon_guard.bench import runner
from telethon_guard.bench.context import BenchSettings, WorkloadContext
from telethon_guard.bench.progress import Progress
from telethon_guard.bench.results import (
    INCOMPLETE_EMPTY_NOTE,
    INCOMPLETE_NOTE,
    Report,
    Row,
    render_report,
)


async def _interrupt(settings: BenchSettings, ready: str, after: float) -> Report:
    """Run the workloads of ``settings``; cancel ``after`` seconds once a progress line
    containing ``ready`` was printed; the report."""
    stream = io.StringIO()
    progress = Progress(enabled=True, stream=stream, live=False)
    report = Report(mode="quick")
    task = asyncio.ensure_future(runner.run_workloads(settings, report, progress))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while ready not in stream.getvalue():
        assert loop.time() < deadline and not task.done(), stream.getvalue()
        await asyncio.sleep(0.05)
    await asyncio.sleep(after)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    report.interrupted = True
    return report


async def test_a_workload_without_partial_figures_still_has_its_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def quiet(ctx: WorkloadContext) -> Row:
        ctx.progress("measuring")
        await asyncio.sleep(60)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(runner, "registry", lambda: {"limiter": quiet})
    report = await _interrupt(BenchSettings(quick=True), "measuring", 0.0)
    (row,) = report.rows
    assert row.workload == "limiter" and not row.complete and row.met is None
    assert row.note == INCOMPLETE_EMPTY_NOTE
    text = render_report(report)
    assert "| limiter" in text and "| incomplete |" in text


async def test_sporadic_interrupted_halfway_shows_the_calls_answered_so_far() -> None:
    report = await _interrupt(BenchSettings(quick=True, only=["sporadic"]), "4 clients", 3.0)
    (row,) = report.rows
    assert row.workload == "sporadic" and not row.complete and row.met is None
    assert row.note == INCOMPLETE_NOTE
    assert int(row.figures["sporadic_calls_guard_no_floods"] or 0) > 0, row
    assert "calls in" in row.guarded


async def test_goodput_interrupted_halfway_keeps_both_rows_with_partial_figures() -> None:
    report = await _interrupt(BenchSettings(quick=True, only=["goodput-known", "goodput-unknown"]),
                              "calling for", 4.6)
    assert [r.workload for r in report.rows] == ["goodput-known", "goodput-unknown"]
    for row in report.rows:
        assert not row.complete and row.met is None and row.note == INCOMPLETE_NOTE
        assert "of limit" in row.guarded
    assert float(report.rows[0].figures["goodput_known_ratio"] or 0) > 0.5
    assert report.rows[0].figures["goodput_seconds"] == 4.0  # two whole 2 s windows
    text = render_report(report)
    assert text.count("| incomplete |") == 2
