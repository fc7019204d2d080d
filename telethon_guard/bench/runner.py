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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from telethon_guard.bench.progress import Progress
from telethon_guard.bench.results import Report, Row, machine_info, render_report, write_json


@dataclass
class BenchSettings:
    """Sizes of the workloads. ``duration`` is seconds of measuring per client and workload."""

    quick: bool = False
    duration: float = 10.0
    tasks: int = 32
    storm_clients: int = 50
    storm_calls: int = 1000
    only: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchSettings:
        quick = bool(args.quick)
        return cls(
            quick=quick,
            duration=args.duration if args.duration is not None else (2.5 if quick else 10.0),
            tasks=args.tasks if args.tasks is not None else 32,
            storm_clients=args.storm_clients if args.storm_clients is not None else 50,
            storm_calls=args.storm_calls if args.storm_calls is not None else 1000,
            only=list(args.only or []),
        )


@dataclass
class WorkloadContext:
    """What a workload gets: the settings, a progress callback and a place for a partial row
    (shown, marked incomplete, if the run is interrupted)."""

    settings: BenchSettings
    progress: Callable[[str], None]
    partial: Row | None = None


Workload = Callable[[WorkloadContext], Awaitable[Row]]


def registry() -> dict[str, Workload]:
    """Workload name -> coroutine function, in the order they run."""
    from telethon_guard.bench import goodput, limiter_cost, overhead, storm

    return {
        "overhead": overhead.run,
        "goodput-known": goodput.run_known,
        "goodput-unknown": goodput.run_unknown,
        "storm": storm.run,
        "limiter": limiter_cost.run,
    }


async def run_workloads(
    settings: BenchSettings, report: Report, progress: Progress
) -> bool:
    """Run the selected workloads, appending rows to ``report``; ``False`` if any crashed."""
    workloads = registry()
    names = [n for n in workloads if not settings.only or n in settings.only]
    ok = True
    for i, name in enumerate(names, 1):
        ctx = WorkloadContext(settings, functools.partial(progress, name))
        progress(name, f"starting ({i}/{len(names)})")
        try:
            row = await workloads[name](ctx)
        except asyncio.CancelledError:
            if ctx.partial is not None:
                ctx.partial.complete = False
                report.add(ctx.partial)
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
    from telethon_guard.cli import (
        EXIT_FAILED,
        EXIT_INTERRUPTED,
        EXIT_OK,
        check_output_path,
    )

    settings = BenchSettings.from_args(args)
    json_path: Path | None = args.json_path
    plot_path: Path | None = args.plot_path
    if json_path is not None:
        check_output_path(json_path, "--json")
    if plot_path is not None:
        from telethon_guard.bench.plot import PlotUnavailableError, check_matplotlib
        from telethon_guard.cli import UsageError

        try:
            check_matplotlib()
        except PlotUnavailableError as e:
            raise UsageError(str(e)) from None
        check_output_path(plot_path, "--plot")

    show = args.progress if args.progress is not None else (
        not settings.quick or sys.stderr.isatty()
    )
    progress = Progress(enabled=show)
    report = Report(mode="quick" if settings.quick else "full", machine=machine_info())
    ok = True
    try:
        ok = asyncio.run(run_workloads(settings, report, progress))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # asyncio.run turns Ctrl-C into KeyboardInterrupt, or lets the main task's
        # CancelledError out when something else also cancelled it: both are an interruption.
        report.interrupted = True
    print(render_report(report), flush=True)
    ok = _write_outputs(report, json_path, plot_path) and ok
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if ok else EXIT_FAILED


def _write_outputs(report: Report, json_path: Path | None, plot_path: Path | None) -> bool:
    from telethon_guard.cli import PROG

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
