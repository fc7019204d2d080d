"""A second process of one Telegram user, for test_account_key_processes.py (run as a script,
not collected): ``python account_child.py '<json>'`` with ``session`` (a ``StringSession``
string: its own auth key of the user), ``api_id``, ``api_hash`` and ``guard`` keyword arguments
(no ``account``: the default key). Connects, makes one ``messages.getHistory`` and prints one
JSON line: the account key the guard used, and the call's outcome. Every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from telethon.sessions import StringSession
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard._link import account_key

BOUND = 20.0


async def main(args: dict[str, Any]) -> dict[str, Any]:
    client = GuardedTelegramClient(
        StringSession(args["session"]), args["api_id"], args["api_hash"],
        receive_updates=False, request_retries=1, connection_retries=1, retry_delay=0.1,
        timeout=5, **args["guard"])
    await asyncio.wait_for(client.connect(), BOUND)
    out: dict[str, Any] = {"key": account_key(client, client.guard), "error": None,
                           "from_server": None, "retry_after": None}
    started = time.monotonic()
    try:
        await asyncio.wait_for(client(functions.messages.GetHistoryRequest(
            peer=types.InputPeerSelf(), offset_id=0, offset_date=None, add_offset=0, limit=1,
            max_id=0, min_id=0, hash=0)), BOUND)
    except Exception as exc:
        out.update(error=type(exc).__name__, from_server=getattr(exc, "from_server", None),
                   retry_after=getattr(exc, "retry_after", None))
    out["elapsed"] = time.monotonic() - started
    await asyncio.wait_for(client.disconnect(), BOUND)
    await client.guard.pipeline.storage.aclose()
    return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))) + "\n")
