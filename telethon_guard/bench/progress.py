"""A simple progress display on stderr: one line per step, with elapsed seconds."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints ``[elapsed s] workload: message`` lines to ``stream`` (stderr) when enabled."""

    __slots__ = ("_start", "enabled", "stream")

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._start = time.monotonic()

    def __call__(self, workload: str, message: str) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._start
        print(f"[{elapsed:6.1f} s] {workload}: {message}", file=self.stream, flush=True)
