"""Liveness detection and recovery times (issue 10, item 2), over several runs.

Three scenarios against ``telethon_guard.testing`` (real Telethon, real sockets, server in this
process), each run ``--runs`` times with ``liveness_timeout`` / ``keepalive_interval`` from the
options:

* ``silent+pending``: the client's connection goes silent for ever (``OnLiveConnections``),
  then ``get_me()`` is sent. Detection = from sending it to the watchdog replacing the
  connection; recovery = from sending it to its answer (on the new connection).
* ``silent idle``: the connection goes silent with nothing pending. Detection = from the last
  message received to the replacement; recovery = from the last message received to a pushed
  update reaching the handler on the new connection.
* ``very old``: the server stamps its replies 400 s in the past for 1.5 s
  (``ClockSkew(-400, judge_client=False)``: replies after a long event-loop stall); Telethon
  drops ``get_me()``'s reply. Detection / recovery as for ``silent+pending``.

Prints median and range (seconds) per scenario, and the documented bounds
(``LivenessPolicy.silent_bound`` / ``idle_bound``). ``--json PATH`` writes the raw times.

    python benchmarks/liveness_times.py [--runs 5] [--timeout 2] [--keepalive 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from telethon import events

from telethon_guard import GuardedTelegramClient
from telethon_guard._telethon import main_sender
from telethon_guard.liveness import LivenessPolicy
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import ClockSkew, OnLiveConnections

BOUND = 60.0  # seconds: any single wait


async def _wait(cond: Any) -> None:
    end = time.monotonic() + BOUND
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("scenario did not recover within 60 s")
        await asyncio.sleep(0.01)


async def one_run(kind: str, timeout: float, keepalive: float) -> tuple[float, float]:
    """One scenario: ``(detection, recovery)`` in seconds."""
    async with TelegramTestServer() as server:
        client = server.client(GuardedTelegramClient,
                               session=server.session(server.world.user_id("bob")),
                               liveness_timeout=timeout, keepalive_interval=keepalive,
                               deadline=BOUND)
        got: list[tuple[str, float]] = []

        async def on_message(event: Any) -> None:
            got.append((event.raw_text, time.monotonic()))

        client.add_event_handler(on_message, events.NewMessage())
        async with client:
            sender = main_sender(client)
            await asyncio.wait_for(client.get_me(), BOUND)
            server.push_message("carol", "bob", "before")
            await _wait(lambda: bool(got))
            conn = server.log.events("opened")[-1].conn_id
            if kind == "very old":
                server.faults.add(ClockSkew(-400, start=server.faults.now(), duration=1.5,
                                            judge_client=False))
            else:
                server.faults.add(OnLiveConnections("silence", start=server.faults.now(),
                                                    conn_ids={conn}))
            if kind == "silent idle":
                start = got[-1][1]
                await _wait(lambda: sender.liveness_replaced_at is not None)
                # push until the new connection has asked for updates (its first request)
                while not server.push_message("carol", "bob", "after").pushed:
                    if time.monotonic() - start > BOUND:
                        raise TimeoutError("updates did not resume within 60 s")
                    await asyncio.sleep(0.05)
                await _wait(lambda: got[-1][0] != "before")
                return sender.liveness_replaced_at - start, got[-1][1] - start
            start = time.monotonic()
            await asyncio.wait_for(client.get_me(), BOUND)
            done = time.monotonic()
            assert sender.liveness_replacements == 1, "no replacement"
            return sender.liveness_replaced_at - start, done - start


def _summary(values: list[float]) -> str:
    return (f"median {statistics.median(values):.2f} s "
            f"(range {min(values):.2f}-{max(values):.2f})")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=2.0, help="liveness_timeout, s")
    ap.add_argument("--keepalive", type=float, default=1.0, help="keepalive_interval, s")
    ap.add_argument("--json", help="write the raw times here")
    args = ap.parse_args(argv)
    policy = LivenessPolicy(args.timeout, args.keepalive)
    out: dict[str, Any] = {"timeout": args.timeout, "keepalive": args.keepalive,
                           "silent_bound": policy.silent_bound,
                           "idle_bound": policy.idle_bound, "runs": {}}
    for kind in ("silent+pending", "silent idle", "very old"):
        times = [asyncio.run(one_run(kind, args.timeout, args.keepalive))
                 for _ in range(args.runs)]
        out["runs"][kind] = times
        bound = policy.idle_bound if kind == "silent idle" else policy.silent_bound
        print(f"{kind:15} detection {_summary([d for d, _ in times])}, "
              f"recovery {_summary([r for _, r in times])}; bound {bound:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
