"""Flood state that survives restarts (issue 10, "What to build" 3), with real Telethon over
real sockets against ``telethon_guard.testing``: the restarted process is a real second Python
process (``restart_child.py``) on the same session file, and ``server.log`` is the ground
truth of what it sent. Every wait is bounded."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from telethon import errors as tl_errors
from telethon.sessions import SQLiteSession

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import FloodWaitBlocked, GuardConfigError, MayHaveRunError
from telethon_guard.fakeclock import FakeClock
from telethon_guard.storage.memory import MemoryStorage
from telethon_guard.storage.sqlite import REFRESH_INTERVAL, SQLiteStore
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import DropReplies, ErrorOnCalls, FaultPlan, LoginFlood
from tests._child import run_json_child
from tests.integration._client_helpers import TEST_RSA_KEY

CHILD = Path(__file__).with_name("restart_child.py")
ROOT = Path(__file__).resolve().parents[2]
BOUND = 20.0
AT_ONCE = 5.0  # far below every wait avoided here (20 s, 1,658 s)
BOT_TOKEN = "4242:AAbbCC"


async def run_child(args: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Run ``restart_child.py`` in a new interpreter (bounded); its JSON answer."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return await run_json_child(CHILD, args, env, timeout)


def file_session(server: TelegramTestServer, path: Path, *, logged_in: bool) -> str:
    """A Telethon file session ``<path>.session`` on the server's DC 1: logged in as a new
    account (a key the server knows), or with no auth key (the client runs the DH exchange)."""
    source = server.session() if logged_in else server.empty_session()
    session = SQLiteSession(str(path))
    session.set_dc(source.dc_id, source.server_address, source.port)
    if logged_in:
        session.auth_key = source.auth_key
    session.save()
    session.close()
    return str(path)


async def until_exists(path: Path, child: asyncio.Task[Any]) -> None:
    """Return once ``path`` exists (polling every 50 ms; the caller bounds the wait); raise
    the child's outcome if it ended first."""
    while True:
        if await asyncio.to_thread(path.exists):
            return
        if child.done():
            raise AssertionError(f"the child ended first: {child.result()}")
        await asyncio.sleep(0.05)


def stored_bytes(path: str) -> bytes:
    """The database file and its WAL, as bytes."""
    wal = Path(path + "-wal")
    return Path(path).read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def child_args(server: TelegramTestServer, session: str, **kw: Any) -> dict[str, Any]:
    return {"session": session, "api_id": server.api_id, "api_hash": server.api_hash, **kw}


async def test_a_restarted_process_refuses_a_blocked_method_until_the_block_ends(
        tmp_path: Path) -> None:
    plan = FaultPlan(ErrorOnCalls("contacts.resolveUsername", 420, "FLOOD_WAIT_20", times=1))
    async with TelegramTestServer(faults=plan) as server:
        session = file_session(server, tmp_path / "svc", logged_in=True)
        first = server.client(GuardedTelegramClient, session=SQLiteSession(session),
                              max_flood_wait=0, deadline=BOUND)
        store = first.guard.pipeline.storage.persist  # type: ignore[attr-defined]
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "svc.guard.sqlite")  # next to svc.session
        async with first:
            with pytest.raises(FloodWaitBlocked) as info:
                await asyncio.wait_for(first.get_entity("news"), BOUND)
        assert info.value.from_server and info.value.retry_after == pytest.approx(20)
        assert info.value.seconds == 20  # Telegram's figure, not one more (float noise)
        blocked_at = server.log.requests("contacts.resolveUsername")[0].time
        # The first process is gone; a new one starts on the same session file.
        refused = await run_child(child_args(
            server, session, action="resolve", username="news", guard={"max_flood_wait": 0}))
        assert refused["durable"] == store.path
        assert (refused["outcome"], refused["type"], refused["from_server"]) == (
            "error", "FloodWaitBlocked", False)
        assert 0 < refused["retry_after"] < 20
        assert server.log.count("contacts.resolveUsername") == 1  # nothing sent for it
        # Another restart that may wait: it waits locally, and sends once the block ended.
        waited = await run_child(child_args(
            server, session, action="resolve", username="news",
            guard={"max_flood_wait": 60, "deadline": 60}, bound=50.0), timeout=90.0)
        assert waited["outcome"] == "ok", waited
        sent = server.log.requests("contacts.resolveUsername")
        assert len(sent) == 2
        assert sent[1].time >= blocked_at + 20 - 0.5  # not before the block ended


def test_a_server_flood_wait_keeps_its_exact_seconds_whatever_the_clock_reads() -> None:
    """The ledger hands back Telegram's FLOOD_WAIT seconds exactly: ``(now + 1658) - now`` is
    1658.0000000000005 when the monotonic clock reads 3324.984, which made ``seconds`` 1659
    (ceil) in ~2 % of runs of the test below, depending on the clock's value."""
    now = 3324.984
    assert (now + 1658.0) - now > 1658.0  # the float noise in question
    storage = MemoryStorage(FakeClock(now))
    scope = "acct:1/method:auth.importBotAuthorization"
    left = storage.flood_block_sync(scope, 1658.0)
    assert left == 1658.0
    err = FloodWaitBlocked(None, left, method="auth.importBotAuthorization", scope=scope,
                           from_server=True)
    assert err.seconds == 1658
    # A longer block already there still wins, and is told as what is left of it.
    assert storage.flood_block_sync(scope, 10.0) == pytest.approx(1658.0)


async def test_a_bot_login_flood_is_raised_at_once_and_not_resent_after_a_restart(
        tmp_path: Path) -> None:
    rule = LoginFlood(1658, factor=2)
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        session = file_session(server, tmp_path / "bot", logged_in=False)
        # Whatever max_flood_wait and deadline allow, start() never sleeps a login flood.
        first = server.client(GuardedTelegramClient, session=SQLiteSession(session),
                              max_flood_wait=100_000, deadline=None)
        started = time.monotonic()
        with pytest.raises(FloodWaitBlocked) as info:
            await asyncio.wait_for(first.start(bot_token=BOT_TOKEN), BOUND)
        assert time.monotonic() - started < AT_ONCE
        assert info.value.from_server and info.value.retry_after == pytest.approx(1658)
        assert info.value.seconds == 1658  # Telegram's figure, not one more (float noise)
        assert isinstance(info.value, tl_errors.FloodWaitError)
        await asyncio.wait_for(first.disconnect(), BOUND)
        # The supervisor restarts the bot: a new process, the same session file.
        again = await run_child(child_args(
            server, session, action="bot", token=BOT_TOKEN,
            guard={"max_flood_wait": 100_000, "deadline": None}))
        assert (again["outcome"], again["type"], again["from_server"]) == (
            "error", "FloodWaitBlocked", False)
        assert 1600 < again["retry_after"] < 1658
        assert again["elapsed"] < AT_ONCE + 10  # connect + refuse; nothing slept
        assert server.log.count("auth.importBotAuthorization") == 1
        assert [a.flood_wait for a in rule.attempts] == [1658]
        # Control: the same restart without the durable file sends the login again and the
        # flood grows, as in the public reports.
        plain = await run_child(child_args(
            server, session, action="bot", token=BOT_TOKEN,
            guard={"max_flood_wait": 0, "durable_storage": False}))
        assert plain["durable"] is None
        assert (plain["type"], plain["from_server"]) == ("FloodWaitBlocked", True)
        assert plain["retry_after"] == pytest.approx(3316)
        assert server.log.count("auth.importBotAuthorization") == 2


async def test_a_login_flood_holds_for_a_new_auth_key_with_an_explicit_storage_path(
        tmp_path: Path) -> None:
    """Telegram floods a login per bot token, whatever the auth key: a bot that starts on a
    fresh in-memory session each time (a new key, a new guard account) is still refused, once
    it keeps its guard state in a file (``storage_path``)."""
    rule = LoginFlood(1658, factor=2)
    storage_path = str(tmp_path / "guard.sqlite")
    async with TelegramTestServer(faults=FaultPlan(rule), rsa_key=TEST_RSA_KEY) as server:
        first = server.client(GuardedTelegramClient, session=server.empty_session(),
                              storage_path=storage_path, max_flood_wait=0)
        with pytest.raises(FloodWaitBlocked) as info:
            await asyncio.wait_for(first.start(bot_token=BOT_TOKEN), BOUND)
        assert info.value.from_server and info.value.retry_after == pytest.approx(1658)
        assert info.value.seconds == 1658  # Telegram's figure, not one more (float noise)
        assert BOT_TOKEN not in str(info.value.scope)  # hashed, never in clear
        await asyncio.wait_for(first.disconnect(), BOUND)
        again = await run_child(child_args(
            server, "", string_session=[1, server.dc(1).host, server.dc(1).port],
            rsa_pem=TEST_RSA_KEY,
            action="bot", token=BOT_TOKEN, guard={"storage_path": storage_path}))
        assert again["durable"] == storage_path
        assert (again["type"], again["from_server"]) == ("FloodWaitBlocked", False)
        assert 1600 < again["retry_after"] < 1658
        assert server.log.count("auth.importBotAuthorization") == 1
        assert len(server.auth_states()) >= 2  # the restart really ran on a new auth key
    assert BOT_TOKEN.encode() not in stored_bytes(storage_path)


async def test_a_restarted_process_keeps_an_open_breaker_until_its_time(tmp_path: Path) -> None:
    plan = FaultPlan(ErrorOnCalls("contacts.resolveUsername", 500, "RPC_CALL_FAIL"))
    async with TelegramTestServer(faults=plan) as server:
        session = file_session(server, tmp_path / "svc", logged_in=True)
        first = server.client(GuardedTelegramClient, session=SQLiteSession(session),
                              breaker_failure_threshold=2, breaker_open_seconds=15,
                              retry_max_attempts=2, retry_base_delay=0.01, deadline=BOUND)
        async with first:
            with pytest.raises(tl_errors.ServerError):
                await asyncio.wait_for(first.get_entity("news"), BOUND)
        opened_at = time.monotonic()
        before = len(server.log.requests())
        again = await run_child(child_args(
            server, session, action="resolve", username="news", guard={"deadline": BOUND}))
        assert (again["outcome"], again["type"]) == ("error", "CircuitOpenError"), again
        assert again["key"].endswith("/dc:1") and 0 < again["retry_after"] <= 15
        assert len(server.log.requests()) == before  # refused locally: not even the init
        # After its time, the next process is the HALF_OPEN probe: it connects and calls.
        await asyncio.sleep(max(0.0, opened_at + 15.5 - time.monotonic()))
        server.faults = FaultPlan()
        later = await run_child(child_args(
            server, session, action="resolve", username="news", guard={"deadline": BOUND}))
        assert later["outcome"] == "ok", later


async def test_a_running_process_learns_another_process_flood_through_the_shared_file(
        tmp_path: Path) -> None:
    """Two processes of one account (``account="main"``, a session each) share
    ``storage_path``: a FLOOD_WAIT one of them gets reaches the other, already running, within
    the refresh interval, and it refuses locally."""
    plan = FaultPlan(ErrorOnCalls("contacts.resolveUsername", 420, "FLOOD_WAIT_60", times=1))
    shared = str(tmp_path / "main.guard.sqlite")
    trigger = tmp_path / "now"
    async with TelegramTestServer(faults=plan) as server:
        user = server.world.register_account(None)
        other = asyncio.create_task(run_child(child_args(
            server, "", logged_in_session=server.session(user).save(), action="resolve",
            username="news", wait_for_file=str(trigger),
            guard={"account": "main", "storage_path": shared, "max_flood_wait": 0})))
        client = server.client(GuardedTelegramClient, session=server.session(user),
                               account="main", storage_path=shared, max_flood_wait=0,
                               deadline=BOUND)
        try:
            async with client:
                # The other process is running and connected (its state loaded) before the
                # flood: it can only learn it through the file, while running.
                await asyncio.wait_for(until_exists(Path(str(trigger) + ".ready"), other), 60)
                with pytest.raises(FloodWaitBlocked) as info:
                    await asyncio.wait_for(client.get_entity("news"), BOUND)
                assert info.value.from_server
                await asyncio.sleep(REFRESH_INTERVAL + 0.5)  # the other's refresh tick
                await asyncio.to_thread(trigger.touch)
                result = await asyncio.wait_for(other, 60.0)
        finally:
            if not other.done():
                other.cancel()
        assert result.get("waited_for_file") and result["outcome"] == "error", result
        assert (result["type"], result["from_server"]) == ("FloodWaitBlocked", False)
        assert 0 < result["retry_after"] < 60
        assert server.log.count("contacts.resolveUsername") == 1


async def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.guard.sqlite")
    SQLiteStore.open(path).close()
    results = await asyncio.gather(*(
        run_child({"action": "record", "path": path, "name": name, "count": 300})
        for name in ("p1", "p2")))
    assert [r["write_errors"] for r in results] == [0, 0]
    floods = SQLiteStore.open(path).floods()
    assert len([s for s in floods if s.startswith(("acct:p1/", "acct:p2/"))]) == 600
    assert floods["acct:shared/method:both"] > 100 + 299 - 30  # the later end of both


async def test_a_corrupt_file_falls_back_to_memory_or_fails_at_construction(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with TelegramTestServer() as server:
        session = file_session(server, tmp_path / "svc", logged_in=True)
        (tmp_path / "svc.guard.sqlite").write_bytes(os.urandom(8192))
        with caplog.at_level(logging.WARNING, logger="telethon_guard"):
            client = server.client(GuardedTelegramClient, session=SQLiteSession(session),
                                   deadline=BOUND)
        assert client.guard.pipeline.storage.persist is None  # type: ignore[attr-defined]
        assert any("durable storage unavailable" in r.getMessage() for r in caplog.records)
        async with client:  # works, in memory
            assert (await asyncio.wait_for(client.get_me(), BOUND)) is not None
        with pytest.raises(GuardConfigError) as info:
            server.client(GuardedTelegramClient, session=SQLiteSession(session),
                          durable_fallback="fail")
        assert info.value.field == "storage_path"


async def test_send_code_is_never_resent_on_a_5xx_or_an_attempt_timeout(tmp_path: Path) -> None:
    plan = FaultPlan(ErrorOnCalls("auth.sendCode", 500, "RPC_CALL_FAIL", times=1),
                     DropReplies("auth.sendCode", calls=[2]))
    async with TelegramTestServer(faults=plan) as server:
        account = server.world.register_account(None)
        phone = "+" + str(server.world.core.users[account].phone)
        client = server.client(GuardedTelegramClient, session=server.empty_session(),
                               retry_max_attempts=5, retry_base_delay=0.01,
                               attempt_timeout=1.0, deadline=BOUND)
        await asyncio.wait_for(client.connect(), BOUND)
        try:
            with pytest.raises(tl_errors.ServerError):
                await asyncio.wait_for(client.send_code_request(phone), BOUND)
            assert server.log.count("auth.sendCode") == 1  # the 500 was not retried
            with pytest.raises(MayHaveRunError):
                await asyncio.wait_for(client.send_code_request(phone), BOUND)
            assert server.log.count("auth.sendCode") == 2  # the timeout was not re-sent
        finally:
            await asyncio.wait_for(client.disconnect(), BOUND)
