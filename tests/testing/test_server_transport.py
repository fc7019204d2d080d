"""Transport errors in every framing and mode, refusals and timed storms, end to end."""

from __future__ import annotations

import asyncio
import struct
from typing import Literal, cast

import pytest
from telethon import errors
from telethon.network import ConnectionTcpFull, ConnectionTcpIntermediate
from telethon.tl import functions
from test_server_raw import RawClient

from telethon_guard.testing import FaultPlan, TelegramTestServer, TransportError
from telethon_guard.testing.faults import OnCalls, Transport429Storm

T = 10.0
M429 = struct.pack("<i", -429)


def _plan(action: TransportError) -> FaultPlan:
    return FaultPlan(OnCalls("help.getNearestDc", 1, action))


@pytest.mark.parametrize(
    ("framing", "mode", "tail"),
    [
        ("full", "framed", M429 * 3),  # negative length, seq and body (Telethon #4042)
        ("full", "raw", M429),
        ("intermediate", "framed", struct.pack("<i", 4) + M429),
        ("intermediate", "raw", M429),
        ("abridged", "framed", b"\x01" + M429),
        ("abridged", "raw", M429),
    ],
)
async def test_transport_error_bytes_per_framing_and_mode(
    framing: str, mode: str, tail: bytes
) -> None:
    action = TransportError(429, cast(Literal["framed", "raw"], mode))
    async with TelegramTestServer(dcs=1, faults=_plan(action)) as server:
        server.session()
        raw = await RawClient.open(server.dc(1), framing)
        raw.use_key(server.auth_states()[-1].auth_key, server.salt)
        await raw.request(functions.help.GetNearestDcRequest())
        data = await raw.read_until_eof()
        assert data.endswith(tail)
        # what precedes is whole frames (new_session_created, msgs_ack), never a partial one
        assert not data[: -len(tail)].endswith(tail)
        assert server.log.count("help.getNearestDc", outcome="transport_error") == 1
        assert server.log.transport_errors_sent() == 1
        assert server.internal_errors == []


async def test_tcpfull_429_leaves_plain_telethon_disconnected() -> None:
    async with TelegramTestServer(dcs=1, faults=_plan(TransportError(429))) as server:
        client = server.client(connection=ConnectionTcpFull)
        async with client:
            with pytest.raises(errors.InvalidBufferError) as info:
                await asyncio.wait_for(client(functions.help.GetNearestDcRequest()), T)
            assert info.value.code == 429
            assert not client.is_connected()
            with pytest.raises(errors.InvalidBufferError):  # retrieve it (see -404 test below)
                await asyncio.wait_for(client.disconnected, T)
        assert server.log.connections_opened() == 1


async def test_intermediate_429_makes_telethon_reconnect_and_resend() -> None:
    async with TelegramTestServer(dcs=1, faults=_plan(TransportError(429))) as server:
        client = server.client(connection=ConnectionTcpIntermediate)
        async with client:
            nearest = await asyncio.wait_for(client(functions.help.GetNearestDcRequest()), T)
            assert nearest.this_dc == 1
        assert server.log.count("help.getNearestDc", outcome="transport_error") == 1
        assert server.log.count("help.getNearestDc", outcome="ok") >= 1
        assert server.log.connections_opened() >= 2


async def test_refuse_seconds_refuses_new_connections_then_recovers() -> None:
    action = TransportError(429, "framed", refuse_seconds=0.6)
    async with TelegramTestServer(dcs=2, faults=_plan(action)) as server:
        server.session()
        raw = await RawClient.open(server.dc(1))
        raw.use_key(server.auth_states()[-1].auth_key, server.salt)
        await raw.request(functions.help.GetNearestDcRequest())
        assert (await raw.read_until_eof()).endswith(struct.pack("<i", 4) + M429)
        # during the window: the same error at once, in the new connection's framing
        for framing, expected in (("intermediate", struct.pack("<i", 4) + M429),
                                  ("abridged", b"\x01" + M429)):
            probe = await RawClient.open(server.dc(1), framing)
            assert await probe.read_until_eof() == expected
        # another DC is not refused
        other = await RawClient.open(server.dc(2))
        await asyncio.sleep(0.1)
        assert not other.reader.at_eof()
        other.close()
        assert server.log.connections_refused(dc_id=1) == 2
        assert server.log.connections_refused(dc_id=2) == 0
        await asyncio.sleep(0.7)
        async with server.client() as client:  # after the window, served again
            assert await asyncio.wait_for(client.get_me(), T) is not None
        assert server.internal_errors == []


async def test_intermediate_client_meets_refusals_while_storm_lasts() -> None:
    action = TransportError(429, "framed", refuse_seconds=1.0)
    async with TelegramTestServer(dcs=1, faults=_plan(action)) as server:
        client = server.client(connection=ConnectionTcpIntermediate, connection_retries=3,
                               retry_delay=0.05)
        async with client:
            try:
                await asyncio.wait_for(client(functions.help.GetNearestDcRequest()), 5)
            except (ConnectionError, errors.InvalidBufferError, asyncio.TimeoutError):
                pass  # Telethon may give up reconnecting: what matters is what the server saw
        assert server.log.connections_refused(dc_id=1) >= 1
        assert server.log.transport_errors_sent() >= 2


async def test_timed_storm_hits_live_connections_and_refuses_new_ones() -> None:
    plan = FaultPlan(Transport429Storm(start=0.3, duration=0.6, refuse=True))
    async with TelegramTestServer(dcs=1, faults=plan) as server:
        live = await RawClient.open(server.dc(1), "abridged")
        data = await live.read_until_eof(timeout=5)  # pushed by the ticker, no request needed
        assert data == b"\x01" + M429
        refused = await RawClient.open(server.dc(1), "intermediate")
        assert await refused.read_until_eof() == struct.pack("<i", 4) + M429
        await asyncio.sleep(0.7)
        async with server.client() as client:
            assert await asyncio.wait_for(client.get_me(), T) is not None
        closed = [e for e in server.log.events("closed") if e.error_code == -429]
        assert len(closed) == 1
        assert server.log.connections_refused() >= 1
        assert server.internal_errors == []


async def test_unknown_auth_key_surfaces_as_auth_key_not_found() -> None:
    import os

    from telethon.crypto import AuthKey

    async with TelegramTestServer(dcs=1) as server:
        session = server.empty_session()
        session.auth_key = AuthKey(os.urandom(256))
        client = server.client(session=session)
        with pytest.raises(errors.AuthKeyNotFound):
            await asyncio.wait_for(client.connect(), T)
        # Telethon leaves AuthKeyNotFound in its `disconnected` future too; retrieve it, or it
        # is logged ("Future exception was never retrieved") whenever the future is collected.
        with pytest.raises(errors.AuthKeyNotFound):
            await asyncio.wait_for(client.disconnected, T)
        await client.disconnect()
        assert server.log.transport_errors_sent() == 1
        assert server.log.connections_opened() == 1
