"""The library logs nothing to stderr by itself: ``telethon_guard``'s top logger has a
``NullHandler`` (Python's logging HOWTO for libraries), so an application that has not
configured logging does not get Python's last-resort handler printing WARNING guard events
(``FloodWaitStarted ...``). Once it configures logging (or runs the CLI with ``--verbose``),
the same events show. Each case in a fresh interpreter: logging's state is global."""

from __future__ import annotations

import subprocess
import sys

from tests.cli.conftest import REPO

EMIT = """
import logging, sys
{setup}
import telethon_guard
from telethon_guard.events import EventBus, FloodWaitStarted
EventBus().emit(FloodWaitStarted(method="messages.getHistory",
                                 scope="acct:1/method:messages.getHistory", seconds=3.0))
logging.getLogger("telethon_guard.limiter").warning("a child logger's warning")
print("emitted")
"""


def _run(setup: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", EMIT.format(setup=setup)], capture_output=True,
                          text=True, timeout=60, cwd=REPO, check=False)


def test_warning_guard_event_is_silent_without_logging_config() -> None:
    proc = _run("")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "emitted"
    assert proc.stderr == "", proc.stderr


def test_warning_guard_event_shows_once_the_application_configures_logging() -> None:
    proc = _run("logging.basicConfig(level=logging.WARNING)")
    assert proc.returncode == 0, proc.stderr
    assert "FloodWaitStarted" in proc.stderr and "seconds=3.000" in proc.stderr, proc.stderr
    assert "a child logger's warning" in proc.stderr


def test_cli_verbose_still_shows_guard_events() -> None:
    proc = _run("from telethon_guard.cli import _configure_logging; _configure_logging(True)")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING telethon_guard: FloodWaitStarted" in proc.stderr, proc.stderr
