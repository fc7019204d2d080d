"""Helpers for running the ``telethon-guard`` command in a subprocess (bounded by timeouts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m telethon_guard.cli ARGS`` and capture its output (text)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "telethon_guard.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def start_cli(*args: str, module: str = "telethon_guard.cli",
              extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python -m MODULE ARGS`` with its output piped (text), ``extra_env`` added to
    the environment; stop it with :func:`interrupt`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )


def interrupt(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str, str]:
    """Ctrl-C (SIGINT) ``proc``; wait at most ``timeout`` seconds for it to end (killed
    otherwise, then ``subprocess.TimeoutExpired``); its exit status, stdout and stderr."""
    try:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, stdout, stderr


@pytest.fixture
def cli() -> object:
    return run_cli
