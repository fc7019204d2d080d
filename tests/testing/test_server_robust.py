"""Bad input closes only the connection that sent it; server bugs never pass silently."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import pytest
from telethon.tl import functions, types
from telethon.tl.core import RpcResult
from test_server_raw import RawClient

from telethon_guard.testing import RpcErrorReply, ServerInternalError, TelegramTestServer, World
from telethon_guard.testing._types import RequestInfo

T = 10.0


def _closed(server: TelegramTestServer, startswith: str) -> list[str]:
    return [
        e.detail or ""
        for e in server.log.events("closed")
        if (e.detail or "").startswith(startswith)
    ]


async def _still_serves(server: TelegramTestServer, client: Any) -> None:
    me = await asyncio.wait_for(client.get_me(), T)
    assert me is not None
    assert server.internal_errors == []


def _key(server: TelegramTestServer) -> bytes:
    server.session()  # registers a logged-in key on DC 1
    return server.auth_states()[-1].auth_key


@pytest.mark.parametrize(
    ("framing", "payload", "reason"),
    [
        ("full", b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "bad frame"),
        ("intermediate", struct.pack("<i", 3 * 1024 * 1024), "bad frame"),  # oversize
        ("intermediate", struct.pack("<i", -5), "bad frame"),
        ("intermediate", struct.pack("<i", 7) + b"1234567", "bad frame"),  # not 4-aligned
        ("abridged", b"\x7f" + (1 << 20).to_bytes(3, "little"), "bad frame"),  # 4 MiB
        ("intermediate", struct.pack("<i", 4) + b"\x00\x00\x00\x00", "protocol error"),
        ("intermediate", struct.pack("<i", 16) + bytes(16), "protocol error"),  # plain, short
    ],
)
async def test_garbage_closes_that_connection_only(
    framing: str, payload: bytes, reason: str
) -> None:
    async with TelegramTestServer(dcs=1) as server:
        async with server.client() as client:
            raw = await RawClient.open(server.dc(1), framing, send_tag=framing != "full")
            await raw.send(payload)
            assert await raw.read_until_eof() == b""
            await _still_serves(server, client)
        assert _closed(server, reason)


async def test_bad_crc_and_bad_seq_on_tcpfull() -> None:
    async with TelegramTestServer(dcs=1) as server:
        async with server.client() as client:
            raw = await RawClient.open(server.dc(1), "full")
            good = raw.frame(bytes(24))
            await raw.send(good[:-4] + bytes(4))  # wrong CRC32
            assert await raw.read_until_eof() == b""
            raw2 = await RawClient.open(server.dc(1), "full")
            req = bytes(functions.ReqPqMultiRequest(nonce=1))
            await raw2.send(raw2.frame(struct.pack("<qqi", 0, 1 << 32, len(req)) + req))
            raw2._seq = 5  # the second packet must carry seq 1
            await raw2.send(raw2.frame(bytes(24)))
            await raw2.read_until_eof()
            await _still_serves(server, client)
        assert _closed(server, "bad frame: full: CRC32 mismatch")
        assert _closed(server, "bad frame: full: sequence number 5")


@pytest.mark.parametrize(
    ("framing", "expected"),
    [
        ("intermediate", struct.pack("<i", 4) + struct.pack("<i", -404)),
        ("abridged", b"\x01" + struct.pack("<i", -404)),
        ("full", None),  # a regular 16-byte TcpFull packet, checked below
    ],
)
async def test_unknown_auth_key_gets_transport_404(framing: str, expected: bytes | None) -> None:
    async with TelegramTestServer(dcs=1) as server:
        raw = await RawClient.open(server.dc(1), framing)
        raw.use_key(os.urandom(256), server.salt)
        await raw.request(functions.help.GetNearestDcRequest())
        data = await raw.read_until_eof()
        if expected is None:
            length, seq, code = struct.unpack("<iii", data[:12])
            assert (length, seq, code, len(data)) == (16, 0, -404, 16)
        else:
            assert data == expected
        assert server.log.transport_errors_sent() == 1
        assert [e.error_code for e in server.log.events("closed")] == [-404]


async def test_key_of_another_dc_is_unknown_here() -> None:
    async with TelegramTestServer(dcs=2) as server:
        server.session(dc_id=2)
        key = server.auth_states()[-1].auth_key
        raw = await RawClient.open(server.dc(1))
        raw.use_key(key, server.salt)
        await raw.request(functions.help.GetNearestDcRequest())
        assert await raw.read_until_eof() == struct.pack("<ii", 4, -404)


async def test_corrupt_encrypted_messages_close_the_connection() -> None:
    async with TelegramTestServer(dcs=1) as server:
        async with server.client() as client:
            key = _key(server)
            # 1. msg_key does not match the plaintext
            raw = await RawClient.open(server.dc(1))
            raw.use_key(key, server.salt)
            packet = bytearray(raw.encrypted(bytes(functions.PingRequest(1))))
            packet[10] ^= 0xFF
            await raw.send_payload(bytes(packet))
            assert await raw.read_until_eof() == b""
            # 2. an unknown constructor in a valid message
            raw = await RawClient.open(server.dc(1))
            raw.use_key(key, server.salt)
            await raw.send_payload(raw.encrypted(struct.pack("<I", 0xDEADBEEF) + bytes(8)))
            await raw.read_until_eof()
            # 3. a request cut short (valid envelope, truncated TL)
            raw = await RawClient.open(server.dc(1))
            raw.use_key(key, server.salt)
            body = bytes(functions.messages.SendMessageRequest(types.InputPeerSelf(), "x" * 50))
            await raw.send_payload(raw.encrypted(body[:12]))
            await raw.read_until_eof()
            await _still_serves(server, client)
        reasons = [e.detail for e in server.log.events("closed")]
        assert any(r and r.startswith("protocol error: msg_key mismatch") for r in reasons)
        assert any(r and "DEADBEEF".lower() in r.lower() for r in reasons), reasons
        assert any(r and r.startswith("malformed message") for r in reasons), reasons


async def test_handshake_out_of_order_closes() -> None:
    async with TelegramTestServer(dcs=1) as server:
        raw = await RawClient.open(server.dc(1))
        req = bytes(functions.SetClientDHParamsRequest(1, 2, bytes(16)))
        await raw.send_payload(struct.pack("<qqi", 0, 1 << 32, len(req)) + req)
        assert await raw.read_until_eof() == b""
        assert _closed(server, "handshake error")
        assert server.internal_errors == []


class _BuggyWorld(World):
    def handle_sync(self, info: RequestInfo) -> Any:
        if info.method == "help.getNearestDc":
            raise ZeroDivisionError("bug in a handler")
        if info.method == "help.getCdnConfig":
            raise RpcErrorReply(400, "NOT_A_BUG")
        return super().handle_sync(info)


async def test_internal_errors_answer_500_and_fail_the_test() -> None:
    server = TelegramTestServer(dcs=1, world=_BuggyWorld())
    with pytest.raises(ServerInternalError) as info:
        async with server:
            client = server.client(request_retries=0, raise_last_call_error=True)
            async with client:
                with pytest.raises(Exception, match="INTERNAL"):
                    await asyncio.wait_for(client(functions.help.GetNearestDcRequest()), T)
                with pytest.raises(Exception, match="NOT_A_BUG"):
                    await asyncio.wait_for(client(functions.help.GetCdnConfigRequest()), T)
                await _still_serves_despite_bug(client)
    assert isinstance(info.value.errors[0], ZeroDivisionError)
    assert len(info.value.errors) == 1
    assert server.log.count("help.getNearestDc", outcome="rpc_error") == 1


async def _still_serves_despite_bug(client: Any) -> None:
    assert await asyncio.wait_for(client.get_me(), T) is not None


async def test_strict_false_keeps_errors_without_raising() -> None:
    async with TelegramTestServer(dcs=1, world=_BuggyWorld(), strict=False) as server:
        server.session()
        raw = await RawClient.open(server.dc(1))
        raw.use_key(server.auth_states()[-1].auth_key, server.salt)
        await raw.request(functions.help.GetNearestDcRequest())
        results: list[Any] = []
        while not results:
            results = [o for o in await raw.read_objects(T) if isinstance(o, RpcResult)]
        assert results[0].error.error_code == 500
        assert results[0].error.error_message == "INTERNAL"
    assert len(server.internal_errors) == 1


def test_bad_arguments_raise_at_construction() -> None:
    with pytest.raises(ValueError):
        TelegramTestServer(dcs=0)
    with pytest.raises(ValueError):
        TelegramTestServer(dcs=2, ports=[0])
    with pytest.raises(ValueError):
        TelegramTestServer(rsa_key="not a key")


_FUZZ_REQUESTS = [
    functions.messages.SendMessageRequest(types.InputPeerSelf(), "hello world", random_id=5),
    functions.messages.GetHistoryRequest(types.InputPeerSelf(), 0, None, 0, 10, 0, 0, 0),
    functions.help.GetNearestDcRequest(),
    functions.users.GetUsersRequest([types.InputUserSelf()]),
    functions.PingRequest(1),
]


async def test_fuzzed_requests_inside_valid_encryption_never_break_the_server() -> None:
    import random

    from telethon.tl.core import GzipPacked

    rng = random.Random(0)
    async with TelegramTestServer(dcs=1) as server:
        server.session()
        key = server.auth_states()[-1].auth_key
        async with server.client() as client:
            for _ in range(80):
                raw = await RawClient.open(server.dc(1), rng.choice(["full", "intermediate"]))
                raw.use_key(key, server.salt)
                body = bytearray(bytes(rng.choice(_FUZZ_REQUESTS)))
                for _ in range(rng.randint(1, 4)):
                    body[rng.randrange(len(body))] = rng.randrange(256)
                if rng.random() < 0.3 and len(body) > 8:
                    body = body[: rng.randrange(4, len(body))]
                body += bytes(-len(body) % 4)
                if rng.random() < 0.2:
                    body = bytearray(bytes(GzipPacked(bytes(body))))
                await raw.send_payload(raw.encrypted(bytes(body)))
                await raw.silent_for(0.02)
                raw.close()
            await _still_serves(server, client)
