"""The ``telethon-guard`` console script's entry point.

It lives outside the :mod:`telethon_guard` package on purpose: importing that package imports
Telethon (about a second), and Python prints a traceback for a Ctrl-C that lands during an
import. Here the import itself is inside ``try``, so Ctrl-C at any moment exits with status 130
and one line. Everything else is :func:`telethon_guard.cli.main`.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # telethon_guard.bench.command.EXIT_INTERRUPTED (not imported: heavy)


def main() -> int:
    """Run ``telethon-guard`` with ``sys.argv``; return its exit status."""
    try:
        from telethon_guard.cli import main as cli_main

        # cli_main catches Ctrl-C itself; this covers the instant between its import and its
        # own ``try`` (and anything it lets through).
        return cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("\ntelethon-guard: interrupted\n")
        return EXIT_INTERRUPTED
