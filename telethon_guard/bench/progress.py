"""Progress on stderr while the bench or demo runs: one line per step, with elapsed seconds,
and on a terminal a status line that ticks every second between steps.

The status line is written by a daemon thread (not a task on the measured event loop, so it
adds no loop lag to the figures); it is cleared before each step line and by :meth:`close`, so
the table printed on stdout afterwards starts on a clean line.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

TICK = 1.0
"""Seconds between two refreshes of the terminal status line."""


class Progress:
    """Prints ``[elapsed s] workload: message`` lines to ``stream`` (stderr) when enabled.

    ``live`` (default: ``stream`` is a terminal) adds the ticking status line
    ``... workload: running, N s (Ctrl-C stops and prints what was measured)``; call
    :meth:`close` when done (idempotent). Elapsed times are monotonic-clock seconds.
    """

    __slots__ = ("_current", "_lock", "_start", "_status_shown", "_stop", "_thread", "enabled",
                 "live", "stream")

    def __init__(self, enabled: bool, stream: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = enabled and live
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._current = ""
        self._status_shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.live:
            self._thread = threading.Thread(target=self._tick, name="bench-progress",
                                            daemon=True)
            self._thread.start()

    def __call__(self, workload: str, message: str) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._start
        with self._lock:
            self._clear_status()
            self._current = workload
            print(f"[{elapsed:6.1f} s] {workload}: {message}", file=self.stream, flush=True)

    def close(self, interrupted: bool = False) -> None:
        """Stop the status line and clear it (safe to call more than once). ``interrupted``:
        also clear the terminal's ``^C`` echo, so the table starts on a clean line."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2 * TICK)
        with self._lock:
            if interrupted and self.live:
                self._status_shown = True
            self._clear_status()

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            with self._lock:
                if self._stop.is_set():
                    return
                elapsed = time.monotonic() - self._start
                what = f"{self._current}: running" if self._current else "starting"
                try:
                    self.stream.write(f"\r\033[K   ... {what}, {elapsed:4.0f} s "
                                      "(Ctrl-C stops and prints what was measured)")
                    self.stream.flush()
                except (OSError, ValueError):  # the terminal went away; stop ticking
                    return
                self._status_shown = True

    def _clear_status(self) -> None:
        if self._status_shown:
            try:
                self.stream.write("\r\033[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._status_shown = False
