"""Bad input to ``telethon-guard``: one line on stderr, non-zero exit, never a traceback.

All of these fail before any workload runs, so they are fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import run_cli


def _assert_one_line_error(proc: object, *needles: str) -> None:
    import subprocess

    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("telethon-guard"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["bench", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["frobnicate"], ["invalid choice"]),
        (["bench", "--tasks", "-3"], ["--tasks", "negative"]),
        (["bench", "--tasks", "0"], ["--tasks"]),
        (["bench", "--storm-clients", "-1"], ["--storm-clients"]),
        (["bench", "--storm-calls", "x"], ["--storm-calls", "whole number"]),
        (["bench", "--duration", "-1"], ["--duration", "positive"]),
        (["bench", "--duration", "0"], ["--duration"]),
        (["bench", "--duration", "nan"], ["--duration"]),
        (["bench", "--only", "overhead,nosuch"], ["unknown workload 'nosuch'"]),
        (["bench", "--only", ","], ["--only"]),
        (["demo", "--seconds", "-5"], ["--seconds", "positive"]),
        (["demo", "--nope"], ["unrecognized arguments"]),
        # Huge counts are refused before anything is allocated (they ate GBs, past Ctrl-C).
        (["bench", "--tasks", "99999999999"], ["--tasks", "at most 10,000"]),
        (["bench", "--storm-calls", "1000000000"], ["--storm-calls", "at most 20,000"]),
        (["bench", "--storm-clients", "1001"], ["--storm-clients", "at most 1,000"]),
        # serve's options are the test server's own parser: one line too, not the usage text.
        (["serve", "--seed", "abc"], ["--seed", "invalid int value: 'abc'"]),
        (["serve", "--dcs", "x"], ["--dcs"]),
    ],
)
def test_bad_arguments(args: list[str], needles: list[str]) -> None:
    _assert_one_line_error(run_cli(*args, timeout=30), *needles)


def test_json_path_in_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "out.json"
    proc = run_cli("bench", "--only", "limiter", "--json", str(target), timeout=30)
    _assert_one_line_error(proc, "--json", "does not exist")
    assert not target.exists()


def test_json_path_is_a_directory(tmp_path: Path) -> None:
    _assert_one_line_error(
        run_cli("bench", "--only", "limiter", "--json", str(tmp_path), timeout=30),
        "--json", "is a directory",
    )


def test_unwritable_plot_path_is_checked_before_running(tmp_path: Path) -> None:
    # /proc refuses new files even for root: the check must fail before any workload runs.
    proc = run_cli("bench", "--only", "limiter", "--plot", "/proc/telethon-guard.png",
                   timeout=30)
    _assert_one_line_error(proc, "--plot", "not writable")


def test_demo_json_unwritable() -> None:
    _assert_one_line_error(
        run_cli("demo", "--json", "/proc/telethon-guard.json", timeout=30), "--json"
    )


def test_demo_plot_unwritable_is_checked_before_running() -> None:
    _assert_one_line_error(
        run_cli("demo", "--plot", "/proc/telethon-guard.png", timeout=30), "--plot",
        "not writable",
    )


def test_no_command_prints_help_and_fails() -> None:
    proc = run_cli(timeout=30)
    assert proc.returncode == 2
    assert "bench" in proc.stderr and "demo" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_explains_every_workload() -> None:
    proc = run_cli("bench", "--help", timeout=30)
    assert proc.returncode == 0, proc.stderr
    for name in ("overhead", "goodput-known", "goodput-unknown", "storm", "limiter"):
        assert f"\n  {name}\n" in proc.stdout, name
    for opt in ("--quick", "--json", "--plot", "--only"):
        assert opt in proc.stdout
