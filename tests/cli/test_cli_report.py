"""The report pieces in-process: table, JSON keys, percentile, PNG."""

from __future__ import annotations

import json
from pathlib import Path

from telethon_guard.bench.plot import write_plot
from telethon_guard.bench.results import (
    Chart,
    Report,
    Row,
    format_table,
    percentile,
    render_report,
    write_json,
)


def _report() -> Report:
    r = Report(mode="quick", machine={"nproc": "2"})
    r.add(Row("overhead", "overhead", "100 calls/s", "99 calls/s", "ratio 0.99", ">= 0.98",
              True, {"overhead_ratio": 0.99}, chart=Chart("calls/s", "plain", 100, "guard", 99)))
    r.add(Row("storm", "storm", "p99 80 ms", "p99 9 ms", "", "<= 5 ms", False,
              {"storm_lag_p99_ms": 9.0, "storm_lag_p99_ms_plain": float("nan")},
              note="missed by 4 ms", chart=Chart("ms", "plain", None, "guard", 9.0)))
    return r


def test_table_has_one_line_per_row_and_notes() -> None:
    text = render_report(_report())
    lines = text.splitlines()
    assert lines[0].startswith("| workload")
    assert sum(1 for line in lines if line.startswith("| overhead")) == 1
    assert "| NO " in text and "| yes " in text
    assert "- storm: missed by 4 ms" in text


def test_format_table_aligns_columns() -> None:
    out = format_table(["a", "bb"], [["xxx", "y"], ["z", "wwww"]])
    widths = {len(line) for line in out.splitlines()}
    assert len(widths) == 1


def test_percentile_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) != percentile([], 50)  # nan


def test_json_keys_and_nan_as_null(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json(_report(), path)
    data = json.loads(path.read_text())
    assert data["overhead_ratio"] == 0.99
    assert data["storm_lag_p99_ms"] == 9.0
    assert data["storm_lag_p99_ms_plain"] is None
    assert data["mode"] == "quick" and data["interrupted"] is False
    assert [r["workload"] for r in data["rows"]] == ["overhead", "storm"]


def test_plot_writes_png(tmp_path: Path) -> None:
    path = tmp_path / "bench.png"
    write_plot(_report(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_empty_report(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    write_plot(Report(interrupted=True), path)
    assert path.stat().st_size > 0
