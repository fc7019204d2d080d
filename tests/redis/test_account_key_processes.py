"""Two processes of one Telegram user (two auth keys) share a FLOOD_WAIT through shared guard
storage with the default account key, ``user:<id>`` (issue 12, "What to build" 3). Real
Telethon over real sockets: the MTProto test server runs in this process (its log is the ground
truth), the second process is ``account_child.py``. Durable SQLite storage (one
``storage_path`` file) and the real Redis at 127.0.0.1:6379 (a unique key prefix per test,
deleted afterwards: ``conftest.py``). Neither process sets ``account``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard._link import account_key
from telethon_guard.errors import FloodWaitBlocked
from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer
from tests._child import run_json_child

CHILD = Path(__file__).with_name("account_child.py")
HISTORY = "messages.getHistory"
BOUND = 20.0


async def run_child(args: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return await run_json_child(CHILD, args, env, timeout)


async def flood_in_this_process_then_ask_another(storage: dict[str, Any]) -> None:
    guard = {"max_flood_wait": 1.0, "deadline": 10.0, **storage}  # a 30 s block: raised
    async with TelegramTestServer(dcs=1, strict=False) as server:
        user_id = server.world.register_account(None)
        here = server.client(GuardedTelegramClient, session=server.session(user_id),
                             receive_updates=False, **guard)
        await asyncio.wait_for(here.connect(), BOUND)
        try:
            assert account_key(here, here.guard) == f"user:{user_id}"
            server.faults.add(ErrorOnCalls(HISTORY, 420, "FLOOD_WAIT_30", times=1))
            with pytest.raises(FloodWaitBlocked) as flooded:
                await asyncio.wait_for(here(functions.messages.GetHistoryRequest(
                    peer=types.InputPeerSelf(), offset_id=0, offset_date=None, add_offset=0,
                    limit=1, max_id=0, min_id=0, hash=0)), BOUND)
            assert flooded.value.from_server
        finally:
            await asyncio.wait_for(here.disconnect(), BOUND)
            await here.guard.pipeline.storage.aclose()
        other = server.session(user_id)  # the same user, another auth key
        assert other.auth_key.key_id != here.session.auth_key.key_id
        got = await run_child({"session": other.save(), "api_id": server.api_id,
                               "api_hash": server.api_hash, "guard": guard})
        assert got["key"] == f"user:{user_id}", got
        assert got["error"] == "FloodWaitBlocked" and got["from_server"] is False, got
        assert 20 <= got["retry_after"] <= 30, got
        assert server.log.count(HISTORY) == 1  # the other process sent none


async def test_two_processes_of_one_user_share_a_flood_wait_on_durable_storage(
        tmp_path: Path) -> None:
    await flood_in_this_process_then_ask_another(
        {"storage_path": str(tmp_path / "shared.guard.sqlite")})


async def test_two_processes_of_one_user_share_a_flood_wait_on_redis(
        redis_url: str, prefix: str) -> None:
    await flood_in_this_process_then_ask_another({"storage": f"{redis_url}?prefix={prefix}"})
