"""ServerLog queries (pure logic) and the serve CLI in its own process."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from telethon import TelegramClient, errors
from telethon.sessions import StringSession
from telethon.tl.functions.help import GetNearestDcRequest

from telethon_guard.testing.log import LogEntry, ServerLog


def _req(t: float, method: str, *, account: int = 1, rid: int | None = None,
         outcome: str = "ok", executed: bool = True, dc: int = 1) -> LogEntry:
    return LogEntry(t, "request", 1, dc, account, method, 0, rid, outcome,  # type: ignore[arg-type]
                    executed)


def test_counts_windows_and_duplicates() -> None:
    log = ServerLog()
    for t in (0.0, 0.5, 0.9, 1.0, 1.5, 3.0):
        log.append(_req(t, "messages.getHistory"))
    log.append(_req(1.2, "messages.getHistory", outcome="rpc_error", executed=False))
    log.append(_req(0.1, "messages.getHistory", account=2))
    log.append(_req(2.0, "messages.sendMessage", rid=7))
    log.append(_req(2.1, "messages.sendMessage", rid=7, outcome="dropped"))
    log.append(_req(2.2, "messages.sendMessage", rid=8))
    log.append(_req(2.3, "messages.sendMessage", rid=8, outcome="rpc_error", executed=False))
    log.append(LogEntry(0.0, "opened", 1, 1))
    log.append(LogEntry(0.1, "refused", 2, 2, error_code=-429))
    log.append(LogEntry(0.2, "closed", 3, 1, error_code=-404))

    assert log.count("messages.getHistory") == 8
    assert log.count("messages.getHistory", outcome="rpc_error") == 1
    assert log.count(account=2) == 1
    assert log.times("messages.getHistory", account=1) == [0.0, 0.5, 0.9, 1.0, 1.5, 3.0]
    # [0, 1) holds 0.0, 0.5, 0.9 for account 1 (+0.1 of account 2 without the filter)
    assert log.max_in_window("messages.getHistory", 1.0, account=1) == 3
    assert log.max_in_window("messages.getHistory", 1.0) == 4
    assert log.max_in_window("messages.getHistory", 10.0, account=1) == 6
    assert log.duplicates() == {7: 2}
    assert log.connections_opened() == 1
    assert log.connections_refused(dc_id=2) == 1 and log.connections_refused(dc_id=1) == 0
    assert log.transport_errors_sent() == 2
    assert log.summary()["messages.sendMessage"] == {"ok": 2, "dropped": 1, "rpc_error": 1}
    with pytest.raises(ValueError):
        log.max_in_window("messages.getHistory", 0)


async def test_serve_cli_in_its_own_process(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telethon_guard.testing", "serve", "--dcs", "1",
        "--sessions", "2", "--json", str(path),
        "--fault", "help.getNearestDc calls 1: FLOOD_WAIT_7",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert proc.returncode is None and time.monotonic() < deadline
            await asyncio.sleep(0.05)
        doc = json.loads(path.read_text())
        assert len(doc["sessions"]) == 2 and doc["dcs"][0]["dc_id"] == 1
        client = TelegramClient(StringSession(doc["sessions"][0]), doc["api_id"],
                                doc["api_hash"], flood_sleep_threshold=0)
        async with client:
            me = await asyncio.wait_for(client.get_me(), 15)
            with pytest.raises(errors.FloodWaitError) as info:
                await asyncio.wait_for(client(GetNearestDcRequest()), 15)
        assert me.id > 0 and info.value.seconds == 7
    finally:
        if proc.returncode is None:
            proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["connections_opened"] == 1 and summary["internal_errors"] == []
    assert summary["requests"]["help.getNearestDc"] == {"rpc_error": 1}
