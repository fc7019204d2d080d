"""One worker process of the multi-process Redis tests (run as a script, not collected).

``python redis_worker.py '<json config>'``: connects a ``GuardedTelegramClient`` to the test
server with ``storage=<redis url>`` and the shared ``account`` key, prints ``{"ready": true}``,
then answers JSON-lines commands read from stdin, one JSON line each on stdout:

* ``{"cmd": "load", "start": T0, "duration": D, "tasks": K}``: from monotonic time ``T0`` (the
  same clock in every process on this machine) until ``T0 + D``, ``K`` tasks call
  ``messages.getHistory`` back to back; replies ``{"ok": n, "errors": {type: count},
  "fallbacks": [reason, ...]}`` (``StorageFallback`` events of the run: Redis did not answer
  and this process used its local state).
* ``{"cmd": "call", "method": "history" | "me"}``: one call; replies ``{"ok": bool, "error":
  type name, "from_server": bool | null, "seconds": float | null, "elapsed": seconds}``.
* ``{"cmd": "breaker"}``: ``{"state": ..., "retry_after": ...}`` of this account's DC 1 breaker.
* ``{"cmd": "paces"}``: ``{"paces": client.guard.stats()["paces"]}``.
* ``{"cmd": "quit"}``: disconnect and exit.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from typing import Any

from telethon.sessions import StringSession
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.events import StorageFallback


def _history() -> Any:
    return functions.messages.GetHistoryRequest(
        peer=types.InputPeerSelf(), offset_id=0, offset_date=None, add_offset=0, limit=1,
        max_id=0, min_id=0, hash=0)


def _me() -> Any:
    return functions.users.GetUsersRequest([types.InputUserSelf()])


def _reply(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def _one(client: GuardedTelegramClient, method: str) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(client(_history() if method == "history" else _me()), 15)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__,
                "from_server": getattr(exc, "from_server", None),
                "seconds": getattr(exc, "seconds", None),
                "elapsed": time.monotonic() - t0}
    return {"ok": True, "error": None, "from_server": None, "seconds": None,
            "elapsed": time.monotonic() - t0}


async def _load(client: GuardedTelegramClient, start: float, duration: float,
                tasks: int) -> dict[str, Any]:
    ok = 0
    errors: collections.Counter[str] = collections.Counter()
    end = start + duration
    fallbacks: list[str] = []

    def on_event(event: Any) -> None:
        if isinstance(event, StorageFallback) and event.active:
            fallbacks.append(event.reason)

    unsubscribe = client.guard.events.subscribe(on_event, request_events=False)

    async def worker() -> None:
        nonlocal ok
        while time.monotonic() < end:
            try:
                await client(_history())
                ok += 1
            except Exception as exc:
                errors[type(exc).__name__] += 1
                await asyncio.sleep(0.01)

    await asyncio.sleep(max(0.0, start - time.monotonic()))
    running = [asyncio.create_task(worker()) for _ in range(tasks)]
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    for t in running:
        t.cancel()  # those still waiting for a slot give it back
    await asyncio.gather(*running, return_exceptions=True)
    unsubscribe()
    return {"ok": ok, "errors": dict(errors), "fallbacks": fallbacks}


async def main(cfg: dict[str, Any]) -> None:
    session = StringSession(cfg["session"])
    client = GuardedTelegramClient(
        session, cfg["api_id"], cfg["api_hash"], receive_updates=False,
        request_retries=1, connection_retries=1, retry_delay=0.1, timeout=5,
        **cfg["guard"])
    await asyncio.wait_for(client.connect(), 15)
    # Warm-up, so the first measured burst is not slowed by opening Redis connections (one per
    # concurrent caller) or by Telethon's first request: its latency would differ from later
    # bursts'.
    storage = client.guard.pipeline.storage
    await asyncio.wait_for(asyncio.gather(*(storage.breaker_state("acct:warm-up/dc:1")
                                            for _ in range(8))), 10)
    await asyncio.wait_for(client(_me()), 10)
    _reply({"ready": True})
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                break
            if cmd["cmd"] == "load":
                _reply(await _load(client, cmd["start"], cmd["duration"], cmd["tasks"]))
            elif cmd["cmd"] == "call":
                _reply(await _one(client, cmd["method"]))
            elif cmd["cmd"] == "breaker":
                pipeline = client.guard.pipeline
                key = f"acct:{cfg['guard']['account']}/dc:1"
                d = await pipeline.breaker.state(key)
                _reply({"state": d.state, "retry_after": d.retry_after})
            elif cmd["cmd"] == "paces":
                _reply({"paces": client.guard.stats()["paces"]})
            else:
                _reply({"error": f"unknown command {cmd!r}"})
    finally:
        await asyncio.wait_for(client.disconnect(), 10)
        await client.guard.pipeline.storage.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
