"""Issue 15 item 4: a parallel transfer opens without a burst of floods (real Telethon, real
sockets).

64 file parts start at once (parallel workers), uploaded (``upload.saveFilePart``) or
downloaded (``upload.getFile``, 4 KiB parts of the world's 256 KiB file); the server accepts 20
of them per second and answers ``FLOOD_WAIT`` above it. Every part already in flight when the
limit is crossed comes back as a flood. The guard's window (``transfer_slots.py``) opens at 4
parts in flight and grows per second, not per answer: the limit is met within the opening
second, with at most 4 parts in flight, so at most 4 floods are drawn; then the learned pace
holds the rate. The control is the fixed bound of 16 parts in flight
(``transfer_start_parts=None``): on a local round trip 16 parts go out per round trip whatever
the limit, and 16 floods come back. With ``method_limits`` naming the limit, none. Every part
is stored in each guarded run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telethon.tl import functions

from telethon_guard import GuardedTelegramClient
from telethon_guard.testing.faults_limits import FloodWindow
from telethon_guard.testing.server import TelegramTestServer
from telethon_guard.testing.world_state import WorldConfig

from ._client_helpers import bounded, measured
from ._fast_transfer import document_location

PARTS, LIMIT = 64, 20
FILE_ID = 5151
START = 4  # GuardConfig.transfer_start_parts default


async def _burst(server: TelegramTestServer, client: Any, method: str) -> dict[str, Any]:
    where = document_location(server.world.file_document())
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
    accepted = sorted(e.time for e in server.log.requests(method, "ok"))
    stored = (len(server.world.uploaded_parts(FILE_ID)) if method == "upload.saveFilePart"
              else sum(1 for n, b in got.items()
                       if b == server.world.file_bytes()[n * 4096:(n + 1) * 4096]))
    return {"stored": stored, "failed": failed, "opening_floods": len(opening),
            "floods": len(floods), "seconds": accepted[-1] - arrivals[0]}


async def _run(method: str, **kwargs: Any) -> dict[str, Any]:
    server = TelegramTestServer(world_config=WorldConfig(file_dc=1, file_size=PARTS * 4096))
    server.faults.add(FloodWindow(method, LIMIT, 1.0))
    async with server:
        client = server.client(**kwargs)
        async with client:
            return await _burst(server, client, method)


GUARD = {"cls": GuardedTelegramClient, "deadline": 30, "max_flood_wait": 10}


@pytest.mark.parametrize("method", ["upload.saveFilePart", "upload.getFile"])
async def test_a_parallel_transfer_opens_with_at_most_the_start_window_of_floods(
        method: str) -> None:
    guarded = await _run(method, **GUARD)
    assert guarded["stored"] == PARTS and not guarded["failed"]
    assert 1 <= guarded["opening_floods"] <= START
    # Control: the fixed bound of 16 parts in flight draws a flood per part in flight.
    fixed = await _run(method, **GUARD, transfer_start_parts=None)
    assert fixed["stored"] == PARTS and not fixed["failed"]
    assert fixed["opening_floods"] > START
    plain = await _run(method, request_retries=5)  # Telethon's default retries
    measured(f"parallel_{method}_64_parts_limit_20_per_s",
             guard_opening_floods=guarded["opening_floods"], guard_floods=guarded["floods"],
             guard_seconds=guarded["seconds"],
             bound16_opening_floods=fixed["opening_floods"], bound16_floods=fixed["floods"],
             bound16_seconds=fixed["seconds"],
             plain_opening_floods=plain["opening_floods"], plain_floods=plain["floods"],
             plain_stored=plain["stored"], plain_failed=len(plain["failed"]),
             plain_seconds=plain["seconds"])


async def test_method_limits_pace_a_parallel_download_from_its_first_part() -> None:
    got = await _run("upload.getFile", **GUARD,
                     method_limits={"upload.getFile": ((LIMIT, 1.0),)})
    assert got["stored"] == PARTS and not got["failed"]
    assert got["floods"] == 0
    measured("parallel_getFile_method_limits", floods=got["floods"], seconds=got["seconds"])
