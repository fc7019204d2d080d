"""Shared by the conftests that fail a test on stray futures: a handler that keeps log records,
and the rule for which records report a stray (asyncio's "... exception was never retrieved",
or the guard's safety-net "stray Telethon future")."""

from __future__ import annotations

import logging


class LogCollector(logging.Handler):
    """Keeps every record it is given (level DEBUG and up) in :attr:`records`."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def is_stray(record: logging.LogRecord) -> bool:
    """Whether ``record`` reports a future or task exception nobody retrieved."""
    text = record.getMessage()
    return "never retrieved" in text or "stray Telethon future" in text
