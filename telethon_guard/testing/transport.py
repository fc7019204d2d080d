"""MTProto TCP transports, server side: TcpFull, Intermediate, padded Intermediate, Abridged.

The framing is detected from the first bytes a client sends
(https://core.telegram.org/mtproto/mtproto-transports): ``0xef`` is Abridged, ``0xeeeeeeee``
Intermediate, ``0xdddddddd`` padded Intermediate; a length followed by sequence number 0 is
TcpFull (which carries a sequence number and a CRC32); anything else is the 64-byte header of
the obfuscated transport ("obfuscated2", Telethon's ``ConnectionTcpObfuscated``), which
AES-CTR-encrypts one of the other framings both ways (Telethon's ``AESModeCTR``).

Every reader raises :class:`FrameError` on bad input (wrong CRC, wrong sequence number, a length
that is negative, not a multiple of 4 or above ``max_size``); the connection closes on it.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Literal
from zlib import crc32

from telethon.crypto import AESModeCTR

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
    obfuscated: bool = False

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._rx: AESModeCTR | None = None  # obfuscated transport: client -> server
        self._tx: AESModeCTR | None = None  # server -> client

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        raise NotImplementedError

    async def _read(self, reader: asyncio.StreamReader, n: int) -> bytes:
        data = await reader.readexactly(n)
        return data if self._rx is None else bytes(self._rx.encrypt(data))

    def seal(self, data: bytes) -> bytes:
        """Bytes as they go on the wire (encrypted on the obfuscated transport)."""
        return data if self._tx is None else bytes(self._tx.encrypt(data))

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
            head = self._prefix + await self._read(reader, 8 - len(self._prefix))
            self._prefix = b""
        else:
            head = await self._read(reader, 8)
        length, seq = _unpack_ii(head)
        if length < 12 + 4 or length > self.max_size + 12 or length % 4:
            raise FrameError(f"full: bad packet length {length}")
        rest = await self._read(reader, length - 8)
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
        (length,) = _unpack_i(await self._read(reader, 4))
        if self.padded:
            if length < 4 or length > self.max_size + 3:
                raise FrameError(f"intermediate: bad packet length {length}")
            data = await self._read(reader, length)
            extra = length % 4
            return data[:-extra] if extra else data
        if length % 4:
            raise FrameError(f"intermediate: length {length} not a multiple of 4")
        self._check(length)
        return await self._read(reader, length)

    def encode(self, payload: bytes) -> bytes:
        if self.padded:
            payload += os.urandom(os.urandom(1)[0] % 4)
        return _pack_i(len(payload)) + payload


class AbridgedCodec(Codec):
    """Abridged: length/4 in one byte, or ``0x7f`` and three bytes when it is 127 or more."""

    name: Framing = "abridged"

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        first = (await self._read(reader, 1))[0]
        if first >= 0x7F:
            length = int.from_bytes(await self._read(reader, 3), "little")
        else:
            length = first
        length <<= 2
        self._check(length)
        return await self._read(reader, length)

    def encode(self, payload: bytes) -> bytes:
        n = len(payload) >> 2
        if n < 0x7F:
            return bytes((n,)) + payload
        return b"\x7f" + n.to_bytes(3, "little") + payload


_HTTP_STARTS = (b"GET ", b"POST", b"HEAD", b"PVrG", b"OPTI", b"PUT ")


async def detect(reader: asyncio.StreamReader, max_size: int = DEFAULT_MAX_SIZE) -> Codec:
    """Read the transport tag (or the start of the first frame) and return the codec.

    Raises :class:`FrameError` when the bytes fit no transport (e.g. an HTTP request).
    """
    first = await reader.readexactly(1)
    if first[0] == TAG_ABRIDGED:
        return AbridgedCodec(max_size)
    head = first + await reader.readexactly(3)
    if head == TAG_INTERMEDIATE:
        return IntermediateCodec(max_size)
    if head == TAG_PADDED:
        return IntermediateCodec(max_size, padded=True)
    if head in _HTTP_STARTS:
        raise FrameError(f"not MTProto: starts with {head!r}")
    second = await reader.readexactly(4)
    if second == b"\0\0\0\0":  # TcpFull: length, then sequence number 0
        return FullCodec(max_size, prefix=head + second)
    return _obfuscated(head + second + await reader.readexactly(56), max_size)


def _obfuscated(header: bytes, max_size: int) -> Codec:
    """The codec inside an obfuscated2 header (the client's 64 random bytes)."""
    reverse = header[55:7:-1]
    rx = AESModeCTR(bytes(header[8:40]), bytes(header[40:56]))
    tag = bytes(rx.encrypt(header))[56:60]  # advances rx past the header, as the client did
    codec: Codec
    if tag == b"\xef\xef\xef\xef":
        codec = AbridgedCodec(max_size)
    elif tag == TAG_INTERMEDIATE:
        codec = IntermediateCodec(max_size)
    elif tag == TAG_PADDED:
        codec = IntermediateCodec(max_size, padded=True)
    else:
        raise FrameError("unknown transport (neither a known tag, TcpFull nor obfuscated2)")
    codec._rx = rx
    codec._tx = AESModeCTR(bytes(reverse[:32]), bytes(reverse[32:48]))
    codec.obfuscated = True
    return codec
