"""Two ``connect()`` calls of one guarded client at once make ONE attempt and end together
(real Telethon over real sockets).

Fresh-eyes finding: two concurrent ``connect()``s to a down DC ended at different times: the
second waited for the first (Telethon's sender lock) and then made its own attempt, up to its
own ``connect_timeout`` later. Now the second joins the first's attempt: it ends with it, with
the same exception object when it fails; if the first caller cancels, the second makes its own
attempt.
"""

from __future__ import annotations

import asyncio

import pytest

from telethon_guard import DeadlineExceeded, GuardedTelegramClient
from telethon_guard.testing import TelegramTestServer
from tests.integration.test_client_connect_atomic import (
    assert_left_as_before,
    assert_whole_after_connect,
    guarded,
    open_sockets,
)
from tests.testing.test_lifecycle_faults_telethon import (
    T,
    port_down,
    wait_until_plan_time,
)

GAP = 1.0  # seconds between the two connect() calls


async def test_two_connects_to_a_down_dc_end_together_with_one_error() -> None:
    async with TelegramTestServer() as server:
        window = 6.0
        ends = port_down(server, window)
        bob = server.world.user_id("bob")
        got: list[str] = []
        client = guarded(server, bob, got, deadline=2.0, connection_retries=5, retry_delay=1,
                         timeout=10)
        try:
            first = asyncio.ensure_future(client.connect())
            await asyncio.sleep(GAP)
            assert not first.done()
            second = asyncio.ensure_future(client.connect())
            done, _ = await asyncio.wait({first}, timeout=T)
            assert done, "the first connect() did not end"
            with pytest.raises(DeadlineExceeded) as caught:
                first.result()
            # The second ends with the first: it joined its attempt (it would otherwise run
            # until its own connect_timeout, GAP s later, or make attempts of its own).
            for _ in range(10):
                if second.done():
                    break
                await asyncio.sleep(0)
            assert second.done(), "the second connect() outlived the attempt it joined"
            assert second.exception() is caught.value
            assert server.faults.now() < ends
            assert_left_as_before(client)
            assert open_sockets(server) == 0
            await wait_until_plan_time(server, ends + 0.2)
            await assert_whole_after_connect(server, client, got, bob)
        finally:
            await asyncio.wait_for(client.disconnect(), T)


async def test_two_connects_that_succeed_send_one_init() -> None:
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient,
                               session=server.session(server.world.user_id("bob")))
        try:
            inits = server.log.count("help.getConfig", outcome="ok")
            await asyncio.wait_for(asyncio.gather(client.connect(), client.connect()), T)
            assert client.is_connected()
            assert server.log.count("help.getConfig", outcome="ok") == inits + 1
            assert open_sockets(server) == 1
            assert await asyncio.wait_for(client.get_me(), T) is not None
        finally:
            await asyncio.wait_for(client.disconnect(), T)


async def test_a_joined_connect_makes_its_own_attempt_when_the_first_caller_cancels() -> None:
    async with TelegramTestServer() as server:
        window = 1.5
        port_down(server, window)
        client = server.client(cls=GuardedTelegramClient,
                               session=server.session(server.world.user_id("bob")),
                               deadline=8.0, connection_retries=10, retry_delay=1, timeout=10)
        try:
            first = asyncio.ensure_future(client.connect())
            await asyncio.sleep(0.3)
            second = asyncio.ensure_future(client.connect())
            await asyncio.sleep(0.1)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            # the second is not cancelled with it: it connects once the DC is back
            await asyncio.wait_for(second, T)
            assert client.is_connected()
            assert await asyncio.wait_for(client.get_me(), T) is not None
        finally:
            await asyncio.wait_for(client.disconnect(), T)
