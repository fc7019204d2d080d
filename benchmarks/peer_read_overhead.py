"""Benchmark: µs of CPU per ``client(messages.getHistory(peer=channel))`` with the stub sender
of ``benchmarks/stub_overhead.py`` (no network): plain Telethon, then the guarded client
(account-wide rate limit far above the achieved rate), and their difference; for comparison
the same for ``updates.getState`` (no peer field). Best of 5 runs of 32 tasks x 1,500 calls,
``time.process_time``. Run it under ``PYTHONPATH=<tree>`` for each tree to compare, and
interleave the runs (see benchmarks/README.md, "The straight lane")."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stub_overhead import _client, _per_call


async def main() -> None:
    from telethon import TelegramClient, functions, types

    from telethon_guard import GuardedTelegramClient

    plain = _client(TelegramClient)
    guarded = _client(GuardedTelegramClient, rate_limits=((1_000_000, 1.0),))
    history = functions.messages.GetHistoryRequest(
        peer=types.InputPeerChannel(77, 5), offset_id=0, offset_date=None, add_offset=0,
        limit=10, max_id=0, min_id=0, hash=0)
    out: dict[str, Any] = {}
    for name, req in (("history", history), ("state", functions.updates.GetStateRequest())):
        await _per_call(lambda r=req: plain(r), 4, 200)  # warm-up
        await _per_call(lambda r=req: guarded(r), 4, 200)
        p = await _per_call(lambda r=req: plain(r))
        g = await _per_call(lambda r=req: guarded(r))
        out[name] = {"plain_us": round(p, 2), "guard_us": round(g, 2),
                     "guard_minus_plain_us": round(g - p, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
