"""``connect()`` is atomic and bounded (issue 10, "Connect is atomic").

Real Telethon over real sockets against the test server's connection faults: a connect that
fails or is cancelled at any point leaves the guarded client as before the call (no socket,
no sender or reconnect task, no auto-reconnect ``get_me`` calling through the guard, nothing
opening connections behind the caller's back, no breaker failure from leftovers), and the
next ``connect()`` builds everything fresh: the init request is sent, the update loop runs
(a pushed message reaches the handler) and calls work. ``connect()`` ends within
``connect_timeout`` (default: ``deadline``) with a typed error.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from telethon import events

from telethon_guard import (
    DeadlineExceeded,
    FloodWaitBlocked,
    GuardConfigError,
    GuardedTelegramClient,
)
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing._types import Stall
from telethon_guard.testing.faults import FaultPlan, OnInit, OnNewConnections, flood_wait
from tests.testing.test_lifecycle_faults_telethon import (
    T,
    port_down,
    until,
    wait_until_plan_time,
)

QUIET = 0.6  # how long nothing may happen after a failed connect, seconds


def assert_left_as_before(client: GuardedTelegramClient) -> None:
    """No connection, no sender task, no reconnect or callback task, nothing queued."""
    sender: Any = client._sender
    assert not client.is_connected()
    assert sender._connection is None
    for task in (sender._send_loop_handle, sender._recv_loop_handle,
                 sender._reconnect_loop, sender._callback_task):
        assert task is None or task.done()
    assert not sender.is_reconnecting
    assert not sender._pending_state
    for handle in (client._updates_handle, client._keepalive_handle):
        assert handle is None or handle.done()


def open_sockets(server: TelegramTestServer) -> int:
    """TCP connections the server has open (opened and not yet closed)."""
    return server.log.connections_opened() - server.log.connections_closed()


async def assert_nothing_behind_the_callers_back(server: TelegramTestServer,
                                                 sockets_closed: bool = True) -> None:
    """No socket left open (``sockets_closed``: a stalled server connection never reads, so
    it does not see the client close it); for QUIET seconds after the failed connect: no new
    connection, no request."""
    if sockets_closed:
        await until(lambda: open_sockets(server) == 0)
    opened, requests = server.log.connections_opened(), server.log.count()
    await asyncio.sleep(QUIET)
    assert server.log.connections_opened() == opened
    assert server.log.count() == requests


async def assert_whole_after_connect(server: TelegramTestServer, client: GuardedTelegramClient,
                                     got: list[str], account: int) -> None:
    """connect() works: init sent, one update loop delivering, calls succeed, breaker closed."""
    inits = server.log.count("help.getConfig", outcome="ok")
    sockets = open_sockets(server)
    await asyncio.wait_for(client.connect(), T)
    assert server.log.count("help.getConfig", outcome="ok") == inits + 1
    me = await asyncio.wait_for(client.get_me(), T)
    assert me is not None and me.id == account
    updates = client._updates_handle
    assert updates is not None and not updates.done()
    assert client._keepalive_handle is not None and not client._keepalive_handle.done()
    await until(lambda: server.log.count("updates.getState") >= 1)
    assert server.push_message("carol", "bob", "after").pushed == 1
    await until(lambda: got == ["after"])
    assert client.guard.available, client.guard.unavailable_reason
    assert open_sockets(server) == sockets + 1  # one new connection, nothing else
    assert all(state == "CLOSED" for state in client.guard.stats().breakers.values())


def guarded(server: TelegramTestServer, account: int, got: list[str],
            **kwargs: Any) -> GuardedTelegramClient:
    client = server.client(cls=GuardedTelegramClient, session=server.session(account), **kwargs)

    async def on_message(event: Any) -> None:
        got.append(event.raw_text)

    client.add_event_handler(on_message, events.NewMessage())
    return client


@pytest.mark.parametrize("ended_by", ["caller_timeout", "connect_timeout"])
async def test_failed_connect_leaves_nothing_and_the_next_connect_is_whole(ended_by: str) -> None:
    # Issue 10 case 1: every new connection closed right after its first packet for 2.5 s.
    # The connect ends after 1 s: the caller's asyncio.wait_for cancels it, or its own
    # connect_timeout raises DeadlineExceeded("connect", 1.0).
    window = 2.5
    plan = FaultPlan(OnNewConnections("close", duration=window))
    async with TelegramTestServer(faults=plan) as server:
        bob = server.world.user_id("bob")
        got: list[str] = []
        own = ended_by == "connect_timeout"
        client = guarded(server, bob, got, deadline=5, **({"connect_timeout": 1.0} if own else {}))
        try:
            if own:
                with pytest.raises(DeadlineExceeded) as caught:
                    await asyncio.wait_for(client.connect(), T)
                assert caught.value.method == "connect" and caught.value.deadline == 1.0
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(client.connect(), 1.0)
            assert server.faults.now() < window
            assert_left_as_before(client)
            await wait_until_plan_time(server, window + 0.1)
            await assert_nothing_behind_the_callers_back(server)
            assert server.log.executed() == []  # no leftover get_me got through
            await assert_whole_after_connect(server, client, got, bob)
        finally:
            await asyncio.wait_for(client.disconnect(), T)


@pytest.mark.parametrize("ended_by", ["deadline", "caller_cancel"])
async def test_stalled_init_fails_typed_and_the_next_connect_is_whole(ended_by: str) -> None:
    # The init request (invokeWithLayer(initConnection(help.getConfig))) never answered once.
    # The connect ends on its own bound (DeadlineExceeded), or the caller cancels it while
    # the init is in flight (connected, handshake done: the rollback has a live sender).
    plan = FaultPlan(OnInit(Stall(), times=1))
    async with TelegramTestServer(faults=plan) as server:
        bob = server.world.user_id("bob")
        got: list[str] = []
        own = ended_by == "deadline"
        client = guarded(server, bob, got, deadline=1.5 if own else 8)
        try:
            if own:
                with pytest.raises(DeadlineExceeded):
                    await asyncio.wait_for(client.connect(), T)
            else:
                task = asyncio.ensure_future(client.connect())
                await until(lambda: server.log.count("help.getConfig", outcome="stalled") == 1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, T)
            assert_left_as_before(client)
            await assert_nothing_behind_the_callers_back(server, sockets_closed=False)
            await assert_whole_after_connect(server, client, got, bob)
        finally:
            await asyncio.wait_for(client.disconnect(), T)


async def test_init_flood_wait_fails_typed_and_the_connect_after_the_wait_is_whole() -> None:
    # The init request answered FLOOD_WAIT_3 once; the client's deadline (1.5 s) cannot hold
    # the wait, so connect() raises FloodWaitBlocked with Telegram's seconds and rolls back.
    # A connect inside the wait is refused locally (nothing sent); after it, connect is whole.
    wait = 3
    plan = FaultPlan(OnInit(flood_wait(wait), times=1))
    async with TelegramTestServer(faults=plan) as server:
        bob = server.world.user_id("bob")
        got: list[str] = []
        client = guarded(server, bob, got, deadline=1.5)
        try:
            with pytest.raises(FloodWaitBlocked) as caught:
                await asyncio.wait_for(client.connect(), T)
            flooded_at = time.monotonic()
            assert caught.value.seconds == wait and caught.value.from_server
            assert caught.value.method == "help.getConfig"
            assert [e.error_message for e in server.log.requests("help.getConfig")] == [
                f"FLOOD_WAIT_{wait}"]
            assert_left_as_before(client)
            await assert_nothing_behind_the_callers_back(server)
            assert all(state == "CLOSED" for state in client.guard.stats().breakers.values())
            with pytest.raises(FloodWaitBlocked) as inside:  # the ledger answers, rolled back
                await asyncio.wait_for(client.connect(), T)
            assert not inside.value.from_server and 0 < inside.value.retry_after <= wait
            assert_left_as_before(client)
            await asyncio.sleep(max(0.0, flooded_at + wait + 0.1 - time.monotonic()))
            await assert_whole_after_connect(server, client, got, bob)
            assert [e.error_message for e in server.log.requests("help.getConfig")] == [
                f"FLOOD_WAIT_{wait}", None]
        finally:
            await asyncio.wait_for(client.disconnect(), T)


async def test_connect_to_an_unreachable_dc_ends_within_connect_timeout() -> None:
    # Issue 10 case 3: the DC's port is closed (ECONNREFUSED). With Telethon's defaults
    # (5 connection retries) the paced retries alone would take over 10 s.
    async with TelegramTestServer() as server:
        window = 4.0
        ends = port_down(server, window)
        bob = server.world.user_id("bob")
        got: list[str] = []
        client = guarded(server, bob, got, deadline=1.5, connection_retries=5, retry_delay=1,
                         timeout=10)
        try:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded) as caught:
                await asyncio.wait_for(client.connect(), T)
            took = time.monotonic() - started
            assert caught.value.method == "connect" and caught.value.deadline == 1.5
            assert took < 1.5 + 2.0, took  # its bound, plus scheduling slack on a busy machine
            assert server.faults.now() < ends
            assert_left_as_before(client)
            assert open_sockets(server) == 0
            await wait_until_plan_time(server, ends + 0.2)
            await assert_whole_after_connect(server, client, got, bob)
        finally:
            await asyncio.wait_for(client.disconnect(), T)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "5"])
def test_connect_timeout_is_validated_at_construction(bad: Any) -> None:
    with pytest.raises(GuardConfigError) as caught:
        GuardedTelegramClient(None, 1, "0" * 32, connect_timeout=bad)
    assert caught.value.field == "connect_timeout"
