"""Issue 15 item 4: a parallel transfer opens without a burst of floods (real Telethon, real
sockets).

64 file parts start at once (FastTelethon-style parallel workers); the server accepts 20
``upload.saveFilePart`` per second and answers ``FLOOD_WAIT`` above that. Every part already in
flight when the limit is crossed comes back as a flood: with the guard's default bound (16
parts in flight per account and method, Telegram Desktop's ``kMaxFileQueries``) at most 16;
unbounded (``transfer_concurrency=None``, and plain Telethon) the whole burst above the limit.
Unbounded, the guard also fails parts: the pace learned from the opening floods makes some of
the 64 queued parts wait longer than Telegram's X = 1 s, and such a part fails with
``FloodWaitBlocked`` by design (pacing.py); bounded, every part is stored.
"""

from __future__ import annotations

import asyncio
from typing import Any

from telethon.tl import functions

from telethon_guard import GuardedTelegramClient
from telethon_guard.testing.faults_limits import FloodWindow
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import bounded, measured

PARTS, LIMIT = 64, 20
FILE_ID = 5151


async def _burst(server: TelegramTestServer, client: Any) -> dict[str, Any]:
    async def part(n: int) -> None:
        await client(functions.upload.SaveFilePartRequest(
            file_id=FILE_ID, file_part=n, bytes=bytes([n % 256]) * 256))

    outcomes = await bounded(
        asyncio.gather(*(part(n) for n in range(PARTS)), return_exceptions=True), 60)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    floods = sorted(e.time for e in server.log.requests("upload.saveFilePart", "rpc_error")
                    if (e.error_message or "").startswith("FLOOD_WAIT"))
    opening = [t for t in floods if t < floods[0] + 0.5] if floods else []
    arrivals = sorted(e.time for e in server.log.requests("upload.saveFilePart"))
    return {"stored": len(server.world.uploaded_parts(FILE_ID)), "failed": failed,
            "opening_floods": len(opening),
            "floods": len(floods), "seconds": arrivals[-1] - arrivals[0]}


async def _run(**kwargs: Any) -> dict[str, Any]:
    server = TelegramTestServer()
    server.faults.add(FloodWindow("upload.saveFilePart", LIMIT, 1.0))
    async with server:
        client = server.client(**kwargs)
        async with client:
            return await _burst(server, client)


async def test_a_parallel_upload_opens_with_at_most_the_bound_of_floods() -> None:
    bounded_run = await _run(cls=GuardedTelegramClient, deadline=30, max_flood_wait=10)
    assert bounded_run["stored"] == PARTS and not bounded_run["failed"]
    assert 1 <= bounded_run["opening_floods"] <= 16
    # Control: the same burst unbounded draws a flood for every part in flight above the limit.
    unbounded = await _run(cls=GuardedTelegramClient, deadline=30, max_flood_wait=10,
                           transfer_concurrency=None)
    assert unbounded["opening_floods"] > 16
    plain = await _run(request_retries=5)
    measured("parallel_upload_64_parts_limit_20_per_s",
             guard_opening_floods=bounded_run["opening_floods"],
             guard_floods=bounded_run["floods"], guard_seconds=bounded_run["seconds"],
             guard_failed=len(bounded_run["failed"]),
             unbounded_opening_floods=unbounded["opening_floods"],
             unbounded_failed=len(unbounded["failed"]),
             unbounded_floods=unbounded["floods"], unbounded_seconds=unbounded["seconds"],
             plain_opening_floods=plain["opening_floods"], plain_floods=plain["floods"],
             plain_stored=plain["stored"], plain_failed=len(plain["failed"]),
             plain_seconds=plain["seconds"])
