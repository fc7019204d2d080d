"""MTProto TCP transports, server side: TcpFull, Intermediate, padded Intermediate, Abridged.

The framing is detected from the first bytes a client sends (https://core.telegram.org/mtproto/mtproto-transports):
``0xef`` is Abridged, ``0xeeeeeeee`` Intermediate, ``0xdddddddd`` padded Intermediate, anything
else is the first length of a TcpFull packet (which carries a sequence number and a CRC32).

Every reader raises :class:`FrameError` on bad input (wrong CRC, wrong sequence number, a length
that is negative, not a multiple of 4 or above ``max_size``); the connection closes on it.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Literal
from zlib import crc32

Framing = Literal["full", "intermediate", "abridged"]

TAG_ABRIDGED = 0xEF
TAG_INTERMEDIATE = b"\xee\xee\xee\xee"
TAG_PADDED = b"\xdd\xdd\xdd\xdd"

DEFAULT_MAX_SIZE = 2 * 1024 * 1024
"""Largest packet accepted, in bytes (Telegram's own cap is about 1 MiB of payload)."""

_pack_i = struct.Struct("<i").pack
_pack_ii = struct.Struct("<ii").pack
_pack_I = struct.Struct("<I").pack
_unpack_i = struct.Struct("<i").unpack
_unpack_ii = struct.Struct("<ii").unpack
_unpack_I = struct.Struct("<I").unpack


class FrameError(Exception):
    """The client sent bytes that are not a valid frame of its transport."""


class Codec:
    """Reads and writes frames of one transport on one connection."""

    name: Framing = "full"
    padded: bool = False

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        raise NotImplementedError

    def encode(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def transport_error(self, code: int) -> bytes:
        """A transport error (``code`` > 0, sent negated) framed the way Telegram frames it."""
        return self.encode(_pack_i(-code))

    def _check(self, length: int) -> None:
        if length < 4 or length > self.max_size:
            raise FrameError(f"{self.name}: bad packet length {length}")


class FullCodec(Codec):
    """TcpFull: ``len:int seq:int payload crc32:int``; both sides count their own seq from 0."""

    name: Framing = "full"

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, prefix: bytes = b"") -> None:
        super().__init__(max_size)
        self._recv_seq = 0
        self._send_seq = 0
        self._prefix = prefix  # bytes of the first frame already read by detect()

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        if self._prefix:
            head = self._prefix + await reader.readexactly(8 - len(self._prefix))
            self._prefix = b""
        else:
            head = await reader.readexactly(8)
        length, seq = _unpack_ii(head)
        if length < 12 + 4 or length > self.max_size + 12 or length % 4:
            raise FrameError(f"full: bad packet length {length}")
        rest = await reader.readexactly(length - 8)
        body = rest[:-4]
        (crc,) = _unpack_I(rest[-4:])
        if crc != crc32(head + body):
            raise FrameError("full: CRC32 mismatch")
        if seq != self._recv_seq:
            raise FrameError(f"full: sequence number {seq}, expected {self._recv_seq}")
        self._recv_seq += 1
        return body

    def encode(self, payload: bytes) -> bytes:
        data = _pack_ii(len(payload) + 12, self._send_seq) + payload
        self._send_seq += 1
        return data + _pack_I(crc32(data))

    def negative_length(self, code: int) -> bytes:
        """-code as length, seq and body: how Telegram sends -429 on TcpFull (Telethon #4042)."""
        return _pack_i(-code) * 3


class IntermediateCodec(Codec):
    """Intermediate: ``len:int payload``; padded Intermediate adds 0..3 random bytes."""

    name: Framing = "intermediate"

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, padded: bool = False) -> None:
        super().__init__(max_size)
        self.padded = padded

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        (length,) = _unpack_i(await reader.readexactly(4))
        if self.padded:
            if length < 4 or length > self.max_size + 3:
                raise FrameError(f"intermediate: bad packet length {length}")
            data = await reader.readexactly(length)
            extra = length % 4
            return data[:-extra] if extra else data
        if length % 4:
            raise FrameError(f"intermediate: length {length} not a multiple of 4")
        self._check(length)
        return await reader.readexactly(length)

    def encode(self, payload: bytes) -> bytes:
        if self.padded:
            payload += os.urandom(os.urandom(1)[0] % 4)
        return _pack_i(len(payload)) + payload


class AbridgedCodec(Codec):
    """Abridged: length/4 in one byte, or ``0x7f`` and three bytes when it is 127 or more."""

    name: Framing = "abridged"

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        first = (await reader.readexactly(1))[0]
        if first >= 0x7F:
            length = int.from_bytes(await reader.readexactly(3), "little")
        else:
            length = first
        length <<= 2
        self._check(length)
        return await reader.readexactly(length)

    def encode(self, payload: bytes) -> bytes:
        n = len(payload) >> 2
        if n < 0x7F:
            return bytes((n,)) + payload
        return b"\x7f" + n.to_bytes(3, "little") + payload


async def detect(reader: asyncio.StreamReader, max_size: int = DEFAULT_MAX_SIZE) -> Codec:
    """Read the transport tag (or the start of the first TcpFull frame) and return the codec."""
    first = await reader.readexactly(1)
    if first[0] == TAG_ABRIDGED:
        return AbridgedCodec(max_size)
    head = first + await reader.readexactly(3)
    if head == TAG_INTERMEDIATE:
        return IntermediateCodec(max_size)
    if head == TAG_PADDED:
        return IntermediateCodec(max_size, padded=True)
    return FullCodec(max_size, prefix=head)
