"""Benchmark: the guard's per-call CPU cost with a stub sender (no network, no server).

``python benchmarks/stub_overhead.py`` prints, for this checkout, the µs per call of

* ``plain``: Telethon's own ``client(request)`` over a stub sender whose ``send()`` returns an
  already answered future (Telethon's ``_call``: flood memo, ``process_entities``...);
* ``guard``: ``GuardedTelegramClient`` over the same stub, with an account-wide rate limit
  far above the achieved rate (every layer runs: deadline, breaker, flood ledger, limiter,
  retry, attempt), and ``guard - plain``;
* ``layers``: :meth:`Pipeline.invoke` alone with a stub ``send`` for growing layer lists
  (``attempt`` only, then each layer of :attr:`Pipeline.layers` added in order): the cost of
  each layer per call (only with the composed chain, i.e. when ``Pipeline.compose`` exists).

``--compare BASE NEW``: runs this script under ``PYTHONPATH=BASE`` and ``PYTHONPATH=NEW``
alternately (``--rounds`` rounds each, interleaved A B B A ...) and prints medians and ranges
side by side (``--json PATH`` writes them); ``--bench-rounds N`` also runs ``telethon-guard
bench --only overhead --quick`` (the CPU-bound overhead ratio against the test server in its
own process) N times per tree, interleaved the same way. 32 tasks call concurrently, as in the
``overhead`` bench workload. Times are CPU seconds of this process (``time.process_time``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

TASKS = 32
CALLS = 1500  # per task and measurement
REPEATS = 5  # measurements per figure in one process; the best one is kept


def _state() -> Any:
    from telethon.tl import types

    return types.updates.State(pts=1, qts=0, date=None, seq=0, unread_count=0)


class StubSender:
    """Answers every request at once (an already resolved future)."""

    def __init__(self) -> None:
        self.result = _state()
        self.dc_id = 2

    def send(self, request: Any, ordered: bool = False) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if isinstance(request, list):
            fut.set_result([self.result] * len(request))
        else:
            fut.set_result(self.result)
        return fut

    send_awaited = send

    def is_connected(self) -> bool:
        return True


async def _per_call(call: Any, tasks: int = TASKS, calls: int = CALLS) -> float:
    """µs of CPU per ``await call()``, best of ``REPEATS`` runs of ``tasks`` x ``calls``."""
    async def worker() -> None:
        for _ in range(calls):
            await call()

    best = float("inf")
    for _ in range(REPEATS):
        t = time.process_time()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        best = min(best, (time.process_time() - t) / (tasks * calls) * 1e6)
    return best


SELF_ID = 777000  # the logged-in user's id, as Telethon learns it at login / get_me()


def _client(cls: Any, **kw: Any) -> Any:
    from telethon.sessions import StringSession

    client = cls(StringSession(), 1, "0" * 32, **kw)
    client._sender = StubSender()
    client.session.set_dc(2, "127.0.0.1", 443)
    # Logged in, as the bench's clients are (the guard's account key is then user:<id>,
    # learned once; before login it is re-derived per call from the auth key).
    cache = getattr(client, "_mb_entity_cache", None)
    if cache is not None:
        cache.self_id = SELF_ID
    return client


async def measure() -> dict[str, Any]:
    from telethon import TelegramClient, functions

    from telethon_guard import GuardedTelegramClient
    from telethon_guard.config import GuardConfig
    from telethon_guard.pipeline import Pipeline

    out: dict[str, Any] = {}
    plain = _client(TelegramClient)
    guarded = _client(GuardedTelegramClient, rate_limits=((1_000_000, 1.0),))
    req = functions.updates.GetStateRequest()
    # warm-up (caches, first-call paths)
    await _per_call(lambda: plain(req), 4, 200)
    await _per_call(lambda: guarded(req), 4, 200)
    p = await _per_call(lambda: plain(req))
    g = await _per_call(lambda: guarded(req))
    out["plain_us"] = p
    out["guard_us"] = g
    out["guard_minus_plain_us"] = g - p

    # Pipeline.invoke alone, growing layer lists: what invoke runs for Pipeline.layers[:k]
    # (the fast path, Pipeline.fuse, where the tree has one; else the composed chain).
    pipe = Pipeline(GuardConfig(rate_limits=((1_000_000, 1.0),), account="bench"))
    compose = getattr(pipe, "compose", None)
    if compose is not None:
        from telethon_guard.call import CallInfo

        result = _state()

        async def send() -> Any:
            return result

        layers = list(pipe.layers)
        costs: dict[str, float] = {}
        prev = None
        fuse = getattr(pipe, "fuse", None)
        for k in range(len(layers) + 1):
            pipe._chain = compose(layers[:k])
            if fuse is not None:
                pipe._fast = fuse(layers[:k])

            def one() -> Any:
                c = CallInfo("updates.getState", req, "bench", 2)
                return pipe.invoke(c, send)

            us = await _per_call(one)
            name = "attempt" if k == 0 else type(layers[k - 1]).__name__
            costs[name] = us if prev is None else us - prev
            prev = us
        out["layers_us"] = costs
        out["pipeline_us"] = prev
    return out


def _child() -> None:
    print(json.dumps(asyncio.run(measure())))


def _run(path: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=path)
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"], env=env,
                         cwd=path, capture_output=True, text=True, timeout=600, check=True)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _bench(path: str) -> dict[str, Any]:
    """``telethon-guard bench --only overhead --quick`` with ``PYTHONPATH=path``: its figures."""
    import tempfile

    env = dict(os.environ, PYTHONPATH=path)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        code = ("import sys; from telethon_guard.cli import main; "
                "sys.exit(main(['bench', '--only', 'overhead', '--quick', '--json', sys.argv[1]]))")
        subprocess.run([sys.executable, "-c", code, out], env=env, cwd=path,
                       capture_output=True, text=True, timeout=900, check=False)
        with open(out) as f:
            data = json.load(f)
    figures: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k.startswith("overhead_ratio") and isinstance(v, (int, float)):
                    figures.setdefault(k, v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    return figures


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.3f} ({min(values):.3f}..{max(values):.3f})"


def compare(base: str, new: str, rounds: int, bench_rounds: int = 0) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    order = [("before", base), ("after", new), ("after", new), ("before", base)]
    for i in range(max(rounds, bench_rounds) * 2):
        name, path = order[i % 4]
        fig: dict[str, Any] = {}
        if i < rounds * 2:
            fig.update(_run(path))
        if i < bench_rounds * 2:
            fig.update(_bench(path))
        runs[name].append(fig)
        print(f"round {i // 2 + 1}: {name} done", file=sys.stderr)
    table: dict[str, Any] = {}
    for key in ("plain_us", "guard_us", "guard_minus_plain_us", "overhead_ratio",
                "overhead_ratio_rtt_20ms"):
        vals = {n: [r[key] for r in runs[n] if key in r] for n in runs}
        if vals["before"] and vals["after"]:
            table[key] = vals
    for name in ("after", "before"):  # "layers_us": the after tree's (as before), then both
        layers = [r.get("layers_us") for r in runs[name] if r.get("layers_us")]
        if layers:
            key = "layers_us" if name == "after" else "layers_us_before"
            table[key] = {k: [lay.get(k, 0.0) for lay in layers] for k in layers[0]}
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--compare", nargs=2, metavar=("BASE", "NEW"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bench-rounds", type=int, default=0)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    if args.child:
        _child()
        return
    if args.compare:
        table = compare(*args.compare, args.rounds, args.bench_rounds)
        print(f"{'median (range)':28} {'before':>22} {'after':>22}")
        for key in ("plain_us", "guard_us", "guard_minus_plain_us", "overhead_ratio",
                    "overhead_ratio_rtt_20ms"):
            if key not in table:
                continue
            b, a = table[key]["before"], table[key]["after"]
            print(f"{key:28} {_summary(b):>22} {_summary(a):>22}")
        before_layers = table.get("layers_us_before", {})
        for name, vals in table.get("layers_us", {}).items():
            b_vals = before_layers.get(name)
            b_txt = _summary(b_vals) if b_vals else ""
            print(f"  layer {name:20} {b_txt:>22} {_summary(vals):>22}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(table, f, indent=1)
        return
    print(json.dumps(asyncio.run(measure()), indent=1))


if __name__ == "__main__":
    main()
