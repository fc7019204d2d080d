"""The session store after a request ran, and at connect: typed errors, a bounded busy wait.

Telethon stores the entities (users, chats) of every answer in the session
(``session.process_entities(result)``) *after* Telegram executed the request. With a file
session (``SQLiteSession``) another process or thread holding the file's write lock (a second
client on the same ``.session``, a backup) makes that insert wait for sqlite3's busy timeout
(Python's default: 5 s, spent inside a synchronous call, so the event loop is blocked for 5 s)
and then raise a bare ``sqlite3.OperationalError: database is locked`` although the message
was sent; a caller that retries sends it twice.

Here:

* the session connection's busy wait is bounded to :data:`SESSION_BUSY_TIMEOUT` seconds
  (``PRAGMA busy_timeout``; our number: a short lock such as a copy of a small file is waited
  for, a held lock blocks the loop for at most that long, not 5 s). The bound is applied to the
  connection the session has when a request's entities are stored and before ``connect()``;
* a failed store after a request ran raises
  :class:`~telethon_guard.errors.EntitiesNotStoredError` (``executed=True``, ``result``
  attached, ``path`` named), from the sqlite3 error. It is raised after the guard pipeline
  returned, so no layer retries it; a store taking longer than :data:`SLOW_STORE` seconds is
  logged (``telethon_guard`` logger) with its duration;
* a session that cannot be written at ``connect()`` raises
  :class:`~telethon_guard.errors.SessionLockedError` naming the file;
* a session file that cannot be written at ``disconnect()`` (Telethon saves the update state
  there, then closes the session) is logged and the session closed without that save
  (:func:`disconnect_checked`): a service's ``finally: await client.disconnect()`` does not
  raise a bare ``sqlite3.OperationalError`` that would mask the error that brought it there
  (e.g. the :class:`~telethon_guard.errors.SessionLockedError` of a failed ``connect()``);
* the other stores of entities (Telethon's update loop, its disconnect) log a locked file
  instead of raising (:func:`guard_session`): raised there, it is fatal to Telethon's update
  loop, which then disconnects the client.

Other sessions (``StringSession``, ``MemorySession``, custom ones) are called unchanged; only
``sqlite3.OperationalError`` is typed (a custom session's own errors pass through).
"""

from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from . import _telethon as tl
from .errors import EntitiesNotStoredError, SessionLockedError

__all__ = ["SESSION_BUSY_TIMEOUT", "SLOW_STORE", "bound_busy_wait", "connect_checked",
           "disconnect_checked", "guard_session", "session_path", "store_entities"]

log = logging.getLogger("telethon_guard")

SESSION_BUSY_TIMEOUT = 0.25
"""Longest wait (seconds) for another connection's lock on the session file (sqlite3's own
default is 5 s). Our choice: far below anything a caller would notice as a stall."""

SLOW_STORE = 0.05
"""A store of entities slower than this (seconds, the loop blocked meanwhile) is logged."""

_BOUNDED: weakref.WeakKeyDictionary[Any, sqlite3.Connection] = weakref.WeakKeyDictionary()
"""session -> the connection whose busy wait was bounded (a new one after close() is bounded
again). sqlite3 connections take no weak references; sessions do."""


def session_path(session: Any) -> str | None:
    """The file of a Telethon file session (``SQLiteSession.filename``), else ``None``."""
    name = getattr(session, "filename", None)
    return name if isinstance(name, str) and name != ":memory:" else None


def bound_busy_wait(session: Any) -> None:
    """Bound the busy wait of ``session``'s open SQLite connection to
    :data:`SESSION_BUSY_TIMEOUT` (once per connection; nothing for other sessions)."""
    conn = tl.sqlite_connection(session)
    if conn is None:
        return
    try:
        if _BOUNDED.get(session) is conn:
            return
        conn.execute(f"PRAGMA busy_timeout = {int(SESSION_BUSY_TIMEOUT * 1000)}")
        _BOUNDED[session] = conn
    except (sqlite3.Error, TypeError):  # a closed connection / a session without weakrefs
        return


def guard_session(session: Any) -> None:
    """Make every other store of entities in an ``SQLiteSession`` survive a locked file
    (once per session; nothing for other sessions): Telethon's update loop and its disconnect
    also call ``session.process_entities``, and an ``sqlite3.OperationalError`` there is
    fatal to Telethon's update loop (it logs "Fatal error handling updates" and disconnects
    the client). The instance's ``process_entities`` is replaced by one that bounds the busy
    wait and logs the failure (the entities are only a cache: a later look-up asks Telegram)
    instead of raising. The request path does not go through it: :func:`store_entities`
    raises typed."""
    if not tl.is_sqlite_session(session) or "process_entities" in vars(session):
        return
    original = type(session).process_entities

    def process_entities(tlo: Any) -> Any:
        bound_busy_wait(session)
        try:
            return original(session, tlo)
        except sqlite3.OperationalError as e:
            log.warning("entities of an update not stored in the session file %r (updates "
                        "go on; the entity cache misses them): %s", session_path(session), e)
            return None

    session.process_entities = process_entities


def store_entities(session: Any, method: str, request: object, result: object,
                   now: float | None = None) -> Awaitable[Any] | None:
    """``session.process_entities(result)`` for a request that ran; returns what it returned
    (an awaitable for async sessions, else ``None``). ``now``: ``time.monotonic()`` read by
    the caller just before (the straight lane's answer time), else read here.

    Raises :class:`~telethon_guard.errors.EntitiesNotStoredError` (``executed``, ``result``,
    ``path``) when the SQLite store fails (``sqlite3.OperationalError``: locked, read-only...).
    """
    sqlite = tl.SQLITE_TYPES.get(type(session))
    if sqlite is None:
        sqlite = tl.is_sqlite_session(session)
    if sqlite:
        guard_session(session)
        bound_busy_wait(session)
        store = functools.partial(type(session).process_entities, session)
    else:
        store = session.process_entities
    started = time.monotonic() if now is None else now
    try:
        out = store(result)
    except sqlite3.OperationalError as e:
        log.warning("session store failed after %s ran (%.3f s): %s", method,
                    time.monotonic() - started, e)
        raise EntitiesNotStoredError(method, request, result, session_path(session), e) from e
    spent = time.monotonic() - started
    if spent > SLOW_STORE:
        log.warning("session store after %s blocked the event loop for %.3f s", method, spent)
    return out if out is not None and inspect.isawaitable(out) else None  # None: sync


async def connect_checked(session: Any, connect: Callable[[], Awaitable[None]]) -> None:
    """Run ``connect()`` with the session's busy wait bounded; a session file that cannot be
    written raises :class:`~telethon_guard.errors.SessionLockedError` naming it (from the
    ``sqlite3.OperationalError``)."""
    guard_session(session)
    bound_busy_wait(session)
    try:
        await connect()
    except sqlite3.OperationalError as e:
        path = session_path(session)
        raise SessionLockedError(
            f"cannot write the session file {path!r} at connect: {e} (another process or "
            "thread holds it; close the other client using it or give this one its own "
            "session file)", path) from e


async def disconnect_checked(session: Any, disconnect: Callable[[], Awaitable[None]]) -> None:
    """Run Telethon's ``disconnect()`` with the session's busy wait bounded. When saving to an
    ``SQLiteSession`` file fails there (``sqlite3.OperationalError``: locked, read-only...;
    Telethon saves the update state after the connection is closed, then closes the
    session), the failure is logged once (``telethon_guard`` logger, naming the file) and the
    session's connection is closed (committing what it can, else dropping it): the client
    is disconnected, the update state of the file is the one last saved (the next connect
    catches up from it). Other sessions' errors pass through."""
    bound_busy_wait(session)
    try:
        await disconnect()
    except sqlite3.OperationalError as e:
        if not tl.is_sqlite_session(session):
            raise
        log.warning("disconnect: the update state was not saved in the session file %r "
                    "(%s; another process or thread holds it); the session is closed "
                    "without it", session_path(session), e)
        try:
            session.close()  # commits what the session has not saved yet, if it can now
        except sqlite3.Error:
            tl.close_sqlite_unsaved(session)
