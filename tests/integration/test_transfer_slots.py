"""Issue 15 item 4: a parallel transfer opens without a burst of floods (real Telethon, real
sockets).

64 file parts start at once (FastTelethon-style parallel workers), uploaded
(``upload.saveFilePart``) or downloaded (``upload.getFile``, 4 KiB parts of the world's
256 KiB file); the server accepts 20 of them per second and answers ``FLOOD_WAIT`` above
that. Every part already in flight when the limit is crossed comes back as a flood: with the
guard's default bound (16 parts in flight per account and method, Telegram Desktop's
``kMaxFileQueries``) at most 16; unbounded (``transfer_concurrency=None``, and plain
Telethon) the whole burst above the limit. Every part is stored in each run (the figures
also count parts that failed: before pacing.py bounded a pace's wait by the deadline instead
of Telegram's X, the unbounded guard failed 23 of the 64 with ``FloodWaitBlocked``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.testing.faults_limits import FloodWindow
from telethon_guard.testing.server import TelegramTestServer
from telethon_guard.testing.world_state import WorldConfig

from ._client_helpers import bounded, measured

PARTS, LIMIT = 64, 20
FILE_ID = 5151


async def _burst(server: TelegramTestServer, client: Any, method: str) -> dict[str, Any]:
    doc = server.world.file_document()
    where = types.InputDocumentFileLocation(doc.id, doc.access_hash, doc.file_reference, "")
    got: dict[int, bytes] = {}

    async def part(n: int) -> None:
        if method == "upload.saveFilePart":
            await client(functions.upload.SaveFilePartRequest(
                file_id=FILE_ID, file_part=n, bytes=bytes([n % 256]) * 256))
        else:
            got[n] = (await client(functions.upload.GetFileRequest(where, n * 4096, 4096))).bytes

    outcomes = await bounded(
        asyncio.gather(*(part(n) for n in range(PARTS)), return_exceptions=True), 60)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    floods = sorted(e.time for e in server.log.requests(method, "rpc_error")
                    if (e.error_message or "").startswith("FLOOD_WAIT"))
    opening = [t for t in floods if t < floods[0] + 0.5] if floods else []
    arrivals = sorted(e.time for e in server.log.requests(method))
    stored = (len(server.world.uploaded_parts(FILE_ID)) if method == "upload.saveFilePart"
              else sum(1 for n, b in got.items()
                       if b == server.world.file_bytes()[n * 4096:(n + 1) * 4096]))
    return {"stored": stored, "failed": failed,
            "opening_floods": len(opening),
            "floods": len(floods), "seconds": arrivals[-1] - arrivals[0]}


async def _run(method: str, **kwargs: Any) -> dict[str, Any]:
    server = TelegramTestServer(world_config=WorldConfig(file_dc=1, file_size=PARTS * 4096))
    server.faults.add(FloodWindow(method, LIMIT, 1.0))
    async with server:
        client = server.client(**kwargs)
        async with client:
            return await _burst(server, client, method)


@pytest.mark.parametrize("method", ["upload.saveFilePart", "upload.getFile"])
async def test_a_parallel_transfer_opens_with_at_most_the_bound_of_floods(method: str) -> None:
    bounded_run = await _run(method, cls=GuardedTelegramClient, deadline=30, max_flood_wait=10)
    assert bounded_run["stored"] == PARTS and not bounded_run["failed"]
    assert 1 <= bounded_run["opening_floods"] <= 16
    # Control: the same burst unbounded draws a flood for every part in flight above the limit.
    unbounded = await _run(method, cls=GuardedTelegramClient, deadline=30, max_flood_wait=10,
                           transfer_concurrency=None)
    assert unbounded["opening_floods"] > 16
    plain = await _run(method, request_retries=5)
    measured(f"parallel_{method}_64_parts_limit_20_per_s",
             guard_opening_floods=bounded_run["opening_floods"],
             guard_floods=bounded_run["floods"], guard_seconds=bounded_run["seconds"],
             guard_failed=len(bounded_run["failed"]),
             unbounded_opening_floods=unbounded["opening_floods"],
             unbounded_failed=len(unbounded["failed"]),
             unbounded_floods=unbounded["floods"], unbounded_seconds=unbounded["seconds"],
             plain_opening_floods=plain["opening_floods"], plain_floods=plain["floods"],
             plain_stored=plain["stored"], plain_failed=len(plain["failed"]),
             plain_seconds=plain["seconds"])
