"""``python -m examples.fastapi_service`` stopped with Ctrl-C ends with one line and status 130,
like the ``telethon-guard`` command, not a 30-line ``KeyboardInterrupt`` traceback (a trial
found uvicorn re-raising the signal once its shutdown is done, which ``asyncio.run`` turned
into a cancel of ``main`` mid-cleanup and a ``KeyboardInterrupt`` out of the program)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_BOUND = 90.0  # seconds for imports, the test server and uvicorn on a shared machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1.0):
            return True
    except OSError:
        return False


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.fastapi_service", "--port", str(port),
         "--cache", str(tmp_path / "cache.sqlite3")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_BOUND
        while not _up(port):
            assert proc.poll() is None, proc.communicate(timeout=10)
            assert time.monotonic() < deadline, "the service did not answer /health"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in stderr, stderr
    assert stderr.rstrip().splitlines()[-1] == "python -m examples.fastapi_service: interrupted"
    assert proc.returncode == 130, stderr
