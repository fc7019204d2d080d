"""Rate-limited logging for messages that can repeat once per call.

A failing ``on_event`` callback, a full event queue or a stray future can happen on every
request; logging each occurrence would flood the log (and cost the request path). A
:class:`LogThrottle` logs the first occurrence of a key at once and then at most one line per
``every`` seconds (monotonic clock) for that key, saying how many were suppressed in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

MAX_KEYS = 1024
"""Bound of distinct keys remembered; beyond it the oldest half is forgotten (memory O(1))."""


class LogThrottle:
    """Logs a message per ``key`` at most once every ``every`` seconds.

    ``logger``: where lines go. ``every``: seconds (monotonic, from ``clock``) between two lines
    of one key; the first occurrence of a key is always logged. ``clock``: a function returning
    seconds (default ``time.monotonic``; tests pass a fake). Raises ``ValueError`` for a
    negative ``every``.
    """

    __slots__ = ("_clock", "_state", "every", "logger", "suppressed")

    def __init__(self, logger: logging.Logger, every: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not every >= 0:
            raise ValueError("every must be >= 0 seconds")
        self.logger = logger
        self.every = every
        self._clock = clock
        self._state: dict[str, tuple[float, int]] = {}  # key -> (last line at, suppressed)
        self.suppressed = 0
        """Lines not written because their key was logged less than ``every`` s before."""

    def log(self, key: str, level: int, msg: str, *args: object,
            exc_info: BaseException | bool | None = None) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` was logged less than ``every`` s ago;
        returns whether a line was written. A written line after suppressed ones ends with
        ``(N more since the last line)``. Never raises for a logging failure (``logging``
        reports those itself)."""
        now = self._clock()
        last = self._state.get(key)
        if last is not None and now - last[0] < self.every:
            self._state[key] = (last[0], last[1] + 1)
            self.suppressed += 1
            return False
        if last is None and len(self._state) >= MAX_KEYS:
            for old in list(self._state)[: MAX_KEYS // 2]:
                del self._state[old]
        self._state[key] = (now, 0)
        if last is not None and last[1]:
            msg += " (%d more since the last line)"
            args = (*args, last[1])
        self.logger.log(level, msg, *args, exc_info=exc_info, stacklevel=2)
        return True


__all__ = ["LogThrottle"]
