"""The demo states no conclusion it has not measured: a run shorter than the storm does not say
the first success after it came "never", and a column cut short by Ctrl-C shows what it
measured as partial (counts "so far", the calls still waiting) instead of "never", "none" or a
count taken only at the end."""

from __future__ import annotations

import asyncio
from collections import Counter

from telethon_guard.bench.common import guarded_class
from telethon_guard.bench.demo import DemoOutcome, Timeline, render, run_service
from telethon_guard.bench.progress import Progress


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {name}"))


def test_a_run_shorter_than_the_storm_does_not_say_never() -> None:
    tl = Timeline.for_seconds(0.5)  # storm at 1 s: the worker stops before it
    o = DemoOutcome("telethon-guard", complete=True, wall=0.7)
    o.timeline = [(0.05 * k, 0.05 * k + 0.2, True) for k in range(10)]
    o.ok = 10
    o.reconnects = o.refused = 0
    text = render([o], tl)
    row = _row(text, "first success after the storm")
    assert "never" not in row and "before the storm ended at 1.5 s" in row
    assert "before the storm starts: this run replays no incident" in text


def test_a_complete_run_with_no_success_after_the_storm_says_never() -> None:
    tl = Timeline.for_seconds(8.0)
    o = DemoOutcome("plain Telethon", complete=True, wall=8.0)
    o.timeline = [(0.1, 0.3, True), (3.0, 3.0, False)]
    o.ok, o.failed = 1, Counter({"ConnectionError": 1})
    o.reconnects = o.refused = 0
    assert "| never" in _row(render([o], tl), "first success after the storm")


def test_an_interrupted_column_draws_no_conclusion() -> None:
    tl = Timeline.for_seconds(8.0)
    done = DemoOutcome("plain Telethon", complete=True, wall=8.0)
    done.reconnects = done.refused = 0
    cut = DemoOutcome("telethon-guard", complete=False, wall=4.2, pending=41)
    cut.timeline = [(0.05 * k, 0.05 * k + 0.2, True) for k in range(16)]  # all before the storm
    cut.ok = 16
    text = render([done, cut], tl)
    assert "41 still waiting at Ctrl-C" in _row(text, "calls succeeded")
    assert "0 so far" in _row(text, "calls failed")
    assert "0 so far" in _row(text, "failed late")
    plain_cell, cut_cell = _row(text, "first success after the storm").split("|")[2:4]
    assert "never" in plain_cell  # the finished column keeps its conclusions
    assert "never" not in cut_cell and "interrupted before one" in cut_cell
    assert "counted at the end" in _row(text, '"never retrieved"')
    assert "not read" in _row(text, "reconnect attempts")
    assert "4.2 s (interrupted)" in _row(text, "wall time")
    assert "telethon-guard (interrupted: only the calls that failed before Ctrl-C; 41 were " \
           "still waiting): none so far" in text
    assert "plain Telethon: none" in text  # the finished column keeps its conclusions


async def test_a_cancelled_run_counts_the_calls_still_waiting() -> None:
    """A real run (server process, guarded client) cancelled during the storm, as Ctrl-C
    cancels it: the outcome is incomplete and counts the calls that had no answer yet."""
    tl = Timeline.for_seconds(8.0)
    out = DemoOutcome("telethon-guard")
    task = asyncio.ensure_future(
        run_service("telethon-guard", guarded_class(), tl, Progress(enabled=False), out))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not out.ok:  # wait until the service is calling
        assert loop.time() < deadline and not task.done()
        await asyncio.sleep(0.05)
    await asyncio.sleep(tl.storm_at + 0.8)  # into the storm: calls are waiting
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not out.complete
    assert out.ok > 0 and out.pending > 0, (out.ok, out.pending)
    text = render([out], tl)
    assert "still waiting at Ctrl-C" in _row(text, "calls succeeded")
    assert "never" not in _row(text, "first success after the storm")
