"""``python -m telethon_guard.testing serve``: ordinary mistakes give one line on stderr and exit
2 (no traceback); Ctrl-C exits 130 (also during start-up), SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

T = 30.0  # a busy 2-core machine may take a while to import Telethon


async def run(*argv: str, code: str | None = None) -> tuple[int, str, str]:
    cmd = [sys.executable, "-c", code, *argv] if code is not None else [
        sys.executable, "-m", "telethon_guard.testing", *argv]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), T)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def assert_usage_error(rc: int, out: str, err: str, *fragments: str) -> None:
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and out == "", (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


async def test_port_in_use(busy_port: int) -> None:
    rc, out, err = await run("serve", "--dcs", "1", "--port", str(busy_port))
    assert_usage_error(rc, out, err, "cannot listen", str(busy_port), "in use")


async def test_second_dc_port_in_use_is_an_error_too(busy_port: int) -> None:
    rc, out, err = await run("serve", "--dcs", "2", "--port", str(busy_port - 1))
    assert_usage_error(rc, out, err, "cannot listen", "in use")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--port", "65535", "--dcs", "2"], "65536"),
    (["--dcs", "0"], "--dcs"),
    (["--sessions", "-1"], "--sessions"),
    (["--host", ""], "--host"),
    (["--fault", "no such fault"], "--fault"),
])
async def test_bad_values(argv: list[str], fragment: str) -> None:
    rc, out, err = await run("serve", *argv)
    assert_usage_error(rc, out, err, fragment)


async def test_host_that_cannot_be_bound() -> None:
    rc, out, err = await run("serve", "--dcs", "1", "--host", "8.8.8.8")
    assert_usage_error(rc, out, err, "cannot listen", "8.8.8.8")


async def test_unwritable_json_is_refused_before_starting(tmp_path: Path) -> None:
    for path in ("/proc/x.json", str(tmp_path / "missing-dir" / "x.json"), str(tmp_path)):
        rc, out, err = await run("serve", "--dcs", "1", "--json", path)
        assert_usage_error(rc, out, err, "--json", path)
    assert entries(tmp_path) == []  # nothing left behind


def entries(path: Path) -> list[Path]:
    return list(path.iterdir())


async def start(*argv: str) -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telethon_guard.testing", "serve", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), T)
    return proc, json.loads(line)


@pytest.mark.parametrize(("sig", "expected"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
async def test_stop_signals(sig: signal.Signals, expected: int, tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    proc, doc = await start("--dcs", "1", "--json", str(path))
    try:
        assert json.loads(path.read_text()) == doc
        proc.send_signal(sig)
        out, err = await asyncio.wait_for(proc.communicate(), T)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == expected, err
    assert "Traceback" not in err.decode() and "KeyboardInterrupt" not in err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["internal_errors"] == []


# Ctrl-C at a known moment of start-up: the process sends itself SIGINT from inside it.
INTERRUPT_DURING = """
import os, signal, sys
import telethon_guard.testing.__main__ as m
from telethon_guard.testing.server import TelegramTestServer
where = sys.argv[1]
def interrupt():
    os.kill(os.getpid(), signal.SIGINT)
if where == "parse":
    real = m._parser
    def parser():
        interrupt()
        return real()
    m._parser = parser
else:
    real_start = TelegramTestServer.start
    async def start(self):
        interrupt()
        return await real_start(self)
    TelegramTestServer.start = start
sys.exit(m.main(["serve", "--dcs", "1", "--rsa"]))
"""


@pytest.mark.parametrize("where", ["parse", "start"])
async def test_ctrl_c_during_start_up(where: str) -> None:
    rc, out, err = await run(where, code=INTERRUPT_DURING)
    assert rc == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
