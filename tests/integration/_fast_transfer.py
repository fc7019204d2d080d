"""FastTelethon-style parallel downloads (mautrix-telegram's ``parallel_file_transfer.py``), for
the transfer tests and ``benchmarks/transfer_opening.py``.

The way that code works, kept here step by step: it builds its own ``MTProtoSender`` per
connection to the file's DC (the first exports the authorization from the main DC and imports
it, with a new auth key from a DH exchange; the others reuse that key), and each sender
downloads every ``n``-th part in turn with ``client._call(sender, GetFileRequest(...))``
(one part in flight per sender). Telethon's private names go through the guard's adapter
(``telethon_guard._telethon``). Every wait is bounded by the caller.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from telethon import TelegramClient
from telethon.network import MTProtoSender
from telethon.tl import functions, types
from telethon.tl.alltlobjects import LAYER

from telethon_guard import _telethon as tl


async def exported_senders(client: TelegramClient, dc_id: int, count: int) -> list[Any]:
    """``count`` connected senders to DC ``dc_id``, built as FastTelethon's ``_create_sender``:
    on another DC the first one imports an exported authorization, the others reuse its auth
    key; on the client's own DC (uploads) every one uses the session's auth key."""
    dc = await tl.get_dc(client, dc_id)
    senders: list[Any] = []
    auth_key = client.session.auth_key if dc_id == client.session.dc_id else None
    try:
        for _ in range(count):
            sender = MTProtoSender(auth_key, loggers=tl.loggers(client))
            senders.append(sender)
            await sender.connect(tl.new_connection(client, dc))
            if auth_key is None:
                auth = await client(functions.auth.ExportAuthorizationRequest(dc_id))
                init = tl.init_request(client)
                init.query = functions.auth.ImportAuthorizationRequest(
                    id=auth.id, bytes=auth.bytes)
                await sender.send(functions.InvokeWithLayerRequest(LAYER, init))
                auth_key = sender.auth_key
    except BaseException:
        await close_senders(senders)
        raise
    return senders


async def close_senders(senders: list[Any]) -> None:
    """Disconnect every sender (errors ignored)."""
    for sender in senders:
        try:
            await sender.disconnect()
        except Exception:
            pass


@dataclass
class Download:
    """The outcome of one parallel download: ``parts`` (part index -> bytes, or the exception
    its call raised) and the wall-clock seconds it took."""

    parts: dict[int, bytes | BaseException] = field(default_factory=dict)
    seconds: float = 0.0

    def failed(self) -> list[BaseException]:
        return [p for p in self.parts.values() if isinstance(p, BaseException)]

    def correct(self, content: bytes, part_size: int) -> int:
        """Parts whose bytes are exactly the file's at their offset."""
        return sum(1 for n, p in self.parts.items()
                   if isinstance(p, bytes) and p == content[n * part_size:(n + 1) * part_size])


@dataclass
class Upload:
    """The outcome of one parallel upload: ``parts`` (part index -> the server's ``True``, or
    the exception its call raised) and the wall-clock seconds it took."""

    parts: dict[int, bool | BaseException] = field(default_factory=dict)
    seconds: float = 0.0

    def failed(self) -> list[BaseException]:
        return [p for p in self.parts.values() if isinstance(p, BaseException)]


async def parallel_download(client: TelegramClient, senders: list[Any],
                            location: types.InputDocumentFileLocation, size: int,
                            part_size: int) -> Download:
    """Download ``size`` bytes of ``location`` in ``part_size`` parts, sender ``i`` taking
    parts ``i, i + n, i + 2n...`` one after the other (FastTelethon's ``DownloadSender``).
    A part whose call raises is recorded with its exception; the others go on."""
    result = Download()
    count = -(-size // part_size)
    stride = len(senders)

    async def worker(first: int, sender: Any) -> None:
        for n in range(first, count, stride):
            req = functions.upload.GetFileRequest(location, offset=n * part_size,
                                                  limit=part_size)
            try:
                got = await tl.call_on_sender(client, sender, req)
                result.parts[n] = bytes(got.bytes)
            except Exception as exc:
                result.parts[n] = exc

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i, s) for i, s in enumerate(senders)))
    result.seconds = time.monotonic() - t0
    return result


async def parallel_upload(client: TelegramClient, senders: list[Any], file_id: int,
                          content: bytes, part_size: int) -> Upload:
    """Upload ``content`` as ``upload.saveBigFilePart`` parts of ``part_size`` bytes, sender
    ``i`` taking parts ``i, i + n, i + 2n...`` one after the other (FastTelethon's
    ``UploadSender``). A part whose call raises is recorded with its exception."""
    result = Upload()
    count = -(-len(content) // part_size)
    stride = len(senders)

    async def worker(first: int, sender: Any) -> None:
        for n in range(first, count, stride):
            req = functions.upload.SaveBigFilePartRequest(
                file_id=file_id, file_part=n, file_total_parts=count,
                bytes=content[n * part_size:(n + 1) * part_size])
            try:
                result.parts[n] = bool(await tl.call_on_sender(client, sender, req))
            except Exception as exc:  # recorded per part
                result.parts[n] = exc

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i, s) for i, s in enumerate(senders)))
    result.seconds = time.monotonic() - t0
    return result


def document_location(doc: types.Document) -> types.InputDocumentFileLocation:
    """The ``InputDocumentFileLocation`` of a whole document (no thumbnail)."""
    return types.InputDocumentFileLocation(doc.id, doc.access_hash, doc.file_reference, "")
