"""The ``telethon-guard`` command: ``bench``, ``demo`` and ``serve`` on the embedded MTProto server.

``bench`` and ``demo`` compare plain Telethon with :class:`~telethon_guard.GuardedTelegramClient`
side by side on this machine, against :mod:`telethon_guard.testing` (a real MTProto server on
127.0.0.1 that unmodified Telethon talks to over TCP); ``serve`` runs that server on its own
(``python -m telethon_guard.testing serve``, same options). Bad input gives a one-line error and
exit status 2; Ctrl-C stops cleanly, prints what was measured and exits with status 130. When
stdout's reader goes away (``telethon-guard bench | head -1``) the command ends quietly with
status 141 (128 + SIGPIPE, as a shell reports for tools killed by SIGPIPE).
``--version`` prints the installed package's version (its metadata).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from telethon_guard.bench.command import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    UsageError,
    check_output_path,
    quiet_broken_pipe,
)
from telethon_guard.bench.runner import WORKLOADS, workload_names

# The command's shared names live in telethon_guard.bench.command (no bench <-> cli import
# circle); they stay importable from here.
__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "WORKLOADS",
    "UsageError",
    "build_parser",
    "check_output_path",
    "main",
]

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1, got 0")
    return value


MAX_TASKS = 10_000
"""Largest ``bench --tasks`` (default 32): one coroutine each; 99999999999 ate GBs."""
MAX_STORM_CLIENTS = 1_000
"""Largest ``bench --storm-clients`` (default 50): one client and connection each."""
MAX_STORM_CALLS = 20_000
"""Largest ``bench --storm-calls`` (default 1000): one pending call each."""


def _int_up_to(maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to ``maximum`` (a one-line error beyond it,
    before anything is allocated)."""
    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {value:,}")
        return value
    return parse


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _workload_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected one or more workload names")
    known = workload_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload {unknown[0]!r}; choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def package_version() -> str:
    """The installed ``telethon-guard`` distribution's version (``importlib.metadata``), or
    ``"unknown"`` when the package is imported from a tree that was never installed."""
    from importlib import metadata

    try:
        return metadata.version("telethon-guard")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Side-by-side runs of plain Telethon and telethon-guard on an embedded MTProto "
            "server (127.0.0.1, no Telegram account or network needed)."
        ),
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    workloads_help = "\n".join(f"  {name}\n    {WORKLOADS.get(name, '')}"
                               for name in workload_names())
    bench = sub.add_parser(
        "bench",
        help="measure cost, goodput and responsiveness, plain Telethon vs telethon-guard",
        description=_wrap_epilog(
            "Run the benchmark workloads, each once with plain Telethon and once with "
            "telethon-guard, and print one table row per workload. The server runs in its own "
            "process so it does not compete with the clients' event loop."
        ),
        epilog="workloads:\n" + _wrap_epilog(workloads_help) + "\n\n" + _wrap_epilog(
            "exit status: 0 done, 1 a workload failed to run, 2 bad input, "
            "130 interrupted (Ctrl-C; what was measured is still printed)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--quick", action="store_true",
                       help="short runs (under a minute on 2 cores); figures are noisier")
    bench.add_argument("--only", type=_workload_list, metavar="WORKLOAD[,...]",
                       help=f"run only these workloads ({', '.join(workload_names())})")
    bench.add_argument("--json", type=Path, metavar="PATH", dest="json_path",
                       help="also write the results as JSON to PATH")
    bench.add_argument("--plot", type=Path, metavar="PATH", dest="plot_path",
                       help="also write a PNG bar chart to PATH (needs matplotlib)")
    bench.add_argument("--duration", type=_positive_seconds, metavar="SECONDS",
                       help="measuring time per client and workload (default 10, --quick 2.5)")
    bench.add_argument("--tasks", type=_int_up_to(MAX_TASKS), metavar="N",
                       help="concurrent tasks in the overhead workload (default 32, at most "
                            f"{MAX_TASKS:,})")
    bench.add_argument("--storm-clients", type=_int_up_to(MAX_STORM_CLIENTS), metavar="N",
                       help="clients in the storm workload (default 50, at most "
                            f"{MAX_STORM_CLIENTS:,})")
    bench.add_argument("--storm-calls", type=_int_up_to(MAX_STORM_CALLS), metavar="N",
                       help="calls pending during the storm (default 1000, at most "
                            f"{MAX_STORM_CALLS:,})")
    bench.add_argument("-v", "--verbose", action="store_true",
                       help="show Telethon's and the guard's log messages on stderr")
    _add_progress_options(bench)

    demo = sub.add_parser(
        "demo",
        help="replay a production incident (-429 storm + FLOOD_WAIT wave) side by side",
        description=_wrap_epilog(
            "A small service on one event loop (a worker making MTProto calls and a health "
            "ticker every 10 ms) runs once with plain Telethon and once with telethon-guard "
            "while the server sends a transport -429 storm and then a FLOOD_WAIT wave. Prints "
            "one table: calls succeeded / failed by error type, how long successful calls "
            "took, when the first call succeeded after the storm, 'never retrieved' log lines, "
            "reconnect attempts seen by the server, health-tick lag p50 / p99 / max and wall "
            "time; then why calls failed, one line per error and reason (read off the typed "
            "error). Each phase is time-boxed, so the demo always ends, even if plain Telethon "
            "does not recover. Ctrl-C prints what was measured (exit status 130)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--quick", action="store_true",
                      help="a shorter incident (8 s per client, about 25 s in all)")
    demo.add_argument("--seconds", type=_positive_seconds, metavar="SECONDS",
                      help="how long the worker sends, per client (default 20, --quick 8)")
    demo.add_argument("--json", type=Path, metavar="PATH", dest="json_path",
                      help="also write the table as JSON to PATH")
    demo.add_argument("--plot", type=Path, metavar="PATH", dest="plot_path",
                      help="also write a PNG to PATH: calls/s succeeded and failed over time, "
                           "plain vs guarded, the incident's phases shaded (needs matplotlib)")
    demo.add_argument("-v", "--verbose", action="store_true",
                      help="show Telethon's and the guard's log messages on stderr")
    _add_progress_options(demo)

    sub.add_parser(
        "serve",
        help="run the embedded MTProto test server on its own until Ctrl-C / SIGTERM",
        description=_wrap_epilog(
            "The same as `python -m telethon_guard.testing serve` (every option is passed on; "
            "`telethon-guard serve --help` lists them). Prints the DC addresses and session "
            "strings as JSON on its first stdout line. Exit status: 0 after SIGTERM, 130 after "
            "Ctrl-C at any moment (also during the first second's imports: one line, no "
            "traceback), 2 with a one-line error on bad options."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,  # --help is the server's own (its options are parsed there)
    )
    return parser


def _add_progress_options(command: argparse.ArgumentParser) -> None:
    progress = command.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show progress on stderr (the default; on a terminal a status "
                               "line ticks every second)")
    progress.add_argument("--no-progress", dest="progress", action="store_false",
                          help="no progress lines on stderr")


def _wrap_epilog(text: str) -> str:
    import textwrap

    out: list[str] = []
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        out.extend(textwrap.wrap(line, width=88, subsequent_indent=" " * indent) or [""])
    return "\n".join(out)


def _configure_logging(verbose: bool) -> None:
    """Library log lines (Telethon's warnings during a storm, guard events) would drown the
    table: without ``--verbose`` they are dropped (the demo counts what it needs with its own
    handlers); with it, WARNING and above go to stderr."""
    import logging

    root = logging.getLogger()
    if verbose:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    else:
        root.addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``telethon-guard`` console script; returns the exit status.

    Ctrl-C at any moment exits with status 130 and no traceback: during a run the workloads
    stop and what was measured is printed; before or after it (parsing, imports, printing),
    one line says so. When stdout's reader has gone (``| head -1``) it ends quietly with
    :data:`EXIT_BROKEN_PIPE` (141), no traceback.
    """
    try:
        try:
            return _run(argv)
        except KeyboardInterrupt:
            print(f"\n{PROG}: interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
    except BrokenPipeError:
        return quiet_broken_pipe()


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        return _serve(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose)
    try:
        if args.command == "bench":
            from telethon_guard.bench.runner import run_bench_command

            return run_bench_command(args)
        from telethon_guard.bench.demo import run_demo_command

        return run_demo_command(args)
    except UsageError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def _serve(argv: list[str]) -> int:
    """``telethon-guard serve ARGS``: :func:`telethon_guard.testing.__main__.main` with
    ``serve ARGS``. Its own handler ends the server on Ctrl-C once the loop runs; before that
    (imports, argument parsing) one line is printed here. Exit status as there."""
    from telethon_guard.testing.__main__ import EXIT_INTERRUPTED as SERVE_INTERRUPTED
    from telethon_guard.testing.__main__ import main as serve_main

    status = serve_main(["serve", *argv], prog=PROG)
    if status == SERVE_INTERRUPTED:
        print(f"{PROG} serve: interrupted", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
