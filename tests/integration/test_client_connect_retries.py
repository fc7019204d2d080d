"""``connect()`` makes at most ``connection_retries + 1`` connections, with no deadline too.

README: "``GuardConnectionError`` when no connection was made within ``connection_retries``"
(Telethon's meaning: ``connection_retries + 1`` attempts). Before: with ``deadline=None`` and
a server closing every new connection, a connection that opened and was then lost went to the
paced reconnect loop bounded only by ``max_reconnect_seconds`` (60 s), and the init request
was retried on top: ``connection_retries=2`` took 63 s and 8 connections. Now each connection
lost, refused or failed before ``connect()`` completes counts, and the last one allowed ends
``connect()`` with ``ConnectionRetriesExhausted`` (a ``GuardConnectionError``, not retried).
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from telethon.sessions import StringSession

from telethon_guard import ConnectionRetriesExhausted, GuardConnectionError, GuardedTelegramClient
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import FaultPlan, OnNewConnections

# Far below the 60 s the reconnect loop would take, far above the ~4 s of paced attempts.
BOUND = 40.0


@pytest.mark.parametrize(("how", "retries"), [("close", 2), ("reset", 2), ("refuse", 2),
                                              ("close", 0), ("down", 2)])
async def test_connect_gives_up_after_connection_retries(how: str, retries: int) -> None:
    rule = OnNewConnections(how)
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        client = server.client(GuardedTelegramClient,
                               session=server.session(server.world.user_id("alice")),
                               deadline=None, connection_retries=retries, retry_delay=1)
        try:
            with pytest.raises(ConnectionRetriesExhausted) as e:
                await asyncio.wait_for(client.connect(), BOUND)
            assert isinstance(e.value, GuardConnectionError)
            assert f"connection_retries={retries}" in str(e.value)
            if how != "down":  # "down": the OS refuses them; the server sees none
                assert rule.fired == retries + 1  # Telethon's count: the first and the retries
            assert not client.is_connected()
        finally:
            await asyncio.wait_for(client.disconnect(), 10)


async def test_a_connection_lost_once_is_retried_and_connect_succeeds() -> None:
    rule = OnNewConnections("close")
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        client = server.client(GuardedTelegramClient,
                               session=server.session(server.world.user_id("alice")),
                               deadline=None, connection_retries=2, retry_delay=1)
        try:
            task = asyncio.ensure_future(client.connect())
            end = time.monotonic() + BOUND
            while rule.fired < 1:
                assert time.monotonic() < end, "the server saw no connection"
                await asyncio.sleep(0.01)
            server.faults.clear()  # the server closed the first new connection only
            await asyncio.wait_for(task, BOUND)
            assert client.is_connected() and rule.fired == 1
            assert (await asyncio.wait_for(client.get_me(), 10)).id
        finally:
            await asyncio.wait_for(client.disconnect(), 10)


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_port_is_retried_after_retry_delay_not_the_backoff() -> None:
    # A trial: connect() to a closed port gave up after 29 s ("failed 5 time(s)" after 6
    # attempts) where plain Telethon took 6 s: each refusal fed the reconnect pacer's doubling
    # backoff (1+2+4+8+16 s). A refusal is a definite answer: the next attempt follows after
    # Telethon's retry_delay, and the message counts the attempts made.
    session = StringSession()
    session.set_dc(1, "127.0.0.1", _closed_port())
    client = GuardedTelegramClient(session, 1, "x" * 32, deadline=None, receive_updates=False,
                                   connection_retries=5, retry_delay=1)
    try:
        with pytest.raises(ConnectionRetriesExhausted) as e:
            # bound: 5 retry delays (5 s) plus slack; before, the backoff took 27-31 s
            await asyncio.wait_for(client.connect(), 20.0)
        text = str(e.value)
        assert "failed 6 time(s)" in text and "connection_retries=5" in text, text
        assert "ConnectionRefusedError" in text, text
        assert isinstance(e.value.__cause__, ConnectionError)
        assert isinstance(e.value.__cause__.__cause__, ConnectionRefusedError)
        assert client.guard.pacer(None).failures == 0  # refusals did not back the pacer off
        assert not client.is_connected()
    finally:
        await asyncio.wait_for(client.disconnect(), 10)
