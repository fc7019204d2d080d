"""A restarted process, for tests/durable: builds a ``GuardedTelegramClient`` on a file
session and makes one call; prints one JSON line with the outcome.

Run as ``python restart_child.py '<json>'`` with ``session`` (path without ``.session``),
``api_id``, ``api_hash``, ``action`` (``"resolve"``: ``contacts.resolveUsername(username)``;
``"bot"``: ``client.start(bot_token=token)``; ``"record"``: write ``count`` flood blocks through
a bare store at ``path`` (concurrent writers)) and optional ``guard`` keyword arguments;
``string_session`` (``[dc_id, host, port]``, with the server's ``rsa_pem``) replaces the file
session by an in-memory one on a new auth key; ``logged_in_session`` by a logged-in
``StringSession``; ``wait_for_file``: connect, create ``<file>.ready``, then wait (bounded)
until ``<file>`` exists before the call (a process already running when another one learns a
flood).
Every wait is bounded (``bound`` seconds, default 20).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


async def until_exists(path: str) -> None:
    """Return once ``path`` exists, polling every 50 ms (the caller bounds the wait)."""
    while True:
        if await asyncio.to_thread(os.path.exists, path):
            return
        await asyncio.sleep(0.05)


async def run_client(args: dict[str, Any]) -> dict[str, Any]:
    from telethon.tl import functions

    from telethon_guard import GuardedTelegramClient

    bound = float(args.get("bound", 20.0))
    session: Any = args["session"]
    if "string_session" in args:  # an in-memory session: a new auth key (DH exchange)
        from telethon.sessions import StringSession

        from telethon_guard.testing.crypto import load_rsa_key, register_public_key

        register_public_key(load_rsa_key(args["rsa_pem"]))
        session = StringSession()
        session.set_dc(*args["string_session"])  # (dc_id, host, port), no auth key
    elif "logged_in_session" in args:  # a StringSession with a key the server knows
        from telethon.sessions import StringSession

        session = StringSession(args["logged_in_session"])
    client = GuardedTelegramClient(
        session, args["api_id"], args["api_hash"], receive_updates=False,
        request_retries=1, connection_retries=1, retry_delay=0.1, timeout=5,
        **args.get("guard", {}))
    store = client.guard.pipeline.storage.persist  # type: ignore[attr-defined]
    out: dict[str, Any] = {"durable": None if store is None else store.path}
    started = time.monotonic()
    try:
        if args["action"] == "bot":
            await asyncio.wait_for(client.start(bot_token=args["token"]), bound)
        else:
            await asyncio.wait_for(client.connect(), bound)
            if "wait_for_file" in args:  # running, connected: until the test says "now"
                trigger = args["wait_for_file"]
                await asyncio.to_thread(Path(trigger + ".ready").touch)
                await asyncio.wait_for(until_exists(trigger), bound)
                out["waited_for_file"] = True
            await asyncio.wait_for(
                client(functions.contacts.ResolveUsernameRequest(args["username"])), bound)
        out["outcome"] = "ok"
    except Exception as exc:  # reported to the test, which asserts on it
        out.update(outcome="error", type=type(exc).__name__,
                   seconds=getattr(exc, "seconds", None),
                   retry_after=getattr(exc, "retry_after", None),
                   key=getattr(exc, "key", None),
                   from_server=getattr(exc, "from_server", None))
    finally:
        out["elapsed"] = time.monotonic() - started
        await asyncio.wait_for(client.disconnect(), bound)
    return out


def record(args: dict[str, Any]) -> dict[str, Any]:
    from telethon_guard.storage.memory import MemoryStorage
    from telethon_guard.storage.sqlite import SQLiteStore

    memory = MemoryStorage()
    store = SQLiteStore.open(args["path"])
    store.attach(memory)
    for i in range(int(args["count"])):
        memory.flood_block_sync(f"acct:{args['name']}/method:m{i}", 600.0)
        memory.flood_block_sync("acct:shared/method:both", 100.0 + i)
    return {"outcome": "ok", "write_errors": store.write_errors}


def main() -> None:
    args = json.loads(sys.argv[1])
    if args["action"] == "record":
        out = record(args)
    else:
        out = asyncio.run(run_client(args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
