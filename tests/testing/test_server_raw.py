"""A byte-level MTProto client for tests that must send what Telethon never would.

Imported by the other test_server_* modules (pytest puts this directory on sys.path)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import defaultdict
from io import BytesIO
from zlib import crc32

from telethon.crypto import AuthKey
from telethon.network.mtprotostate import MTProtoState
from telethon.tl.core import MessageContainer
from telethon.tl.tlobject import TLObject

from telethon_guard.testing import DcAddress

T = 10.0


class RawClient:
    """One TCP connection speaking ``framing``; encrypts with Telethon's MTProtoState."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 framing: str) -> None:
        self.reader = reader
        self.writer = writer
        self.framing = framing
        self._seq = 0
        self.state: MTProtoState | None = None

    @classmethod
    async def open(cls, dc: DcAddress, framing: str = "intermediate",
                   send_tag: bool = True) -> RawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(dc.host, dc.port), T)
        self = cls(reader, writer, framing)
        if send_tag:
            tag = {"intermediate": b"\xee\xee\xee\xee", "abridged": b"\xef", "full": b""}
            writer.write(tag[framing])
        return self

    def use_key(self, auth_key: bytes, salt: int) -> None:
        loggers: defaultdict[str, logging.Logger] = defaultdict(lambda: logging.getLogger("raw"))
        self.state = MTProtoState(AuthKey(auth_key), loggers=loggers)
        self.state.salt = salt

    def frame(self, payload: bytes) -> bytes:
        if self.framing == "intermediate":
            return struct.pack("<i", len(payload)) + payload
        if self.framing == "abridged":
            n = len(payload) >> 2
            head = bytes((n,)) if n < 127 else b"\x7f" + n.to_bytes(3, "little")
            return head + payload
        data = struct.pack("<ii", len(payload) + 12, self._seq) + payload
        self._seq += 1
        return data + struct.pack("<I", crc32(data))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_payload(self, payload: bytes) -> None:
        await self.send(self.frame(payload))

    def encrypted(self, body: bytes, *, content_related: bool = True) -> bytes:
        """Encrypt one message whose body is ``body`` (raw TL bytes)."""
        assert self.state is not None
        msg_id = self.state._get_new_msg_id()
        seq = self.state._get_seq_no(content_related)
        return self.state.encrypt_message_data(struct.pack("<qii", msg_id, seq, len(body)) + body)

    async def request(self, request: TLObject) -> None:
        assert self.state is not None
        buf = BytesIO()
        self.state.write_data_as_message(buf, bytes(request), True)
        await self.send_payload(self.state.encrypt_message_data(buf.getvalue()))

    async def read_frame(self, timeout: float = T) -> bytes:
        """One frame's payload (intermediate or abridged framing)."""
        return await asyncio.wait_for(self._read_frame(), timeout)

    async def _read_frame(self) -> bytes:
        if self.framing == "intermediate":
            (n,) = struct.unpack("<i", await self.reader.readexactly(4))
        elif self.framing == "abridged":
            n = (await self.reader.readexactly(1))[0]
            if n >= 127:
                n = int.from_bytes(await self.reader.readexactly(3), "little")
            n <<= 2
        else:
            raise NotImplementedError(self.framing)
        return await self.reader.readexactly(n)

    async def read_objects(self, timeout: float = T) -> list[TLObject]:
        """Decrypt one frame; return its objects (a container's messages flattened)."""
        assert self.state is not None
        message = self.state.decrypt_message_data(await self.read_frame(timeout))
        assert message is not None
        obj = message.obj
        if isinstance(obj, MessageContainer):
            return [m.obj for m in obj.messages]
        return [obj]

    async def read_until_eof(self, timeout: float = T) -> bytes:
        """Everything the server sends until it closes (``ConnectionResetError`` counts)."""
        chunks: list[bytes] = []

        async def drain() -> None:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                chunks.append(chunk)

        try:
            await asyncio.wait_for(drain(), timeout)
        except ConnectionResetError:
            pass
        return b"".join(chunks)

    async def silent_for(self, seconds: float) -> bool:
        """True if nothing arrives and the connection stays open for ``seconds``."""
        try:
            await asyncio.wait_for(self.reader.read(1), seconds)
        except asyncio.TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.writer.close()


def test_raw_client_frames_like_telethon() -> None:
    from telethon.network.connection.tcpabridged import AbridgedPacketCodec
    from telethon.network.connection.tcpfull import FullPacketCodec
    from telethon.network.connection.tcpintermediate import IntermediatePacketCodec

    payload = bytes(range(200)) * 3
    for framing, codec in (
        ("full", FullPacketCodec(None)),
        ("intermediate", IntermediatePacketCodec(None)),
        ("abridged", AbridgedPacketCodec(None)),
    ):
        raw = RawClient(None, None, framing)  # type: ignore[arg-type]
        assert raw.frame(payload) == codec.encode_packet(payload)
