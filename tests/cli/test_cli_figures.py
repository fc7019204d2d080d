"""How the bench turns the server's ground truth into figures (pure functions, no server)."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from types import ModuleType

from telethon_guard.bench import goodput, overhead
from tests.cli.conftest import REPO


def _summary(account: int, ok: dict[str, list[float]],
             floods: dict[str, list[float]]) -> dict[str, object]:
    return {"ok_times": {str(account): ok}, "flood_times": {str(account): floods}}


def test_goodput_counts_only_accepted_calls_in_whole_windows() -> None:
    m1, m2 = goodput.LIMITS
    # m1: 20 per 2 s. Calls every 0.1 s from t=10 for 5 s: 50 calls, of which 40 fall in the
    # first two windows [10, 14). m2 has none at all.
    ok = {m1.method: [10 + i * 0.1 for i in range(50)]}
    floods = {m1.method: [11.0, 13.5], m2.method: [12.9]}
    out = goodput._outcome("known", 7, _summary(7, ok, floods), windows=2, mid=13.0,
                           errors=Counter())
    assert out.accepted == {m1.method: 20 * 2, m2.method: 0}
    assert out.capacity == {m1.method: m1.limit * 2, m2.method: m2.limit * 2}
    assert out.ratio == 40 / (2 * (m1.limit + m2.limit))
    assert out.total_flood_waits == 3
    assert out.flood_waits_late == {m1.method: 1, m2.method: 0}  # only 13.5 is after mid
    assert out.max_late_flood_waits == 1


def test_goodput_other_accounts_do_not_count() -> None:
    m1 = goodput.LIMITS[0]
    out = goodput._outcome("plain", 1, _summary(2, {m1.method: [1.0]}, {}), windows=1,
                           mid=0.5, errors=Counter())
    assert sum(out.accepted.values()) == 0 and out.total_flood_waits == 0


def test_known_row_judges_target_and_names_the_layer() -> None:
    m1, m2 = goodput.LIMITS
    good = goodput.ClientOutcome("known", {m1.method: 99, m2.method: 40},
                                 {m1.method: 100, m2.method: 40}, {m1.method: 0, m2.method: 0})
    bad = goodput.ClientOutcome("known", {m1.method: 80, m2.method: 40},
                                {m1.method: 100, m2.method: 40}, {m1.method: 3, m2.method: 0})
    plain = goodput.ClientOutcome("plain", {m1.method: 100, m2.method: 40},
                                  {m1.method: 100, m2.method: 40}, {m1.method: 9, m2.method: 0})
    ok_row = goodput.known_row(goodput.GoodputRun(plain, good, None, 5, 10.0))
    assert ok_row.met is True and ok_row.figures["flood_waits_known"] == 0
    bad_row = goodput.known_row(goodput.GoodputRun(plain, bad, None, 5, 10.0))
    assert bad_row.met is False
    assert "rate limiter layer" in bad_row.note and "3 FLOOD_WAITs" in bad_row.note


def test_overhead_ratio_of_rates() -> None:
    totals = {"plain": [1000.0, 2.0], "guard": [990.0, 2.2]}
    assert abs(overhead._rate_ratio(totals) - (990 / 2.2) / (1000 / 2.0)) < 1e-12
    assert overhead._rate_ratio({"plain": [0.0, 0.0], "guard": [1.0, 1.0]}) != 0  # nan


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_records_the_table_between_markers(tmp_path: Path) -> None:
    run_all = _run_all()
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\nintro\n\n{run_all.BEGIN}\nold table\n{run_all.END}\n\ntail\n")
    data = {
        "overhead_ratio": 0.99, "mode": "full", "interrupted": False,
        "machine": {"nproc": "2", "cpu": "Test CPU", "python": "3.11.7", "telethon": "1.45.0"},
        "rows": [{"workload": "overhead", "label": "overhead (32 tasks)", "plain": "1 calls/s",
                  "guarded": "1 calls/s", "result": "ratio 0.990", "target": ">= 0.98",
                  "met": True, "note": "", "complete": True}],
    }
    run_all.update_readme(run_all.readme_block(data, "python benchmarks/run_all.py"), readme)
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# B\n\nintro\n") and text.rstrip().endswith("tail")
    assert "| overhead (32 tasks) |" in text and "Test CPU" in text and "2 CPUs" in text
    assert '"overhead_ratio": 0.99' in text
