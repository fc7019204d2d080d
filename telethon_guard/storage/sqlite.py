"""Durable local guard state on SQLite: flood blocks, login floods and breakers survive restarts.

**Why.** With in-memory state a restarted process forgets every FLOOD_WAIT and goes straight
back into a method Telegram blocked for hours; a supervisor restarting a bot every few seconds
re-sends ``auth.importBotAuthorization`` each time and the flood grows (public reports:
1,658-3,135 s floods after crash loops, issue 10). With this store the restarted process
refuses the blocked call locally (``FloodWaitBlocked`` with the seconds left, nothing sent).

**Design: write-through persistence under** :class:`~telethon_guard.storage.memory.MemoryStorage`,
not a full backend. Every decision is still made by the in-memory tables (the limiter, the
ledger's "nothing is blocked" truth test and the breaker's CLOSED fast path are unchanged: the
hot path costs exactly what it costs without a file). The file is touched only

* at start: :meth:`SQLiteStore.attach` loads the live blocks and OPEN breakers into memory;
* when state changes, which is rare: a FLOOD_WAIT / SLOWMODE_WAIT / FLOOD_PREMIUM_WAIT recorded
  or cleared, a breaker opening or closing (one single-row upsert or delete each, in its own
  autocommit transaction);
* every :data:`REFRESH_INTERVAL` seconds while the event loop runs: ``PRAGMA data_version``
  (answered from the connection, microseconds); only when another process committed are the
  (tiny) tables read and merged, so processes sharing the file see each other's blocks; and
  every :data:`CLEANUP_INTERVAL` seconds one ``DELETE`` of the expired rows.

Rate-limiter slots are not persisted (they are seconds long and a restart costs more than a
window); neither are adaptive paces (relearned from the next FLOOD_WAIT, which is persisted).

**Loop or thread.** Writes run synchronously on the caller's thread (the event loop), on
purpose: the block is on disk *before* the caller sees ``FloodWaitBlocked``, so a process that
dies of that very error (the crash loop) has already recorded it; a write handed to a thread
could be lost with the process. It is cheap: WAL mode with ``synchronous=NORMAL`` makes a commit
an append to the WAL without fsync (tens of microseconds), and it happens once per FLOOD_WAIT or
breaker transition, never per call. The only way it can wait is another process holding the
write lock, which every process holds for one tiny statement only; ``busy_timeout``
(:data:`BUSY_TIMEOUT`, 0.25 s) bounds even that, and a write that fails is logged and dropped
(memory keeps the state: a disk problem never fails a call). Readers never wait for writers in
WAL mode.

**Clocks.** The file holds absolute wall-clock ends (``time.time()``), because monotonic clocks
do not survive a reboot and differ between processes; on load they become seconds left and
then ends on the guard's clock (monotonic, or a test's fake clock). Telegram's ``FLOOD_WAIT_X``
is relative to when the answer arrived, so server time never enters. A wall clock set back
makes blocks last longer by that much, set forward shorter; loaded blocks are clamped to
14 days (``MAX_FLOOD_WAIT_CLAMP``, TDLib's clamp) so a bad clock cannot block for ever.

**Concurrency.** Several processes may use one file (the processes of one machine, each with
its own connection). Every write is one atomic statement whose result does not depend on the
order of writers: a block keeps the later end (``max``), a breaker keeps the later OPEN end.
One connection per store, used under a lock (``check_same_thread=False``: a client may be built
on one thread and used on another).

**Failure.** :meth:`SQLiteStore.open` raises :class:`DurableStorageError` (a
``GuardConfigError`` naming ``storage_path``) for a file that cannot be opened, is not a
database, is corrupt, has a newer schema, or stays locked past ``busy_timeout``: never a hang.
:func:`open_durable` turns that into a logged fallback to memory (``durable_fallback="memory"``,
the default) or raises it (``"fail"``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import weakref
from typing import Any

from ..config import MAX_FLOOD_WAIT_CLAMP
from ..errors import GuardConfigError
from . import CLOSED, HALF_OPEN, OPEN
from .memory import MemoryStorage

log = logging.getLogger("telethon_guard")

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the file layout below; a file with a higher one is refused."""

BUSY_TIMEOUT = 0.25
"""Seconds a statement waits for another process's write lock (``PRAGMA busy_timeout``)."""

REFRESH_INTERVAL = 1.0
"""Seconds between two checks for other processes' changes (on the event loop)."""

CLEANUP_INTERVAL = 60.0
"""Seconds (wall clock) between two deletions of expired rows while the loop runs (the file
stays as small as the live blocks: a long-running process with many slow-mode chats)."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS flood ("
    " scope TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS breaker ("
    " key TEXT PRIMARY KEY, state TEXT NOT NULL, failures INTEGER NOT NULL,"
    " open_until REAL NOT NULL, open_for REAL NOT NULL) WITHOUT ROWID",
)

_PUT_FLOOD = ("INSERT INTO flood(scope, until) VALUES (?, ?) ON CONFLICT(scope) DO UPDATE"
              " SET until = max(until, excluded.until)")
_PUT_BREAKER = ("INSERT INTO breaker(key, state, failures, open_until, open_for)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                " state = excluded.state, failures = excluded.failures,"
                " open_until = max(open_until, excluded.open_until),"
                " open_for = max(open_for, excluded.open_for)")


class DurableStorageError(GuardConfigError):
    """The durable storage file cannot be used (``field`` is ``"storage_path"``): it cannot be
    opened or created, is not a SQLite database or is corrupt, has a newer schema, or stayed
    locked longer than :data:`BUSY_TIMEOUT` seconds. ``path`` is the file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__("storage_path", f"{path}: {reason}")
        self.path = path


class SQLiteStore:
    """One SQLite file holding flood blocks and breakers, and the write-through hook of a
    :class:`~telethon_guard.storage.memory.MemoryStorage` (its ``persist``).

    Build with :meth:`open` (validates the file), then :meth:`attach` to a memory storage.
    ``wall``: the wall clock (``time.time``; tests pass a fake one). Errors after opening are
    logged and dropped (``write_errors`` counts them): the memory state stays authoritative.
    """

    def __init__(self, path: str, conn: sqlite3.Connection, *,
                 wall: Any = time.time) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()
        self._wall = wall
        self._memory: MemoryStorage | None = None
        self._version = self._data_version()
        self._timer: asyncio.TimerHandle | None = None
        self._cleaned = wall()
        self.write_errors = 0
        self.closed = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT,
             wall: Any = time.time) -> SQLiteStore:
        """Open (or create) the file at ``path``: WAL mode, ``busy_timeout``, schema checked.

        Raises :class:`DurableStorageError` when it cannot be used (see the class); bounded by
        ``busy_timeout`` seconds per statement, never a hang."""
        p = os.fspath(path)
        if os.path.isdir(p):
            raise DurableStorageError(p, "is a directory")
        try:
            conn = sqlite3.connect(p, timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise DurableStorageError(p, f"cannot open: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DurableStorageError(
                    p, f"schema version {version} is newer than this telethon-guard's "
                       f"({SCHEMA_VERSION})")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("telethon_guard: %s: journal_mode %s, not WAL", p, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise DurableStorageError(p, f"corrupt: {check}")
            for stmt in _SCHEMA:
                conn.execute(stmt)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except DurableStorageError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise DurableStorageError(p, f"not a usable SQLite database: {exc}") from exc
        return cls(p, conn, wall=wall)

    # ------------------------------------------------------------------ reading
    def _data_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def floods(self) -> dict[str, float]:
        """Live blocks ``{scope: seconds left}`` (wall clock now; at most 14 days each)."""
        now = self._wall()
        with self._lock:
            rows = self._conn.execute(
                "SELECT scope, until FROM flood WHERE until > ?", (now,)).fetchall()
        return {scope: min(until - now, MAX_FLOOD_WAIT_CLAMP) for scope, until in rows}

    def breakers(self) -> dict[str, tuple[str, int, float, float]]:
        """Stored breakers ``{key: (state, failures, seconds left OPEN, open_for)}``."""
        now = self._wall()
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, state, failures, open_until, open_for FROM breaker").fetchall()
        return {key: (state, int(failures), max(0.0, min(until - now, MAX_FLOOD_WAIT_CLAMP)),
                      float(open_for))
                for key, state, failures, until, open_for in rows}

    # ------------------------------------------------------------------ writing
    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        if self.closed:
            return
        try:
            with self._lock:
                self._conn.execute(sql, args)
        except sqlite3.Error as exc:
            self.write_errors += 1
            log.warning("telethon_guard: durable storage %s: write failed (%s); the state is "
                        "kept in memory only", self.path, exc)
        self._schedule_refresh()

    # The MemoryStorage ``persist`` hook (called on its thread, after its own change).
    def flood_saved(self, scope: str, seconds: float) -> None:
        """``scope`` is blocked ``seconds`` from now (a later stored end is kept)."""
        self._write(_PUT_FLOOD, (scope, self._wall() + seconds))

    def flood_cleared(self, scope: str) -> None:
        """``scope`` is no longer blocked."""
        self._write("DELETE FROM flood WHERE scope = ?", (scope,))

    def breaker_saved(self, key: str, state: str, failures: int, open_left: float,
                      open_for: float) -> None:
        """Breaker ``key`` changed: OPEN for ``open_left`` more seconds (stored), or CLOSED
        (the row is deleted)."""
        if state == CLOSED:
            self._write("DELETE FROM breaker WHERE key = ?", (key,))
        else:
            self._write(_PUT_BREAKER, (key, state, failures, self._wall() + open_left,
                                       open_for))

    # ------------------------------------------------------------------ memory binding
    def attach(self, memory: MemoryStorage) -> None:
        """Load the stored live blocks and breakers into ``memory``, delete expired rows and
        become its write-through ``persist`` hook. Starts the refresh timer when called on a
        running event loop (else at the first write)."""
        self._memory = memory
        self._load(memory)
        self.cleanup()
        memory.persist = self
        self._version = self._data_version()
        self._schedule_refresh()

    def cleanup(self) -> int:
        """Delete expired blocks (and breakers OPEN until more than a day ago); return the
        rows deleted (0 when another process holds the lock: harmless, retried later)."""
        now = self._cleaned = self._wall()
        try:
            with self._lock:
                n = self._conn.execute("DELETE FROM flood WHERE until <= ?", (now,)).rowcount
                n += self._conn.execute(
                    "DELETE FROM breaker WHERE state = ? AND open_until <= ? - 86400",
                    (OPEN, now)).rowcount
        except sqlite3.Error as exc:
            log.debug("telethon_guard: %s: cleanup skipped (%s)", self.path, exc)
            return 0
        return int(n)

    def _load(self, memory: MemoryStorage) -> None:
        for scope, left in self.floods().items():
            memory.restore_flood(scope, left)
        for key, (state, failures, left, open_for) in self.breakers().items():
            if state in (OPEN, HALF_OPEN):
                memory.restore_breaker(key, failures, left, open_for)

    def refresh(self, force: bool = False) -> bool:
        """Merge what other processes committed since the last look (``PRAGMA data_version``
        changed, or ``force``) into the attached memory storage; ``True`` when it read."""
        memory = self._memory
        if memory is None or self.closed:
            return False
        try:
            version = self._data_version()
            if version == self._version and not force:
                return False
            self._version = version
            self._load(memory)
        except sqlite3.Error as exc:
            log.debug("telethon_guard: %s: refresh skipped (%s)", self.path, exc)
            return False
        return True

    def _schedule_refresh(self) -> None:
        if self._timer is not None or self.closed or self._memory is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        ref = weakref.ref(self)  # the loop's timer must not keep a dropped client alive

        def tick() -> None:
            store = ref()
            if store is None:
                return
            store._timer = None
            if loop.is_closed() or store.closed:
                return
            store.refresh()
            if store._wall() - store._cleaned >= CLEANUP_INTERVAL:
                store.cleanup()
            store._schedule_refresh()

        self._timer = loop.call_later(REFRESH_INTERVAL, tick)

    def close(self) -> None:
        """Stop refreshing and close the connection (the memory state stays)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._memory is not None and self._memory.persist is self:
            self._memory.persist = None
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}>"


def open_durable(memory: MemoryStorage, path: str | os.PathLike[str], *,
                 fallback: str = "memory", events: Any = None) -> SQLiteStore | None:
    """Open ``path`` and attach it to ``memory``; return the store.

    When the file cannot be used: ``fallback="memory"`` logs a warning (and emits
    ``StorageFallback(backend="sqlite")`` on ``events`` when given) and returns ``None``
    (``memory`` stays in-memory only); ``fallback="fail"`` raises :class:`DurableStorageError`.
    """
    try:
        store = SQLiteStore.open(path)
    except DurableStorageError as exc:
        if fallback == "fail":
            raise
        log.warning("telethon_guard: durable storage unavailable, flood state is kept in "
                    "memory only (lost on restart): %s", exc)
        if events is not None:
            from ..events import StorageFallback

            events.emit(StorageFallback("sqlite", str(exc), True))
        return None
    store.attach(memory)
    return store


__all__ = [
    "BUSY_TIMEOUT",
    "CLEANUP_INTERVAL",
    "REFRESH_INTERVAL",
    "SCHEMA_VERSION",
    "DurableStorageError",
    "SQLiteStore",
    "open_durable",
]
