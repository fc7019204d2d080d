"""Raw transport errors in every framing: Telethon's packet codec wrapped so that 4 bytes
of a negative int32 (``-429``, ``-404``...) surface as ``InvalidBufferError`` with that code.

With Intermediate / Abridged framing, 4 raw bytes of ``-429`` are not a valid frame; Telethon
would see a ``ValueError`` or a short read. :class:`TransportErrorCodec` reads the same bytes
and, when a packet ends after exactly 4 bytes of a negative int32, raises
``InvalidBufferError(code)`` (needed to tell a permanent -404 from a -429).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from telethon.errors import InvalidBufferError
from telethon.network.connection.connection import Connection, PacketCodec
from telethon.network.connection.tcpabridged import AbridgedPacketCodec
from telethon.network.connection.tcpfull import FullPacketCodec
from telethon.network.connection.tcpintermediate import (
    IntermediatePacketCodec,
    RandomizedIntermediatePacketCodec,
)

from ._telethon import codec_connection

__all__ = ["TransportErrorCodec", "framing_of"]


def framing_of(connection: Connection | None) -> str | None:
    """``"full"``, ``"intermediate"``, ``"padded"`` or ``"abridged"`` for a Telethon connection."""
    if connection is None:
        return None
    codec = getattr(connection, "packet_codec", None)
    if not isinstance(codec, type):
        return None
    if issubclass(codec, FullPacketCodec):
        return "full"
    if issubclass(codec, RandomizedIntermediatePacketCodec):
        return "padded"
    if issubclass(codec, IntermediatePacketCodec):
        return "intermediate"
    if issubclass(codec, AbridgedPacketCodec):
        return "abridged"
    return codec.__name__


class _RecordingReader:
    """Proxy of a stream reader that counts the bytes read for the current packet and keeps
    the first four (a transport error is a lone negative int32). One per codec, reused for
    every packet of its connection (:meth:`start` resets it); nothing is copied past the
    first four bytes."""

    __slots__ = ("_inner", "eof", "head", "size")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.head = b""
        self.size = 0
        self.eof = False
        """The stream ended inside this packet (an ``IncompleteReadError`` went through)."""

    def start(self) -> None:
        """Begin a new packet."""
        self.head = b""
        self.size = 0
        self.eof = False

    async def readexactly(self, n: int) -> bytes:
        try:
            chunk: bytes = await self._inner.readexactly(n)
        except asyncio.IncompleteReadError as e:
            self._note(e.partial)
            self.eof = True
            raise
        if self.size < 4:
            self.head += chunk[:4]
        self.size += len(chunk)
        return chunk

    def _note(self, chunk: bytes) -> None:
        if self.size < 4:
            self.head += chunk[:4]
        self.size += len(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class TransportErrorCodec(PacketCodec):
    """Wraps a Telethon packet codec: 4 bytes of a negative int32 followed by the end of the
    stream (or read as a negative length) raise ``InvalidBufferError`` with that code."""

    def __init__(self, inner: PacketCodec) -> None:
        self._inner = inner
        self._conn = codec_connection(inner)  # PacketCodec's attribute, as Telethon sets it
        self._rec: _RecordingReader | None = None

    def encode_packet(self, data: bytes) -> bytes:
        return self._inner.encode_packet(data)

    async def read_packet(self, reader: Any) -> bytes:
        rec = self._rec
        if rec is None or rec._inner is not reader:
            rec = self._rec = _RecordingReader(reader)
        else:
            rec.start()
        try:
            body: bytes = await self._inner.read_packet(rec)
        except (asyncio.IncompleteReadError, ValueError) as e:
            self._raise_if_transport_error(rec, e)
            raise
        if rec.eof:
            # Telethon < 1.44's TcpFull codec returns the partial header when the stream ends
            # instead of raising: after a server's close (FIN) its receive loop then reads an
            # empty "packet" forever, a busy loop nobody notices. The end of the stream is
            # what it is: a lost connection (or the transport error it carried).
            end = asyncio.IncompleteReadError(bytes(rec.head), None)
            self._raise_if_transport_error(rec, end)
            raise end
        return body

    @staticmethod
    def _raise_if_transport_error(rec: _RecordingReader, cause: BaseException) -> None:
        data = rec.head
        if rec.size == 4 and struct.unpack("<i", data[:4])[0] < 0:
            raise InvalidBufferError(bytes(data[:4])) from cause

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
