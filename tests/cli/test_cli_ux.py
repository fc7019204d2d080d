"""The command as people expect it: progress by default, a clean Ctrl-C at any moment, a
legend for the ``met`` column, and no import of the command line from the bench code."""

from __future__ import annotations

import ast
import io
import time
from pathlib import Path

import pytest

from telethon_guard.bench import progress as progress_mod
from telethon_guard.bench.progress import Progress
from telethon_guard.bench.results import MET_LEGEND, Report, Row, render_report
from tests.cli.conftest import REPO, interrupt, run_cli, start_cli


def test_progress_is_on_by_default_under_quick_without_a_terminal() -> None:
    proc = run_cli("bench", "--quick", "--only", "limiter", timeout=100)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert any("limiter: starting" in line for line in lines), proc.stderr
    assert any("limiter: done" in line for line in lines), proc.stderr
    assert "\r" not in proc.stderr  # no terminal: no status line, only whole lines
    assert "| limiter" in proc.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_ticks_on_a_terminal_and_is_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "TICK", 0.01)
    term = _Terminal()
    p = Progress(enabled=True, stream=term)
    try:
        p("storm", "plain: 1000 calls pending")
        deadline = time.monotonic() + 5.0
        while "storm: running" not in term.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        p.close()
    out = term.getvalue()
    assert "] storm: plain: 1000 calls pending\n" in out
    assert "storm: running" in out and "Ctrl-C" in out
    assert out.endswith("\r\033[K")  # the table printed next starts on a clean line
    p.close()  # idempotent


def test_no_status_line_when_not_a_terminal_or_disabled() -> None:
    plain = io.StringIO()
    p = Progress(enabled=True, stream=plain)
    p("overhead", "round 1/4")
    p.close()
    assert p.live is False and plain.getvalue().endswith("overhead: round 1/4\n")
    off = _Terminal()
    q = Progress(enabled=False, stream=off)
    q("overhead", "round 1/4")
    q.close()
    assert off.getvalue() == ""


def test_ctrl_c_while_importing_exits_130_without_traceback() -> None:
    # Importing telethon_guard (and Telethon) takes about a second. SIGINT goes when the
    # interpreter reports (PYTHONPROFILEIMPORTTIME, one stderr line per finished import) the
    # first Telethon module imported, so it lands in that import: no traceback, status 130.
    # (A fixed 0.3 s could land before Python's own start-up was done on a loaded machine:
    # "Fatal Python error: init_import_site", status 1.)
    proc = start_cli("bench", "--quick", module="telethon_guard_cli",
                     extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen, importing = "", False
    while time.monotonic() < deadline and not importing:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        importing = line.rsplit("|", 1)[-1].strip().startswith("telethon.")
    assert importing, seen[-2000:]
    returncode, stdout, stderr = interrupt(proc)
    stderr = seen + stderr
    assert returncode == 130, (returncode, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr + stdout


def test_met_column_is_explained_in_one_line() -> None:
    report = Report(mode="quick", machine={})
    report.add(Row("storm", "storm", "p99 80 ms", "p99 9 ms", "", "<= 5 ms", False, {},
                   note="missed by 4 ms"))
    text = render_report(report)
    assert MET_LEGEND in text.splitlines()
    assert "NO = " in MET_LEGEND and "\n" not in MET_LEGEND


def test_bench_code_never_imports_the_command_line() -> None:
    bench = REPO / "telethon_guard" / "bench"
    offenders: list[str] = []
    for path in sorted(bench.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "telethon_guard.cli" for n in names):
                offenders.append(f"{Path(path).name}:{node.lineno}")
    assert offenders == []
