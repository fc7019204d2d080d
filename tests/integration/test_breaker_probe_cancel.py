"""A HALF_OPEN probe cancelled by its caller does not wedge a real guarded client: real
Telethon over real sockets against the embedded server. After the cancel the guard reports
available, and the next call (through ``with_fallback``, as a service would make it) is the
probe and succeeds: live data, not the fallback, and the breaker CLOSED."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from telethon import errors as tl_errors
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.health import with_fallback
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import ErrorOnCalls, Latency

BOUND = 20.0
OPEN = 0.5  # breaker_open_seconds


async def test_a_cancelled_probe_frees_the_breaker_and_the_next_call_probes_live() -> None:
    plan = FaultPlan(Latency("channels.getFullChannel", 3.0),
                     ErrorOnCalls("messages.getDialogs", 500, "RPC_CALL_FAIL", times=1))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5, retry_max_attempts=1,
                               breaker_failure_threshold=1, breaker_open_seconds=OPEN)
        async with client:
            peer = await asyncio.wait_for(client.get_input_entity("news"), BOUND)
            with pytest.raises(tl_errors.RpcCallFailError):  # one 5xx opens the breaker
                await asyncio.wait_for(client(functions.messages.GetDialogsRequest(
                    offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(),
                    limit=10, hash=0)), BOUND)
            assert client.guard.unavailable_reason == "breaker OPEN"
            await asyncio.sleep(OPEN + 0.05)
            # The probe: a slow call (3 s server latency) its caller gives up on once sent.
            probe = asyncio.create_task(client(functions.channels.GetFullChannelRequest(peer)))
            end = time.monotonic() + BOUND
            while client.guard.unavailable_reason != "breaker HALF_OPEN":  # its probe is out
                assert time.monotonic() < end and not probe.done()
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # on the wire
            assert not probe.done()
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(probe, BOUND)
            # Not wedged: a probe may be sent, and the next call is it.
            assert client.guard.unavailable_reason is None
            called: list[int] = []

            async def live() -> Any:
                called.append(1)
                return await client.get_me()

            t = time.perf_counter()
            me = await asyncio.wait_for(with_fallback(live, "cached", timeout=2.0,
                                                      guard=client), BOUND)
            elapsed = time.perf_counter() - t
            assert called == [1] and isinstance(me, types.User), me  # live, not "cached"
            assert elapsed < 2.0
            assert client.guard.stats()["breakers"] == {} or all(
                s == "CLOSED" for s in client.guard.stats()["breakers"].values())
            assert client.guard.unavailable_reason is None
