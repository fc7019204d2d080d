"""``telethon-guard serve``: Ctrl-C during its start-up (while Python imports Telethon, its first
second) or while it serves exits 130 with one line on stderr, never a traceback."""

from __future__ import annotations

import json
import time

from tests.cli.conftest import interrupt, run_cli, start_cli


def _lines(stderr: str) -> list[str]:
    """stderr without PYTHONPROFILEIMPORTTIME's lines."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("import time:")]


def test_ctrl_c_while_serve_imports_exits_130_with_one_line() -> None:
    # SIGINT when the interpreter reports (PYTHONPROFILEIMPORTTIME) the first Telethon module
    # imported: it lands during the imports (as in test_cli_ux's bench case).
    proc = start_cli("serve", "--dcs", "1", module="telethon_guard_cli",
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
    assert returncode == 130, (returncode, stdout, stderr)
    assert "Traceback" not in seen + stderr and "KeyboardInterrupt" not in seen + stderr
    assert _lines(seen + stderr) == ["telethon-guard: interrupted"], stderr
    assert stdout.strip() == ""


def test_ctrl_c_while_serving_exits_130_with_one_line() -> None:
    proc = start_cli("serve", "--dcs", "1", module="telethon_guard_cli")
    try:
        assert proc.stdout is not None
        doc = json.loads(proc.stdout.readline())  # the first line: DCs and sessions
        assert doc["dcs"] and doc["sessions"]
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    returncode, stdout, stderr = interrupt(proc)
    assert returncode == 130, (returncode, stdout, stderr)
    assert _lines(stderr) == ["telethon-guard serve: interrupted"], stderr
    assert json.loads(stdout.strip().splitlines()[-1])["internal_errors"] == []


def test_serve_bad_option_is_one_line_exit_2() -> None:
    proc = run_cli("serve", "--dcs", "0", timeout=30)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert _lines(proc.stderr) == [
        "telethon-guard serve: error: --dcs must be between 1 and 1000, got 0"]
