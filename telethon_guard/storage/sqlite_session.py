"""Where a client's durable guard state lives: next to its file session, by default.

A Telethon file session ``bot`` is ``bot.session``; its guard state goes to
``bot.guard.sqlite`` in the same directory (``GuardConfig.storage_path`` overrides it). A
``StringSession`` or another in-memory session has no file to sit next to: without
``storage_path`` its state stays in memory. See :mod:`telethon_guard.storage.sqlite`.
"""

from __future__ import annotations

import os
from typing import Any

from telethon.sessions import SQLiteSession

from ..config import GuardConfig
from .memory import MemoryStorage
from .sqlite import SQLiteStore, open_durable

SUFFIX = ".guard.sqlite"
"""Appended to the session's name (its file name without ``.session``)."""


def durable_path(session: Any, config: GuardConfig) -> str | None:
    """The durable storage file for a client on ``session`` under ``config``, or ``None``
    (memory only): ``durable_storage=False``, an explicit ``storage`` (``"memory"``, Redis,
    an object), or no ``storage_path`` and a session that is not a file."""
    if not config.durable_storage or config.storage is not None:
        return None
    if config.storage_path is not None:
        return config.storage_path
    if not isinstance(session, SQLiteSession):
        return None
    filename = getattr(session, "filename", None)
    if not isinstance(filename, str) or not filename or filename == ":memory:":
        return None
    base = filename[:-len(".session")] if filename.endswith(".session") else filename
    return os.path.abspath(base + SUFFIX)


def attach_session_storage(session: Any, state: Any) -> SQLiteStore | None:
    """Make ``state.pipeline.storage`` durable for a client on ``session`` (see
    :func:`durable_path`); return the store, or ``None`` when it stays in memory (including
    the logged fallback). A storage that already has a ``persist`` hook (a guard shared with
    another client) is left alone. Raises ``GuardConfigError('storage_path')`` when the file
    cannot be used and ``durable_fallback="fail"``."""
    config: GuardConfig = state.config
    path = durable_path(session, config)
    if path is None:
        return None
    storage = getattr(state.pipeline, "storage", None)
    if not isinstance(storage, MemoryStorage):
        return None
    if storage.persist is not None:
        existing: SQLiteStore | None = storage.persist
        return existing
    return open_durable(storage, path, fallback=config.durable_fallback,
                        events=getattr(state.pipeline, "events", None))


__all__ = ["SUFFIX", "attach_session_storage", "durable_path"]
