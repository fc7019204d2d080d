"""The SQLite write-through store (storage/sqlite.py): pure logic on a fake guard clock and a
fake wall clock; real SQLite files in ``tmp_path``."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest
from telethon.sessions import SQLiteSession, StringSession

from telethon_guard.clock import FakeClock
from telethon_guard.config import MAX_FLOOD_WAIT_CLAMP, GuardConfig
from telethon_guard.errors import GuardConfigError
from telethon_guard.storage import CLOSED, HALF_OPEN, OPEN, BreakerPolicy
from telethon_guard.storage.memory import MemoryStorage
from telethon_guard.storage.sqlite import DurableStorageError, SQLiteStore, open_durable
from telethon_guard.storage.sqlite_session import durable_path

SCOPE = "acct:key:00ab/method:auth.importBotAuthorization"
POLICY = BreakerPolicy(threshold=2, open_seconds=30.0, growth=2.0, max_open=300.0)


class Wall:
    """A settable wall clock (``time.time`` stand-in)."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def durable(path: Path, wall: Wall, start: float = 1000.0) -> tuple[MemoryStorage, SQLiteStore,
                                                                    FakeClock]:
    """A memory storage on a fake clock with the store at ``path`` attached (a "process")."""
    clock = FakeClock(start, auto_advance=False)
    memory = MemoryStorage(clock)
    store = SQLiteStore.open(path, wall=wall)
    store.attach(memory)
    return memory, store, clock


def test_a_block_survives_a_restart_as_seconds_left_on_the_new_clock(tmp_path: Path) -> None:
    wall = Wall()
    path = tmp_path / "bot.guard.sqlite"
    first, store1, _ = durable(path, wall)
    assert first.flood_block_sync(SCOPE, 1658.0) == pytest.approx(1658.0)
    store1.close()
    wall.t += 100.0  # the process restarts 100 s later, on a monotonic clock from elsewhere
    second, _, clock2 = durable(path, wall, start=5.0)
    assert second.flood_left_sync(SCOPE) == pytest.approx(1558.0)
    assert second.flood_table()[SCOPE] == pytest.approx(5.0 + 1558.0)  # on its own clock
    clock2.advance(1558.5)
    assert second.flood_left_sync(SCOPE) == 0.0


def test_expired_blocks_are_not_loaded_and_are_deleted(tmp_path: Path) -> None:
    wall = Wall()
    path = tmp_path / "s.guard.sqlite"
    first, store1, _ = durable(path, wall)
    first.flood_block_sync("acct:a/method:x", 10.0)
    first.flood_block_sync("acct:a/method:y", 100.0)
    store1.close()
    wall.t += 50.0
    second, store2, _ = durable(path, wall)
    assert set(second.flood_scopes()) == {"acct:a/method:y"}
    assert set(store2.floods()) == {"acct:a/method:y"}
    rows = sqlite3.connect(path).execute("SELECT scope FROM flood").fetchall()
    assert rows == [("acct:a/method:y",)]


def test_a_cleared_block_stays_cleared_after_a_restart(tmp_path: Path) -> None:
    wall = Wall()
    path = tmp_path / "s.guard.sqlite"
    first, store1, _ = durable(path, wall)
    first.flood_block_sync(SCOPE, 60.0)
    first.flood_clear_sync(SCOPE)
    store1.close()
    second, _, _ = durable(path, wall)
    assert second.flood_left_sync(SCOPE) == 0.0


def test_a_wrong_wall_clock_cannot_block_for_more_than_the_clamp(tmp_path: Path) -> None:
    wall = Wall()
    path = tmp_path / "s.guard.sqlite"
    conn = sqlite3.connect(path)
    SQLiteStore.open(path).close()  # creates the schema
    conn.execute("INSERT INTO flood VALUES (?, ?)", (SCOPE, wall.t + 10 * MAX_FLOOD_WAIT_CLAMP))
    conn.commit()
    conn.close()
    memory, _, _ = durable(path, wall)
    assert memory.flood_left_sync(SCOPE) == pytest.approx(MAX_FLOOD_WAIT_CLAMP)


def test_two_writers_keep_the_later_end_whatever_the_order(tmp_path: Path) -> None:
    wall = Wall()
    path = tmp_path / "shared.guard.sqlite"
    a, _, _ = durable(path, wall)
    b, _, _ = durable(path, wall)
    a.flood_block_sync(SCOPE, 300.0)
    b.flood_block_sync(SCOPE, 20.0)  # b did not know a's longer block: the file keeps 300
    third, store3, _ = durable(path, wall)
    assert third.flood_left_sync(SCOPE) == pytest.approx(300.0)
    assert store3.floods()[SCOPE] == pytest.approx(300.0)


def test_refresh_merges_what_another_process_committed(tmp_path: Path) -> None:
    wall = Wall()
    path = tmp_path / "shared.guard.sqlite"
    a, store_a, _ = durable(path, wall)
    b, _, _ = durable(path, wall)
    assert store_a.refresh() is False  # nothing new
    b.flood_block_sync(SCOPE, 120.0)
    assert a.flood_left_sync(SCOPE) == 0.0  # not seen yet: the hot path reads memory only
    assert store_a.refresh() is True
    assert a.flood_left_sync(SCOPE) == pytest.approx(120.0)
    assert store_a.refresh() is False  # merging wrote nothing back (no ping-pong)


def test_an_open_breaker_survives_a_restart_and_a_closed_one_is_forgotten(
        tmp_path: Path) -> None:
    wall = Wall()
    path = tmp_path / "s.guard.sqlite"
    key = "acct:a/dc:2"
    first, store1, _ = durable(path, wall)
    first.breaker_failure_sync(key, POLICY)
    d = first.breaker_failure_sync(key, POLICY)
    assert d.state == OPEN
    store1.close()
    wall.t += 10.0
    second, store2, clock2 = durable(path, wall)
    d = second.breaker_state_sync(key)
    assert (d.state, d.retry_after) == (OPEN, pytest.approx(20.0))
    assert second.breaker_acquire_sync(key, 60.0).decision == "reject"
    clock2.advance(20.0)
    assert second.breaker_acquire_sync(key, 60.0).decision == "probe"
    assert second.breaker_state_sync(key).state == HALF_OPEN
    assert second.breaker_success_sync(key).state == CLOSED
    store2.close()
    third, _, _ = durable(path, wall)
    assert third.breaker_keys() == []


def test_writes_are_one_row_each_and_fast_path_calls_write_nothing(tmp_path: Path) -> None:
    wall = Wall()
    path = tmp_path / "s.guard.sqlite"
    memory, store, _ = durable(path, wall)
    conn = sqlite3.connect(path)
    before = conn.execute("PRAGMA data_version").fetchone()[0]
    for _ in range(100):  # the per-call paths: no breaker, nothing blocked
        memory.breaker_acquire_sync("acct:a/dc:2", 60.0)
        memory.breaker_success_sync("acct:a/dc:2")
        memory.flood_left_sync(SCOPE)
    assert conn.execute("PRAGMA data_version").fetchone()[0] == before
    memory.flood_block_sync(SCOPE, 5.0)
    assert conn.execute("PRAGMA data_version").fetchone()[0] != before
    assert store.write_errors == 0


def test_wal_mode_and_busy_timeout_are_set(tmp_path: Path) -> None:
    path = tmp_path / "s.guard.sqlite"
    store = SQLiteStore.open(path, busy_timeout=0.3)
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 300


# ---------------------------------------------------------------- bad files, never a hang

def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.guard.sqlite"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(DurableStorageError) as info:
        SQLiteStore.open(path)
    assert info.value.field == "storage_path"
    assert str(path) in str(info.value)


def test_a_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.guard.sqlite"
    memory, store, _ = durable(path, Wall())
    for i in range(2000):
        memory.flood_block_sync(f"acct:a/method:m{i}", 100.0)
    store.close()
    data = bytearray(path.read_bytes())
    for page in range(1, len(data) // 4096):  # damage every b-tree page header but the first
        data[page * 4096:page * 4096 + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    for name in ("s.guard.sqlite-wal", "s.guard.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(DurableStorageError, match="storage_path"):
        SQLiteStore.open(path)


def test_a_directory_or_a_missing_directory_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(DurableStorageError, match="is a directory"):
        SQLiteStore.open(tmp_path)
    with pytest.raises(DurableStorageError, match=r"cannot open|not a usable"):
        SQLiteStore.open(tmp_path / "missing" / "s.guard.sqlite")


def test_a_file_locked_by_another_process_fails_within_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "s.guard.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # never committed while we open
    started = time.monotonic()
    with pytest.raises(DurableStorageError, match="storage_path"):
        SQLiteStore.open(path, busy_timeout=0.2)
    assert time.monotonic() - started < 10.0  # bounded (0.2 s per statement), not a hang
    holder.execute("ROLLBACK")
    holder.close()


def test_the_fallback_logs_and_keeps_memory_or_raises(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.guard.sqlite"
    path.write_bytes(b"not a database" * 100)
    memory = MemoryStorage()
    with caplog.at_level(logging.WARNING, logger="telethon_guard"):
        assert open_durable(memory, path, fallback="memory") is None
    assert memory.persist is None
    assert any("durable storage unavailable" in r.getMessage() for r in caplog.records)
    with pytest.raises(GuardConfigError) as info:
        open_durable(MemoryStorage(), path, fallback="fail")
    assert info.value.field == "storage_path"


def test_a_write_that_fails_later_is_logged_and_memory_keeps_the_block(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.guard.sqlite"
    memory, store, _ = durable(path, Wall())
    store._conn.execute("DROP TABLE flood")  # the file changed under us
    with caplog.at_level(logging.WARNING, logger="telethon_guard"):
        assert memory.flood_block_sync(SCOPE, 30.0) == pytest.approx(30.0)
    assert store.write_errors == 1
    assert memory.flood_left_sync(SCOPE) == pytest.approx(30.0)


# ---------------------------------------------------------------- settings and paths

def test_settings_are_validated_at_construction(tmp_path: Path) -> None:
    for bad in ({"durable_storage": "yes"}, {"durable_fallback": "ignore"},
                {"storage_path": ""}, {"storage_path": 42}, {"storage_path": ":memory:"},
                {"storage_path": str(tmp_path)},
                {"storage_path": str(tmp_path / "missing" / "x.sqlite")},
                {"storage_path": str(tmp_path / "x.sqlite"), "durable_storage": False},
                {"storage_path": str(tmp_path / "x.sqlite"), "storage": "memory"}):
        field = "storage_path" if "storage_path" in bad else next(iter(bad))
        with pytest.raises(GuardConfigError) as info:
            GuardConfig(**bad)
        assert info.value.field == field, bad
    ok = GuardConfig(storage_path=tmp_path / "x.sqlite")
    assert ok.storage_path == str(tmp_path / "x.sqlite")


def test_the_file_sits_next_to_a_file_session_and_memory_sessions_stay_in_memory(
        tmp_path: Path) -> None:
    cfg = GuardConfig()
    session = SQLiteSession(str(tmp_path / "bot"))
    try:
        assert durable_path(session, cfg) == str(tmp_path / "bot.guard.sqlite")
        assert durable_path(session, cfg.replace(durable_storage=False)) is None
        assert durable_path(session, cfg.replace(storage="memory")) is None
        explicit = str(tmp_path / "elsewhere.sqlite")
        assert durable_path(StringSession(), cfg.replace(storage_path=explicit)) == explicit
    finally:
        session.close()
    assert durable_path(StringSession(), cfg) is None


async def test_a_running_process_picks_up_another_process_block_within_the_refresh_interval(
        tmp_path: Path) -> None:
    from telethon_guard.storage.sqlite import REFRESH_INTERVAL

    path = tmp_path / "shared.guard.sqlite"
    running = MemoryStorage()
    store = SQLiteStore.open(path)
    store.attach(running)  # on a running loop: the refresh timer starts
    other = MemoryStorage()
    SQLiteStore.open(path).attach(other)
    other.flood_block_sync(SCOPE, 600.0)
    deadline = time.monotonic() + REFRESH_INTERVAL + 5.0
    while running.flood_left_sync(SCOPE) == 0.0:
        assert time.monotonic() < deadline, "not picked up"
        await asyncio.sleep(0.05)
    assert 590.0 < running.flood_left_sync(SCOPE) <= 600.0
    store.close()
    assert running.persist is None


def test_cleanup_deletes_expired_rows_only(tmp_path: Path) -> None:
    wall = Wall()
    path = tmp_path / "s.guard.sqlite"
    memory, store, _ = durable(path, wall)
    memory.flood_block_sync("acct:a/slowmode:peer:-1", 10.0)
    memory.flood_block_sync("acct:a/slowmode:peer:-2", 10.0)
    memory.flood_block_sync(SCOPE, 1000.0)
    wall.t += 11.0
    assert store.cleanup() == 2
    assert set(store.floods()) == {SCOPE}
    assert store.cleanup() == 0


def test_guard_of_an_existing_client_on_a_file_session_is_durable_too(tmp_path: Path) -> None:
    from telethon import TelegramClient

    from telethon_guard import guard

    client = TelegramClient(str(tmp_path / "old"), 1, "x")
    try:
        guard(client)
        store = client.guard.pipeline.storage.persist  # type: ignore[attr-defined]
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "old.guard.sqlite")
    finally:
        client.session.close()
