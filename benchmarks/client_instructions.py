"""Benchmark: client instructions per call against the test server (callgrind).

``python benchmarks/client_instructions.py`` starts the embedded test server in its own
process (:class:`~telethon_guard.bench.serverproc.ServerProcess`, as the ``overhead`` bench
workload does), then runs the CLIENT alone under ``valgrind --tool=callgrind``: one connected
client (plain Telethon, or ``GuardedTelegramClient`` with the bench's non-binding account-wide
limit, ``rate_limits=((1_000_000, 1.0),)``), ``--tasks`` tasks calling
``updates.getState`` in a loop, first ``--warmup`` calls per task (not measured), then ``n``
calls per task. Each client runs twice, with ``n = --calls-low`` and ``n = --calls-high``; the
difference of the two runs' total instruction counts divided by the difference in calls is
the client's instructions per call (start-up, connecting and the warm-up cancel out). The
server's instructions are not counted (it is not under valgrind).

Prints instructions per call for plain and guarded and their ratio (plain / guarded: the
CPU-bound ``overhead`` ratio's floor, unaffected by the machine's load; see benchmarks/README.md,
"overhead"). ``--only plain|guard`` measures one client; ``--keep DIR`` keeps the callgrind
output files (``callgrind_annotate DIR/guard-high.out`` shows where the instructions go;
subtract ``guard-low.out`` by hand or compare inclusive counts); ``--json PATH`` writes the
figures. ``PYTHONHASHSEED`` is fixed so two runs of one tree hash alike.

Needs ``valgrind`` on ``PATH``. A run takes about 1-3 minutes per client on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

TASKS = 32
WARMUP = 50  # calls per task before the measured part
CALLS_LOW = 100  # calls per task, short run
CALLS_HIGH = 400  # calls per task, long run
NON_BINDING_LIMIT = ((1_000_000, 1.0),)  # the overhead workload's account-wide limit
CHILD_TIMEOUT = 1800.0  # seconds: one client run under callgrind


# ---- child: the client, run under callgrind ------------------------------------------------


async def _child(spec: dict[str, Any]) -> None:
    from telethon import TelegramClient, functions
    from telethon.sessions import StringSession

    if spec["kind"] == "guard":
        from telethon_guard.client import GuardedTelegramClient

        client: Any = GuardedTelegramClient(
            StringSession(spec["session"]), spec["api_id"], spec["api_hash"],
            rate_limits=NON_BINDING_LIMIT)
    else:
        client = TelegramClient(StringSession(spec["session"]), spec["api_id"],
                                spec["api_hash"])
    req = functions.updates.GetStateRequest()
    await asyncio.wait_for(client.connect(), 120)
    errors = 0

    async def worker(n: int) -> None:
        nonlocal errors
        for _ in range(n):
            try:
                await client(req)
            except Exception:
                errors += 1

    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(spec["warmup"]) for _ in range(spec["tasks"]))), 600)
        await asyncio.wait_for(
            asyncio.gather(*(worker(spec["calls"]) for _ in range(spec["tasks"]))), 1200)
    finally:
        await asyncio.wait_for(client.disconnect(), 60)
    print(json.dumps({"errors": errors}), flush=True)


# ---- parent --------------------------------------------------------------------------------


def _total(out_file: str) -> int:
    """Total instructions (``Ir``) of a callgrind output file: the ``totals:`` line."""
    with open(out_file) as f:
        for line in f:
            m = re.match(r"(?:totals|summary):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no totals in {out_file}")


def _run_child(spec: dict[str, Any], out_file: str) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "TG_CLIENT_INSTR": json.dumps(spec)}
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
           sys.executable, os.path.abspath(__file__), "--child"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"client run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    if answer["errors"]:
        raise RuntimeError(f"{answer['errors']} calls failed in the {spec['kind']} run")
    return _total(out_file)


async def _measure(args: argparse.Namespace, out_dir: str) -> dict[str, Any]:
    from telethon_guard.bench.serverproc import ServerProcess

    kinds = [args.only] if args.only else ["plain", "guard"]
    result: dict[str, Any] = {"tasks": args.tasks, "warmup": args.warmup,
                              "calls_low": args.calls_low, "calls_high": args.calls_high}
    async with ServerProcess() as srv:
        for kind in kinds:
            totals = {}
            for label, n in (("low", args.calls_low), ("high", args.calls_high)):
                # A fresh account per run: each run starts from the same server state.
                ((session, _),) = await srv.sessions(1)
                spec = {"kind": kind, "session": session, "api_id": srv.api_id,
                        "api_hash": srv.api_hash, "tasks": args.tasks,
                        "warmup": args.warmup, "calls": n}
                out_file = os.path.join(out_dir, f"{kind}-{label}.out")
                t = time.monotonic()
                # The client runs in a thread so this loop keeps serving the server's pipe.
                totals[label] = await asyncio.to_thread(_run_child, spec, out_file)
                print(f"  {kind} {label} ({n} calls/task): {totals[label]:,} instructions "
                      f"({time.monotonic() - t:.0f} s)", file=sys.stderr, flush=True)
            calls = args.tasks * (args.calls_high - args.calls_low)
            result[f"{kind}_instructions_per_call"] = round(
                (totals["high"] - totals["low"]) / calls, 1)
    if "plain_instructions_per_call" in result and "guard_instructions_per_call" in result:
        result["ratio"] = round(result["plain_instructions_per_call"]
                                / result["guard_instructions_per_call"], 4)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tasks", type=int, default=TASKS)
    p.add_argument("--warmup", type=int, default=WARMUP, help="calls per task, not measured")
    p.add_argument("--calls-low", type=int, default=CALLS_LOW, help="calls per task, short run")
    p.add_argument("--calls-high", type=int, default=CALLS_HIGH, help="calls per task, long run")
    p.add_argument("--only", choices=["plain", "guard"])
    p.add_argument("--keep", metavar="DIR", help="keep the callgrind output files in DIR")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    if args.child:
        asyncio.run(_child(json.loads(os.environ["TG_CLIENT_INSTR"])))
        return 0
    if args.calls_high <= args.calls_low:
        p.error("--calls-high must exceed --calls-low")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        result = asyncio.run(_measure(args, args.keep))
    else:
        with tempfile.TemporaryDirectory() as d:
            result = asyncio.run(_measure(args, d))
    for kind in ("plain", "guard"):
        key = f"{kind}_instructions_per_call"
        if key in result:
            print(f"{kind:5} {result[key]:>12,.0f} instructions per call")
    if "ratio" in result:
        print(f"ratio (plain / guarded) {result['ratio']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
