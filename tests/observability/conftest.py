"""Shared by tests/observability: ``examples`` importable however pytest is started, and no
"exception was never retrieved" may be logged by a test (checked after ``gc.collect()``)."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests._strays import LogCollector, is_stray  # noqa: E402  (needs ROOT on sys.path)


@pytest.fixture(autouse=True)
def no_stray_futures() -> Iterator[None]:
    handler = LogCollector()
    loggers = [logging.getLogger("asyncio"), logging.getLogger("telethon_guard")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield
        gc.collect()
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    strays = [r.getMessage().splitlines()[0] for r in handler.records if is_stray(r)]
    if strays:
        pytest.fail(f"stray future/task exceptions: {strays}")
