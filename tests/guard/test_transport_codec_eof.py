"""The guard's codec wrapper turns the end of the stream into a lost connection in every
Telethon the guard supports.

Telethon 1.43's ``FullPacketCodec.read_packet`` (TcpFull, the default framing) returns the
partial header when the stream ends instead of raising, so after a server's close its receive
loop reads an empty "packet" forever (a busy loop; the guard's reconnect never starts: found by
``tests/integration/test_reconnect_budget_order.py`` on 1.43). 1.44 re-raises. The wrapper must
raise in both cases; this test runs the installed Telethon's codec and 1.43's read, copied.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from telethon.errors import InvalidBufferError
from telethon.network.connection.tcpfull import FullPacketCodec

from telethon_guard._transport_codec import TransportErrorCodec


class Telethon143FullCodec(FullPacketCodec):  # type: ignore[misc]
    """``FullPacketCodec.read_packet`` as Telethon 1.43 has it, up to the header (the part
    that changed in 1.44)."""

    async def read_packet(self, reader: Any) -> bytes:
        try:
            packet_len_seq: bytes = await reader.readexactly(8)
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        return packet_len_seq


def _ended_stream(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@pytest.mark.parametrize("inner", [FullPacketCodec, Telethon143FullCodec])
async def test_a_closed_stream_raises_instead_of_returning_an_empty_packet(inner: Any) -> None:
    codec = TransportErrorCodec(inner(None))
    with pytest.raises(asyncio.IncompleteReadError):
        await asyncio.wait_for(codec.read_packet(_ended_stream(b"")), 5)
    with pytest.raises(asyncio.IncompleteReadError):  # a header cut short
        await asyncio.wait_for(codec.read_packet(_ended_stream(b"\x01\x02\x03")), 5)


@pytest.mark.parametrize("inner", [FullPacketCodec, Telethon143FullCodec])
async def test_a_lone_transport_error_then_the_end_is_that_error(inner: Any) -> None:
    codec = TransportErrorCodec(inner(None))
    with pytest.raises(InvalidBufferError) as info:
        await asyncio.wait_for(codec.read_packet(_ended_stream(struct.pack("<i", -429))), 5)
    assert info.value.code == 429
