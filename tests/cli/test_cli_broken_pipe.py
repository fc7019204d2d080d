"""Output piped into a reader that goes away (``telethon-guard bench | head -1``): the command
ends quietly with status 141 (128 + SIGPIPE), no traceback, like other command-line tools.

The reader's end of the pipe is closed right after the process starts (before its imports
finish, about a second), so its first write always meets a broken pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli.conftest import REPO

EXIT_BROKEN_PIPE = 141


def _run_with_stdout_gone(module: str, *args: str, timeout: float = 90.0) -> tuple[int, str]:
    """Run ``python -m MODULE ARGS`` with stdout a pipe whose reader has exited; its exit
    status and stderr."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        assert proc.stdout is not None
        proc.stdout.close()  # the reader is gone, like ``head -1`` after its line
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, stderr


@pytest.mark.parametrize("module, args", [
    ("telethon_guard.cli", ("bench", "--quick", "--only", "limiter", "--no-progress")),
    ("telethon_guard_cli", ("bench", "--quick", "--only", "limiter", "--no-progress")),
    ("telethon_guard.cli", ("serve",)),
    ("telethon_guard.testing", ("serve",)),
])
def test_stdout_reader_gone_exits_141_quietly(module: str, args: tuple[str, ...]) -> None:
    status, stderr = _run_with_stdout_gone(module, *args)
    assert "Traceback" not in stderr, stderr
    assert "BrokenPipeError" not in stderr, stderr
    assert status == EXIT_BROKEN_PIPE, stderr


def test_stderr_reader_gone_during_demo_progress_exits_141() -> None:
    """``demo 2>&1 | head -3``: the progress lines on stderr meet the broken pipe first."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "telethon_guard.cli", "demo", "--quick"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
        proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == EXIT_BROKEN_PIPE
