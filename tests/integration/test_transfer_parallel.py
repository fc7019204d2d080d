"""Issue 15 item 4 with exported senders: a FastTelethon-style download (real Telethon, real
sockets, the file on the server's second DC).

The file (64 parts of 4 KiB) is on DC 2; the client is on DC 1. As FastTelethon does, the
caller builds 8 senders to DC 2 itself (the first imports an authorization exported from DC 1,
with a new auth key from a DH exchange; the others reuse the key) and each downloads every 8th
part in turn with ``client._call(sender, GetFileRequest(...))``. The server accepts 20
``upload.getFile`` per second per account (on every DC) and answers ``FLOOD_WAIT`` above it.

Guarded, every part goes through the pipeline (the window of parts in flight is the account's,
across the 8 senders): the download opens with at most 4 parts in flight (the start window)
and so draws at most 4 floods when it meets the limit, every part arrives with the right bytes,
and nothing hangs. Plain Telethon opens with one part per sender in flight and sleeps its
floods itself; its figures are printed beside the guard's (``pytest -s``).

Also: the same under ``FLOOD_PREMIUM_WAIT`` (non-premium throttling per account and DC),
FastTelethon's upload (8 senders of its own on the client's DC, ``upload.saveBigFilePart``,
every stored part's SHA-256 checked), and 8 ``download_media`` at once through Telethon's own
borrowed sender.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from telethon import TelegramClient
from telethon.tl import types

from telethon_guard import GuardedTelegramClient
from telethon_guard.testing.faults_limits import FloodWindow, PremiumFlood
from telethon_guard.testing.server import TelegramTestServer
from telethon_guard.testing.world_state import WorldConfig

from ._client_helpers import TEST_RSA_KEY, InvokeRecorder, bounded, measured
from ._fast_transfer import (
    close_senders,
    document_location,
    exported_senders,
    parallel_download,
    parallel_upload,
)

PARTS, PART, LIMIT, SENDERS = 64, 4096, 20, 8
UPLOAD_ID = 6161
START = 4  # GuardConfig.transfer_start_parts default


def _server(premium: bool = False) -> TelegramTestServer:
    server = TelegramTestServer(world_config=WorldConfig(file_dc=2, file_size=PARTS * PART),
                                rsa_key=TEST_RSA_KEY)
    if premium:  # FLOOD_PREMIUM_WAIT_2 above 20 parts per second per (account, DC)
        server.faults.add(PremiumFlood(LIMIT, 2))
    else:
        server.faults.add(FloodWindow("upload.getFile", LIMIT, 1.0))
    return server


def _bursts(times: list[float]) -> list[int]:
    """Floods per burst (floods less than 0.5 s after the burst's first)."""
    out: list[int] = []
    first = None
    for t in times:
        if first is None or t >= first + 0.5:
            first = t
            out.append(0)
        out[-1] += 1
    return out


async def _download(server: TelegramTestServer, client: TelegramClient) -> dict[str, Any]:
    doc = server.world.file_document()
    assert doc.dc_id == 2 and client.session.dc_id == 1
    senders = await bounded(exported_senders(client, doc.dc_id, SENDERS), 60)
    try:
        got = await bounded(parallel_download(client, senders, document_location(doc),
                                              PARTS * PART, PART), 60)
    finally:
        await close_senders(senders)
    entries = server.log.requests("upload.getFile")
    floods = sorted(e.time for e in entries if (e.error_message or "").startswith("FLOOD"))
    accepted = sorted(e.time for e in entries if e.outcome == "ok")
    return {
        "bursts": _bursts(floods),
        "correct": got.correct(server.world.file_bytes(), PART),
        "failed": got.failed(),
        "floods": len(floods),
        "opening_floods": len([t for t in floods if t < floods[0] + 0.5]) if floods else 0,
        "dcs": {e.dc_id for e in entries},
        "accepted": len(accepted),
        "seconds": accepted[-1] - entries[0].time,
    }


async def test_a_fasttelethon_download_opens_without_a_burst_of_floods() -> None:
    async with _server() as server:
        client = server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=10)
        rec = InvokeRecorder(client.guard.pipeline)
        async with client:
            guarded = await _download(server, client)
        through_guard = rec.of("upload.getFile")
    assert guarded["correct"] == PARTS and not guarded["failed"], guarded["failed"][:3]
    assert guarded["dcs"] == {2}  # every part went to the file's DC, on the caller's senders
    assert 1 <= guarded["opening_floods"] <= START
    # every attempt the server saw went through the pipeline (one call per part, retried
    # there after a flood), so the window covered all 8 senders
    assert len(through_guard) == PARTS
    assert {c.dc_id for c in through_guard} == {2}  # the DC of the caller's senders
    assert sum(c.attempt for c in through_guard) == guarded["accepted"] + guarded["floods"]

    async with _server() as server:
        plain_client = server.client(request_retries=5)  # Telethon's default retries
        async with plain_client:
            plain = await _download(server, plain_client)
    assert plain["dcs"] == {2}
    measured("fasttelethon_8_senders_64_parts_limit_20_per_s",
             guard_opening_floods=guarded["opening_floods"], guard_floods=guarded["floods"],
             guard_correct=guarded["correct"], guard_seconds=guarded["seconds"],
             plain_opening_floods=plain["opening_floods"], plain_floods=plain["floods"],
             plain_correct=plain["correct"], plain_failed=len(plain["failed"]),
             plain_seconds=plain["seconds"])


async def test_a_fasttelethon_download_under_premium_floods_draws_a_few_per_block() -> None:
    # FLOOD_PREMIUM_WAIT_2 (non-premium transfer throttling, per account and DC): every 2 s
    # block ends with the download meeting the limit again; the window keeps each such burst
    # at the parts it has in flight (4), where plain Telethon draws one per sender (8).
    async with _server(premium=True) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=10)
        async with client:
            guarded = await _download(server, client)
    assert guarded["correct"] == PARTS and not guarded["failed"], guarded["failed"][:3]
    assert guarded["bursts"] and max(guarded["bursts"]) <= START, guarded["bursts"]
    async with _server(premium=True) as server:
        plain_client = server.client(request_retries=5)
        async with plain_client:
            plain = await _download(server, plain_client)
    measured("fasttelethon_premium_flood_2s_20_per_s",
             guard_bursts=guarded["bursts"], guard_floods=guarded["floods"],
             guard_seconds=guarded["seconds"], plain_bursts=plain["bursts"],
             plain_floods=plain["floods"], plain_correct=plain["correct"],
             plain_seconds=plain["seconds"])


async def _upload(server: TelegramTestServer, client: TelegramClient) -> dict[str, Any]:
    content = bytes(range(256)) * (PARTS * PART // 256)
    senders = await bounded(exported_senders(client, client.session.dc_id, SENDERS), 60)
    try:
        got = await bounded(parallel_upload(client, senders, UPLOAD_ID, content, PART), 60)
    finally:
        await close_senders(senders)
    stored = server.world.uploaded_parts(UPLOAD_ID)
    entries = server.log.requests("upload.saveBigFilePart")
    floods = sorted(e.time for e in entries if (e.error_message or "").startswith("FLOOD"))
    return {
        "correct": sum(1 for n, p in stored.items()
                       if p.sha256 == hashlib.sha256(content[n * PART:(n + 1) * PART]).hexdigest()),
        "failed": got.failed(), "floods": len(floods), "bursts": _bursts(floods),
        "seconds": got.seconds,
    }


async def test_a_fasttelethon_upload_opens_without_a_burst_of_floods() -> None:
    # FastTelethon's upload: 8 senders of its own on the client's DC (the session's auth
    # key), each saving every 8th upload.saveBigFilePart in turn; 20 accepted per second.
    def server() -> TelegramTestServer:
        s = TelegramTestServer()
        s.faults.add(FloodWindow("upload.saveBigFilePart", LIMIT, 1.0))
        return s

    async with server() as srv:
        client = srv.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=10)
        async with client:
            guarded = await _upload(srv, client)
    assert guarded["correct"] == PARTS and not guarded["failed"], guarded["failed"][:3]
    assert guarded["bursts"] and guarded["bursts"][0] <= START, guarded["bursts"]
    async with server() as srv:
        plain_client = srv.client(request_retries=5)
        async with plain_client:
            plain = await _upload(srv, plain_client)
    measured("fasttelethon_upload_8_senders_64_parts_limit_20_per_s",
             guard_bursts=guarded["bursts"], guard_floods=guarded["floods"],
             guard_seconds=guarded["seconds"], plain_bursts=plain["bursts"],
             plain_floods=plain["floods"], plain_correct=plain["correct"],
             plain_failed=len(plain["failed"]), plain_seconds=plain["seconds"])


async def _download_media_at_once(server: TelegramTestServer, client: TelegramClient,
                                  ) -> dict[str, int]:
    file_id = server.world.file_message_id
    file_id = file_id() if callable(file_id) else file_id
    async with client:
        msg = await bounded(client.get_messages("news", ids=file_id))
        assert isinstance(msg.media, types.MessageMediaDocument)
        datas = await bounded(asyncio.gather(
            *(client.download_media(msg, file=bytes) for _ in range(8))), 60)
    entries = server.log.requests("upload.getFile")
    floods = sorted(e.time for e in entries if (e.error_message or "").startswith("FLOOD"))
    return {"correct": sum(1 for d in datas if d == server.world.file_bytes()),
            "parts": len(entries) - len(floods), "floods": len(floods),
            "opening_floods": len([t for t in floods if t < floods[0] + 0.5]) if floods else 0}


async def test_parallel_download_media_through_the_borrowed_sender_opens_without_a_burst(
        ) -> None:
    # Telethon's own downloads of a file on another DC share one borrowed (exported) sender;
    # 8 download_media of the file at once put 8 parts in flight at a time.
    async with _server() as server:
        guarded = await _download_media_at_once(server, server.client(
            cls=GuardedTelegramClient, deadline=30, max_flood_wait=10))
    assert guarded["correct"] == 8
    assert guarded["opening_floods"] <= START
    async with _server() as server:
        plain = await _download_media_at_once(server, server.client(request_retries=5))
    measured("download_media_8_at_once", guard_parts=guarded["parts"],
             guard_opening_floods=guarded["opening_floods"], guard_floods=guarded["floods"],
             plain_correct=plain["correct"], plain_opening_floods=plain["opening_floods"],
             plain_floods=plain["floods"])
