"""Smoke tests: ``telethon-guard bench`` and ``demo`` run end to end on the embedded server.

They check that the commands finish, print their table and write every JSON key, not how fast
anything is (the figures are benchmarks, reported in benchmarks/README.md, not asserted).
Sizes are cut down with the commands' own options to keep CI short.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from telethon_guard.bench.results import HEADLINE_KEYS
from tests.cli.conftest import interrupt, run_cli, start_cli

# The bench and demo subprocesses load the CPU: under pytest-xdist they share a worker (never
# overlap) with the loop-latency tests (group "loop_timing").
pytestmark = pytest.mark.xdist_group("loop_timing")


def test_bench_quick_writes_every_key(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    proc = run_cli("bench", "--quick", "--duration", "0.5", "--tasks", "8",
                   "--storm-clients", "10", "--storm-calls", "100",
                   "--json", str(out), "--plot", str(png), "--no-progress", timeout=110)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1), (proc.returncode, proc.stderr)  # 1: a workload crashed
    data = json.loads(out.read_text())
    for row in data["rows"]:
        assert "failed to run" not in row["note"], row
    assert proc.returncode == 0
    for key in HEADLINE_KEYS:
        value = data[key]
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
    assert data["goodput_known_ratio"] <= 1.0 and data["goodput_unknown_ratio"] <= 1.0
    assert data["storm_guarded_calls_ok"] + data["storm_guarded_calls_failed"] == 100
    assert data["storm_plain_calls_ok"] + data["storm_plain_calls_failed"] == 100
    assert data["machine"]["nproc"] and data["machine"]["telethon"]
    assert [r["workload"] for r in data["rows"]] == [
        "overhead", "goodput-known", "goodput-unknown", "storm", "limiter"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 5  # header + one row per workload


def test_demo_prints_one_table(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    png = tmp_path / "demo.png"
    proc = run_cli("demo", "--seconds", "3", "--json", str(out), "--plot", str(png),
                   timeout=110)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "why calls failed" in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    for label in ("calls succeeded", "calls failed", "never retrieved", "reconnect attempts",
                  "lag p50", "lag p99", "lag max", "wall time"):
        assert label in proc.stdout, label
    data = json.loads(out.read_text())
    runs = data["runs"]
    assert set(runs) == {"plain Telethon", "telethon-guard"}
    for run in runs.values():
        assert run["complete"] is True
        total = run["calls_ok"] + sum(run["calls_failed"].values())
        assert total >= 50  # 20 calls/s for 3 s, every one accounted for
        assert run["lag_p99_ms"] is not None
        # every failed call has a reason, grouped per (error, reason)
        assert sum(g["calls"] for g in run["why_failed"]) == sum(run["calls_failed"].values())


def test_ctrl_c_prints_what_was_measured(tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    proc = start_cli("bench", "--only", "overhead,limiter", "--duration", "20", "--tasks", "4",
                     "--progress", "--json", str(out))
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        seen = ""
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += line
            if "round 1/" in line or not line:
                break
        assert "round 1/" in seen, seen
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    returncode, stdout, stderr = interrupt(proc)
    assert returncode == 130, (returncode, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert "| overhead" in stdout and "incomplete" in stdout, (stdout, stderr)
    assert "no conclusion is drawn" in stdout and "below 0.98" not in stdout, stdout
    assert "interrupted" in stdout
    data = json.loads(out.read_text())
    assert data["interrupted"] is True
    assert data["overhead_plain_calls_per_s"] > 0
    assert data["limiter_ns_per_decision"] is None  # never reached
