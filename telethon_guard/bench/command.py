"""What the ``telethon-guard`` command's code shares: its name, exit statuses, the usage error
and the output-path check.

They live here, below the workloads and the argument parser (:mod:`telethon_guard.cli`), so the
bench and demo code never imports the command line back (no ``bench`` <-> ``cli`` import
circle).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROG = "telethon-guard"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout's reader went away (``... | head -1``)


def quiet_broken_pipe() -> int:
    """After a :class:`BrokenPipeError` on stdout (its reader, ``head -1``, has exited): point
    stdout at ``os.devnull`` so the interpreter's final flush cannot raise again, and return
    :data:`EXIT_BROKEN_PIPE`. Nothing is printed (Python's documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no stdout file descriptor (replaced, closed)
        pass
    return EXIT_BROKEN_PIPE


class UsageError(Exception):
    """Bad command-line input; the message is printed as one line (exit status 2)."""


def check_output_path(path: Path, what: str) -> None:
    """Fail with :class:`UsageError` unless ``path`` can be written (checked before running).

    Opens the file for appending (creating it if needed, removing it again if it did not
    exist), which is the only reliable test (``os.access`` lies for root). ``what`` names the
    option in the message (``"--json"``).
    """
    if path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"{what} {str(path)!r}: directory {str(path.parent)!r} does not exist")
    existed = path.exists()
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise UsageError(f"{what} {str(path)!r} is not writable: {e.strerror or e}") from None
    if not existed:
        try:
            os.unlink(path)
        except OSError:
            pass
