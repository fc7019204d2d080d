"""``telethon-guard demo``: the production incident, replayed side by side.

A small service runs on one event loop: a worker makes 20 calls a second (each in its own task,
as a web handler would; three of four are ``messages.getHistory``, every fourth is a batch of
``messages.getHistory`` + ``users.getFullUser`` sent as one list, as Telethon allows) and a
health ticker wakes every 10 ms. The server, in its own process, plays the incident:

0. every request takes the server 50 to 300 ms (a real round trip), so calls are in flight;
1. calm for 1 s;
2. a transport -429 storm: every live connection gets -429, new connections are refused with
   -429 for ``storm`` seconds;
3. calm for 1 s, then a FLOOD_WAIT wave: ``messages.getHistory`` is limited to
   :data:`WAVE_LIMIT` calls per :data:`WAVE_WINDOW` seconds (half the worker's rate;
   ``FLOOD_WAIT_X`` with the true seconds left) for ``wave`` seconds;
4. calm until the worker stops sending; then the service waits for its outstanding calls.

The service runs once with plain ``TelegramClient`` and once with ``GuardedTelegramClient``
(fresh server process each). Every call is bounded by a time box, so the demo ends even if
plain Telethon never recovers. One table: calls succeeded / failed by error type, "never
retrieved" log lines (counted by a handler on the ``asyncio`` logger, after a garbage
collection), connection attempts after the first (the server's log), health-tick lag p50 /
p99 / max and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telethon import TelegramClient, functions, types

from telethon_guard.bench.command import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROG,
    check_output_path,
)
from telethon_guard.bench.common import (
    bounded,
    connect,
    disconnect,
    error_name,
    guarded_class,
    history_request,
)
from telethon_guard.bench.demo_why import WhyTable, explain, span
from telethon_guard.bench.lag import LagStats, health_ticker, lag_stats
from telethon_guard.bench.progress import Progress
from telethon_guard.bench.results import format_table
from telethon_guard.bench.serverproc import ServerProcess

METHOD = "messages.getHistory"
CALLS_PER_SECOND = 20.0
WAVE_LIMIT, WAVE_WINDOW = 20, 2.0  # calls per seconds during the FLOOD_WAIT wave
MAX_FLOOD_WAIT = 60.0  # the guarded service's max_flood_wait: GuardConfig's default (seconds)
LATENCY = (0.05, 0.3)  # seconds the server takes per request (uniform), like a real round trip


@dataclass(frozen=True)
class Timeline:
    """The incident's schedule in seconds from the start of a run."""

    seconds: float  # how long the worker keeps sending
    storm_at: float = 1.0
    storm: float = 3.0
    wave: float = 5.0
    call_bound: float = 15.0  # longest a single call may take before the demo gives up on it

    @property
    def wave_at(self) -> float:
        return self.storm_at + self.storm + 1.0

    def phase(self, t: float) -> str:
        """The part of the incident at ``t`` seconds: ``calm``, ``storm``, ``wave``, ``after``
        (after the wave)."""
        if self.storm_at <= t < self.storm_at + self.storm:
            return "storm"
        if self.wave_at <= t < self.wave_at + self.wave:
            return "wave"
        return "after" if t >= self.wave_at + self.wave else "calm"

    @classmethod
    def for_seconds(cls, seconds: float) -> Timeline:
        """Scale the incident to a run of ``seconds`` (storm and wave shrink on short runs)."""
        storm = min(3.0, max(0.5, seconds * 0.2))
        wave = min(5.0, max(0.5, seconds * 0.3))
        call_bound = min(15.0, max(5.0, seconds))
        return cls(seconds=seconds, storm=storm, wave=wave, call_bound=call_bound)


@dataclass
class DemoOutcome:
    name: str
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    never_retrieved: int = 0
    reconnects: int | None = None  # None: the server's summary was not read (interrupted)
    refused: int | None = None
    pending: int = 0  # calls still waiting for an answer when the run was interrupted
    lag: LagStats | None = None
    wall: float = 0.0
    complete: bool = False
    why: WhyTable = field(default_factory=WhyTable)
    ok_after: list[float] = field(default_factory=list)  # seconds each successful call took
    failed_after: list[float] = field(default_factory=list)  # seconds each failed call took
    bound: float = 0.0  # the call's deadline (guarded) or the demo's time box (plain), seconds
    # (sent at, ended at, succeeded), seconds since the start of the run
    timeline: list[tuple[float, float, bool]] = field(default_factory=list)


_PHASE_NEWS = {"storm": "-429 storm started", "calm": "storm over",
               "wave": "FLOOD_WAIT wave started", "after": "wave over"}


class NeverRetrievedCounter(logging.Handler):
    """Counts "... exception was never retrieved" records logged by asyncio."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            if "never retrieved" in record.getMessage():
                self.count += 1


def _request(k: int) -> Any:
    """The ``k``-th call of the worker: every fourth one a batch of two requests."""
    if k % 4 == 3:
        return [history_request(), functions.users.GetFullUserRequest(types.InputUserSelf())]
    return history_request()


async def run_service(name: str, cls: type[TelegramClient], tl: Timeline,
                      progress: Progress, out: DemoOutcome) -> DemoOutcome:
    """One run of the service against a fresh server process; fills ``out`` as it goes."""
    counter = NeverRetrievedCounter()
    aio_logger = logging.getLogger("asyncio")
    aio_logger.addHandler(counter)
    loop = asyncio.get_running_loop()
    try:
        async with ServerProcess() as srv:
            ((session, _),) = await srv.sessions(1)
            # The guarded service sets a per-call deadline inside the demo's time box, as a
            # service would; plain Telethon has no such setting.
            guarded = cls is not TelegramClient
            deadline = tl.call_bound - 1.0 if guarded else None
            max_flood_wait = MAX_FLOOD_WAIT if guarded else None
            kwargs = {"deadline": deadline, "max_flood_wait": max_flood_wait} if guarded else {}
            out.bound = deadline if deadline is not None else tl.call_bound
            client: Any = srv.client(cls, session, **kwargs)
            await connect(client)
            t0 = time.monotonic()
            start = loop.time()
            await srv.add_rules(("Latency", {"method": None, "seconds": list(LATENCY)}),
                                ("Transport429Storm",
                                 {"start_in": tl.storm_at, "duration": tl.storm}))
            monitor = health_ticker()
            monitor.start()
            tasks: list[asyncio.Task[None]] = []

            async def one_call(k: int) -> None:
                t_call = loop.time()
                try:
                    await bounded(client(_request(k)), tl.call_bound)
                except Exception as e:
                    after = loop.time() - t_call
                    out.failed[error_name(e)] += 1
                    out.failed_after.append(after)
                    out.why.add(explain(e, deadline=deadline, after=after,
                                        max_flood_wait=max_flood_wait,
                                        phase=tl.phase(t_call - start)))
                    out.timeline.append((t_call - start, loop.time() - start, False))
                else:
                    out.ok += 1
                    out.ok_after.append(loop.time() - t_call)
                    out.timeline.append((t_call - start, loop.time() - start, True))

            wave_added = wave_cleared = False
            k = 0
            progress("demo", f"{name}: running; -429 storm at {tl.storm_at:g} s for "
                             f"{tl.storm:g} s, FLOOD_WAIT wave at {tl.wave_at:g} s for "
                             f"{tl.wave:g} s")
            phase = tl.phase(0.0)

            def report(what: str) -> None:
                done = out.ok + sum(out.failed.values())
                progress("demo", f"{name}: {what}; so far {out.ok} ok, "
                                 f"{done - out.ok} failed, {len(tasks) - done} waiting")

            try:
                while True:
                    now = loop.time() - start
                    if now >= tl.seconds:
                        break
                    if tl.phase(now) != phase:
                        phase = tl.phase(now)
                        report(_PHASE_NEWS[phase])
                    if not wave_added and now >= tl.wave_at:
                        await srv.add_rules(("FloodWindow",
                                             {"method": METHOD, "limit": WAVE_LIMIT,
                                              "window": WAVE_WINDOW}))
                        wave_added = True
                    if wave_added and not wave_cleared and now >= tl.wave_at + tl.wave:
                        await srv.clear_rules()
                        await srv.add_rules(("Latency", {"method": None,
                                                         "seconds": list(LATENCY)}))
                        wave_cleared = True
                    tasks.append(loop.create_task(one_call(k)))
                    k += 1
                    await asyncio.sleep(max(0.0, start + k / CALLS_PER_SECOND - loop.time()))
                if tasks:
                    report("worker stopped, waiting for outstanding calls")
                    await asyncio.wait(tasks, timeout=tl.call_bound + 1.0)
                report("done")
                out.wall = loop.time() - start
            finally:
                out.wall = out.wall or loop.time() - start
                await monitor.stop()
                out.lag = lag_stats(monitor)
                out.pending = sum(1 for t in tasks if not t.done())
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await disconnect(client)
                summary = await srv.summary(since=t0)
                out.reconnects = int(summary["connections_opened"])
                out.refused = int(summary["connections_refused"])
                client = None  # drop it: its stray futures report when collected
        for _ in range(3):  # futures nobody awaited report at garbage collection
            gc.collect()
            await asyncio.sleep(0.05)
        out.never_retrieved = counter.count
        out.complete = True
    finally:
        aio_logger.removeHandler(counter)
        out.never_retrieved = counter.count
    return out


def _so_far(o: DemoOutcome, text: str) -> str:
    """``text`` (a count) marked as partial when ``o``'s run was interrupted."""
    return text if o.complete else f"{text} so far"


def _fmt_ok(o: DemoOutcome) -> str:
    if o.complete:
        return str(o.ok)
    return f"{o.ok} so far; {o.pending} still waiting at Ctrl-C (not counted)"


def _fmt_failed(o: DemoOutcome) -> str:
    if not o.failed:
        return _so_far(o, "0")
    return _so_far(o, f"{sum(o.failed.values())}") + ": " + ", ".join(
        f"{k} {v}" for k, v in o.failed.most_common())


LATE_SHARE = 0.9
"""A failure is *late* when it came in the last 10 % of the call's deadline (guarded) or of the
demo's time box (plain): the call waited nearly all of it before the error, instead of failing
when the guard knew it could not complete (issue 13 item 3)."""


def late_failures(o: DemoOutcome) -> int:
    """Failed calls whose error came after :data:`LATE_SHARE` of ``o.bound`` seconds."""
    return sum(1 for a in o.failed_after if a >= LATE_SHARE * o.bound)


def _fmt_late(o: DemoOutcome) -> str:
    if not o.failed_after:
        return _so_far(o, "0")
    fast = [a for a in o.failed_after if a < LATE_SHARE * o.bound]
    late = len(o.failed_after) - len(fast)
    text = _so_far(o, f"{late} late")
    return f"{text}, {len(fast)} within {span(fast)}" if fast else text


def _back_online(o: DemoOutcome, tl: Timeline) -> str:
    """When the first call succeeded after the storm ended (seconds since the start); "never"
    only when calls were made after the storm and the run was not interrupted."""
    end = tl.storm_at + tl.storm
    first = min((t for _, t, ok in o.timeline if ok and t >= end), default=None)
    if first is not None:
        return f"at {first:.1f} s ({first - end:.1f} s after it ended)"
    if tl.seconds <= end:
        return (f"- (the worker stopped at {tl.seconds:g} s, before the storm ended at "
                f"{end:g} s)")
    if not o.complete:
        return "- (interrupted before one)"
    return "never"


def _fmt_never_retrieved(o: DemoOutcome) -> str:
    # Counted after the run, once its futures are garbage-collected: an interrupted run has
    # only what was logged before Ctrl-C.
    if o.complete:
        return str(o.never_retrieved)
    return f"{o.never_retrieved} so far (counted at the end)" if o.never_retrieved else (
        "- (counted at the end)")


def _fmt_reconnects(o: DemoOutcome) -> str:
    if o.reconnects is None or o.refused is None:
        return "- (the server's log was not read)"
    return _so_far(o, f"{o.reconnects} opened, {o.refused} refused")


def _notes(tl: Timeline) -> list[str]:
    """Lines saying which parts of the incident a run too short for them leaves out."""
    notes = []
    if tl.seconds <= tl.storm_at:
        notes.append(f"note: the worker stops at {tl.seconds:g} s, before the storm starts: "
                     "this run replays no incident (try --seconds 8 or more)")
    elif tl.seconds < tl.storm_at + tl.storm:
        notes.append(f"note: the worker stops at {tl.seconds:g} s, during the storm")
    elif tl.seconds <= tl.wave_at:
        notes.append(f"note: the worker stops at {tl.seconds:g} s, before the FLOOD_WAIT wave")
    return notes


def render(outcomes: list[DemoOutcome], tl: Timeline) -> str:
    cols = [o.name + ("" if o.complete else " (interrupted)") for o in outcomes]

    def lag(o: DemoOutcome, attr: str) -> str:
        if o.lag is None or o.lag.ticks == 0:
            return "-"
        return f"{getattr(o.lag, attr):.1f} ms"

    rows = [
        ["calls succeeded", *[_fmt_ok(o) for o in outcomes]],
        ["calls failed (by error)", *[_fmt_failed(o) for o in outcomes]],
        ["failed late (last 10 % of the deadline)", *[_fmt_late(o) for o in outcomes]],
        ["succeeded within", *[span(o.ok_after) for o in outcomes]],
        ["first success after the storm", *[_back_online(o, tl) for o in outcomes]],
        ['"never retrieved" log lines', *[_fmt_never_retrieved(o) for o in outcomes]],
        ["reconnect attempts (server)", *[_fmt_reconnects(o) for o in outcomes]],
        ["health-tick lag p50", *[lag(o, "p50_ms") for o in outcomes]],
        ["health-tick lag p99", *[lag(o, "p99_ms") for o in outcomes]],
        ["health-tick lag max", *[lag(o, "max_ms") for o in outcomes]],
        ["wall time", *[f"{o.wall:.1f} s" + ("" if o.complete else " (interrupted)")
                        for o in outcomes]],
    ]
    head = (f"incident: -429 storm at {tl.storm_at:g} s for {tl.storm:g} s, FLOOD_WAIT wave "
            f"at {tl.wave_at:g} s for {tl.wave:g} s; the worker makes {CALLS_PER_SECOND:g} "
            f"calls/s ({METHOD}, every 4th a batch of two) for {tl.seconds:g} s")
    head = "\n".join([head, *_notes(tl)])
    why = ["why calls failed (error calls: reason; seconds from the call to its error):"]
    for o in outcomes:
        lines = o.why.lines()
        if o.complete:
            why.append(f"  {o.name}:" + ("" if lines else " none"))
        else:
            why.append(f"  {o.name} (interrupted: only the calls that failed before Ctrl-C; "
                       f"{o.pending} were still waiting):" + ("" if lines else " none so far"))
        why.extend(f"    {line}" for line in lines)
    return head + "\n\n" + format_table(["", *cols], rows) + "\n\n" + "\n".join(why)


def to_json(outcomes: list[DemoOutcome], tl: Timeline, interrupted: bool) -> dict[str, Any]:
    return {
        "timeline": {"seconds": tl.seconds, "storm_at": tl.storm_at, "storm": tl.storm,
                     "wave_at": tl.wave_at, "wave": tl.wave},
        "interrupted": interrupted,
        "runs": {
            o.name: {
                "calls_ok": o.ok,
                "calls_failed": dict(o.failed),
                "why_failed": o.why.to_json(),
                "ok_seconds_median": (round(statistics.median(o.ok_after), 3)
                                      if o.ok_after else None),
                "ok_seconds_max": round(max(o.ok_after), 3) if o.ok_after else None,
                "failed_late": late_failures(o),
                "failed_seconds_max": (round(max(o.failed_after), 3)
                                       if o.failed_after else None),
                "never_retrieved": o.never_retrieved,
                "connections_opened": o.reconnects,
                "connections_refused": o.refused,
                "pending_at_interrupt": o.pending,
                "lag_p50_ms": o.lag.p50_ms if o.lag else None,
                "lag_p99_ms": o.lag.p99_ms if o.lag else None,
                "lag_max_ms": o.lag.max_ms if o.lag else None,
                "wall_seconds": o.wall,
                "complete": o.complete,
            }
            for o in outcomes
        },
    }


async def run_demo(tl: Timeline, progress: Progress, outcomes: list[DemoOutcome]) -> None:
    for name, cls in (("plain Telethon", TelegramClient), ("telethon-guard", guarded_class())):
        out = DemoOutcome(name)
        outcomes.append(out)
        await run_service(name, cls, tl, progress, out)


def run_demo_command(args: argparse.Namespace) -> int:
    """``telethon-guard demo``: validate, run both services, print the table."""
    json_path: Path | None = args.json_path
    plot_path: Path | None = args.plot_path
    if json_path is not None:
        check_output_path(json_path, "--json")
    if plot_path is not None:
        from telethon_guard.bench.plot import check_plot_output

        check_plot_output(plot_path)
    seconds = args.seconds if args.seconds is not None else (8.0 if args.quick else 20.0)
    tl = Timeline.for_seconds(seconds)
    progress = Progress(enabled=args.progress is not False,
                        live=False if args.verbose else None)
    outcomes: list[DemoOutcome] = []
    interrupted = False
    status = EXIT_OK
    try:
        asyncio.run(run_demo(tl, progress, outcomes))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        status = EXIT_INTERRUPTED
    except Exception as e:
        progress.close()
        print(f"{PROG} demo: error: {type(e).__name__}: {e}", file=sys.stderr)
        status = EXIT_FAILED
    finally:
        progress.close(interrupted=interrupted)
    print(render(outcomes, tl), flush=True)
    if interrupted:
        print("interrupted: the table shows what was measured before Ctrl-C")
    if plot_path is not None:
        from telethon_guard.bench.demo_plot import write_demo_plot

        try:
            write_demo_plot(outcomes, tl, plot_path, CALLS_PER_SECOND)
        except (OSError, RuntimeError) as e:
            print(f"{PROG} demo: error: cannot write {plot_path}: {e}", file=sys.stderr)
            status = status or EXIT_FAILED
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(to_json(outcomes, tl, interrupted), indent=2) + "\n",
                                 encoding="utf-8")
        except OSError as e:
            print(f"{PROG} demo: error: cannot write {json_path}: {e}", file=sys.stderr)
            status = status or EXIT_FAILED
    return status
