"""Runs the selected bench workloads in order, collecting one :class:`Row` each.

Rows are appended to the :class:`Report` as each workload finishes, so Ctrl-C (which cancels
the running workload) still leaves everything measured so far to print. A workload that
crashes becomes a row with a note and exit status 1; the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import traceback
from pathlib import Path

from telethon_guard.bench.command import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROG,
    check_output_path,
)
from telethon_guard.bench.context import BenchSettings, Workload, WorkloadContext
from telethon_guard.bench.progress import Progress
from telethon_guard.bench.results import (
    INCOMPLETE_EMPTY_NOTE,
    Report,
    Row,
    interrupted,
    machine_info,
    render_report,
    write_json,
)

WORKLOADS: dict[str, str] = {
    "overhead": (
        "What the guard costs when Telegram is calm. Many tasks call the server at once with "
        "no limit anywhere near; we count calls per second for plain Telethon and for "
        "telethon-guard and report guarded / plain (1.00 = free). Target >= 0.98."
    ),
    "goodput-known": (
        "How close to Telegram's allowed rate you get when you know the limit. The server "
        "enforces per-method limits (FLOOD_WAIT when exceeded); the guard is configured with "
        "the same limits. Reports calls served as a share of the limit and the FLOOD_WAITs "
        "received. Target >= 97 % with 0 FLOOD_WAITs."
    ),
    "goodput-unknown": (
        "The same without telling the guard the limits: it must learn each method's pace from "
        "the FLOOD_WAITs it gets (adaptive pacing). Target >= 90 % of the limit and at most one "
        "FLOOD_WAIT per method after it has converged."
    ),
    "sporadic": (
        "One-off FLOOD_WAITs with no limit behind them, at the example service's load (4 calls "
        "every second, 2 s budget each). Reports calls answered within the budget, with floods "
        "vs without, plain and guarded side by side. Target: guarded >= 95 % of its no-flood "
        "goodput minus only the seconds Telegram asked to wait. Not in --quick runs unless "
        "named in --only."
    ),
    "storm": (
        "Does the service stay responsive in a transport -429 storm? 50 clients on one event "
        "loop with 1,000 calls pending while the server answers -429 and refuses connections; "
        "a 10 ms health ticker measures how late the loop wakes up (p99). Target <= 5 ms"
        " and every guarded call ok."
    ),
    "limiter": (
        "CPU time of one rate-limiter decision (no waiting), telethon-guard's limiter beside "
        "aiolimiter on the same machine. Target <= 500 ns."
    ),
}
"""Workload name -> what it measures and its target (``telethon-guard bench --help``)."""


def workload_names() -> list[str]:
    """The workloads ``--only`` accepts, in the order they run."""
    return list(registry())


FULL_ONLY = frozenset({"sporadic"})
"""Workloads left out of ``--quick`` runs unless named in ``--only`` (a minute of real time
each: floods must be waited out)."""


def selected(settings: BenchSettings) -> list[str]:
    """The workloads this run runs, in order: ``--only``'s, else all (``--quick``: all but
    :data:`FULL_ONLY`)."""
    if settings.only:
        return [n for n in workload_names() if n in settings.only]
    return [n for n in workload_names() if not (settings.quick and n in FULL_ONLY)]


def registry() -> dict[str, Workload]:
    """Workload name -> coroutine function, in the order they run."""
    from telethon_guard.bench import goodput, limiter_cost, overhead, sporadic, storm

    return {
        "overhead": overhead.run,
        "goodput-known": goodput.run_known,
        "goodput-unknown": goodput.run_unknown,
        "sporadic": sporadic.run,
        "storm": storm.run,
        "limiter": limiter_cost.run,
    }


async def run_workloads(
    settings: BenchSettings, report: Report, progress: Progress
) -> bool:
    """Run the selected workloads, appending rows to ``report``; ``False`` if any crashed."""
    workloads = registry()
    names = selected(settings)
    ok = True
    for i, name in enumerate(names, 1):
        ctx = WorkloadContext(settings, functools.partial(progress, name))
        progress(name, f"starting ({i}/{len(names)})")
        try:
            row = await workloads[name](ctx)
        except asyncio.CancelledError:
            # Never dropped: its partial figures, or a row saying it had none yet.
            if ctx.partial is not None:
                report.add(interrupted(ctx.partial))
            else:
                empty = interrupted(Row(workload=name, label=name, complete=False))
                empty.note = INCOMPLETE_EMPTY_NOTE
                report.add(empty)
            for row in ctx.more_partial:
                report.add(interrupted(row))
            raise
        except Exception as e:
            ok = False
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            progress(name, "failed:\n" + traceback.format_exc())
            row = Row(workload=name, label=name, note=f"failed to run: {detail}", met=None,
                      complete=False)
        report.add(row)
        progress(name, "done")
    return ok


def run_bench_command(args: argparse.Namespace) -> int:
    """``telethon-guard bench``: validate, run, print the table, write JSON / PNG."""
    settings = BenchSettings.from_args(args)
    json_path: Path | None = args.json_path
    plot_path: Path | None = args.plot_path
    if json_path is not None:
        check_output_path(json_path, "--json")
    if plot_path is not None:
        from telethon_guard.bench.plot import check_plot_output

        check_plot_output(plot_path)

    # Progress goes to stderr, so it is on by default (also under --quick); on a terminal a
    # status line ticks between steps. --verbose log lines would break that line: no ticking.
    show = args.progress if args.progress is not None else True
    progress = Progress(enabled=show, live=False if args.verbose else None)
    report = Report(mode="quick" if settings.quick else "full", machine={})
    ok = True
    try:
        progress("bench", "starting: " + ", ".join(selected(settings)))
        report.machine = machine_info()
        ok = asyncio.run(run_workloads(settings, report, progress))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # asyncio.run turns Ctrl-C into KeyboardInterrupt, or lets the main task's
        # CancelledError out when something else also cancelled it: both are an interruption.
        report.interrupted = True
    finally:
        progress.close(interrupted=report.interrupted)
    print(render_report(report), flush=True)
    ok = _write_outputs(report, json_path, plot_path) and ok
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if ok else EXIT_FAILED


def _write_outputs(report: Report, json_path: Path | None, plot_path: Path | None) -> bool:
    ok = True
    if json_path is not None:
        try:
            write_json(report, json_path)
        except OSError as e:
            print(f"{PROG} bench: error: cannot write {json_path}: {e}", file=sys.stderr)
            ok = False
    if plot_path is not None:
        from telethon_guard.bench.plot import write_plot

        try:
            write_plot(report, plot_path)
        except (OSError, RuntimeError) as e:
            print(f"{PROG} bench: error: cannot write {plot_path}: {e}", file=sys.stderr)
            ok = False
    return ok
