"""A workload interrupted by Ctrl-C leaves a row that says it is incomplete and judges nothing.

Before the fix, Ctrl-C during ``bench --quick``'s overhead rounds printed the partial row's
verdict ("overhead ratio 0.479 is 0.501 below 0.98 ... costs 83.4 us more per call").
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from telethon_guard.bench import runner
from telethon_guard.bench.context import BenchSettings, WorkloadContext
from telethon_guard.bench.overhead import _row
from telethon_guard.bench.progress import Progress
from telethon_guard.bench.results import INCOMPLETE_NOTE, Report, Row, render_report


async def test_cancelled_workload_row_is_incomplete_and_draws_no_conclusion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = asyncio.Event()

    async def slow_overhead(ctx: WorkloadContext) -> Row:
        # a partial row whose figures, taken as final, would be a miss (ratio ~0.48)
        ctx.partial = _row((10_000, 1.0), (4_790, 1.0), 4, Counter(), complete=False)
        assert ctx.partial.met is False and "below" in ctx.partial.note  # the misleading verdict
        started.set()
        await asyncio.sleep(60)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(runner, "registry", lambda: {"overhead": slow_overhead})
    report = Report(mode="quick")
    task = asyncio.ensure_future(
        runner.run_workloads(BenchSettings(quick=True), report, Progress(enabled=False)))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)

    (row,) = report.rows
    assert row.complete is False and row.met is None
    assert row.note == INCOMPLETE_NOTE
    report.interrupted = True
    text = render_report(report)
    assert "| incomplete |" in text
    assert f"- overhead: {INCOMPLETE_NOTE}" in text
    for verdict in ("below 0.98", "more per call", "| NO ", "| yes "):
        assert verdict not in text, (verdict, text)
    assert report.to_json()["rows"][0]["met"] is None
