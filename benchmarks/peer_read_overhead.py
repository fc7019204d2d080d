"""Benchmark: µs of CPU per call with the stub sender of ``benchmarks/stub_overhead.py`` (no
network), for calls addressed to a chat: plain Telethon, then the guarded client (account-wide
rate limit far above the achieved rate), and their difference, for

* ``history``: ``messages.getHistory(peer=InputPeerChannel)`` (a read);
* ``send``: ``messages.sendMessage(peer=InputPeerChannel, random_id=...)`` (a send);
* ``edit``: ``messages.editMessage(peer=InputPeerChannel)`` (a chat write, not idempotent);
* ``send_peer_limits``: the send on a guarded client that also has ``send_limits`` and
  ``peer_limits_group`` windows far above the achieved rate (per-chat limiter windows);
* ``state``: ``updates.getState`` (no peer field), for comparison.

Best of 5 runs of 32 tasks x 1,500 calls, ``time.process_time``. ``--compare BASE NEW``
runs this script under ``PYTHONPATH=BASE`` and ``PYTHONPATH=NEW`` alternately (``--rounds``
rounds each, interleaved A B B A ...) and prints medians and ranges side by side (see
benchmarks/README.md, "The straight lane")."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stub_overhead import _client, _per_call

CASES = ("history", "send", "edit", "send_peer_limits", "state")


async def measure() -> dict[str, Any]:
    from telethon import TelegramClient, functions, types

    from telethon_guard import GuardedTelegramClient

    plain = _client(TelegramClient)
    guarded = _client(GuardedTelegramClient, rate_limits=((1_000_000, 1.0),))
    limited = _client(GuardedTelegramClient, rate_limits=((1_000_000, 1.0),),
                      send_limits=((1_000_000, 1.0),),
                      peer_limits_group=((1_000_000, 1.0),))
    channel = types.InputPeerChannel(77, 5)
    history = functions.messages.GetHistoryRequest(
        peer=channel, offset_id=0, offset_date=None, add_offset=0,
        limit=10, max_id=0, min_id=0, hash=0)
    send = functions.messages.SendMessageRequest(peer=channel, message="hi", random_id=42)
    edit = functions.messages.EditMessageRequest(peer=channel, id=7, message="hi")
    out: dict[str, Any] = {}
    for name, req, client in (("history", history, guarded), ("send", send, guarded),
                              ("edit", edit, guarded), ("send_peer_limits", send, limited),
                              ("state", functions.updates.GetStateRequest(), guarded)):
        await _per_call(lambda r=req: plain(r), 4, 200)  # warm-up
        await _per_call(lambda r=req, c=client: c(r), 4, 200)
        p = await _per_call(lambda r=req: plain(r))
        g = await _per_call(lambda r=req, c=client: c(r))
        out[name] = {"plain_us": round(p, 2), "guard_us": round(g, 2),
                     "guard_minus_plain_us": round(g - p, 2)}
    return out


def _run(path: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=path)
    res = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, cwd=path,
                         capture_output=True, text=True, timeout=900, check=True)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}..{max(values):.2f})"


def compare(base: str, new: str, rounds: int) -> dict[str, Any]:
    """``{case: {figure: {"before": [...], "after": [...]}}}`` of ``rounds`` runs per tree,
    interleaved before, after, after, before, ..."""
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    order = [("before", base), ("after", new), ("after", new), ("before", base)]
    for i in range(rounds * 2):
        name, path = order[i % 4]
        runs[name].append(_run(path))
        print(f"round {i // 2 + 1}: {name} done", file=sys.stderr)
    return {case: {fig: {n: [r[case][fig] for r in runs[n] if case in r] for n in runs}
                   for fig in ("plain_us", "guard_us", "guard_minus_plain_us")}
            for case in CASES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", nargs=2, metavar=("BASE", "NEW"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    if not args.compare:
        print(json.dumps(asyncio.run(measure())))
        return
    table = compare(*args.compare, args.rounds)
    print(f"{'median (range), µs/call':34} {'before':>22} {'after':>22}")
    for case, figures in table.items():
        for fig, vals in figures.items():
            if vals["before"] and vals["after"]:
                print(f"{case + ' ' + fig:34} {_summary(vals['before']):>22} "
                      f"{_summary(vals['after']):>22}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
