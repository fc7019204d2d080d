"""The event bus: async callbacks are bounded (one consumer per callback, a bounded queue,
counted and rate-limited drops), failures are logged (rate-limited), never swallowed."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from telethon_guard import GuardedTelegramClient, GuardWarning
from telethon_guard.events import (
    DEFAULT_MAX_PENDING,
    EventBus,
    GuardEvent,
    RequestFinished,
)
from telethon_guard.log_throttle import LogThrottle
from telethon_guard.stray_futures import retrieve_exception
from telethon_guard.testing import TelegramTestServer

BOUND = 20.0
REPO = Path(__file__).resolve().parents[2]


def finished(i: int) -> RequestFinished:
    return RequestFinished(method=f"m{i}", outcome="ok", duration=0.001)


def bus_tasks() -> int:
    """Tasks the event bus runs on this loop (its consumers; before: one per async event)."""
    return sum("EventBus" in getattr(t.get_coro(), "__qualname__", "")
               for t in asyncio.all_tasks())


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


async def test_slow_async_callback_gets_one_consumer_and_a_bounded_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    handled: list[str] = []

    async def slow(ev: GuardEvent) -> None:
        await release.wait()
        assert isinstance(ev, RequestFinished)
        handled.append(ev.method)

    bus = EventBus([slow])
    total = DEFAULT_MAX_PENDING * 5
    with caplog.at_level(logging.WARNING, logger="telethon_guard"):
        for i in range(total):  # a RequestFinished per call while the callback is stuck
            bus.emit(finished(i))
        await asyncio.sleep(0)
        # one consumer task for the callback, not one task per event
        assert bus_tasks() == 1
        assert bus.pending == DEFAULT_MAX_PENDING - 1  # and one being handled
        assert bus.dropped == total - DEFAULT_MAX_PENDING
        release.set()
        await asyncio.wait_for(bus.drain(), BOUND)
    # the queued events are delivered in order; the dropped ones never ran
    assert handled == [f"m{i}" for i in range(DEFAULT_MAX_PENDING)]
    assert bus.pending == 0 and bus_tasks() == 0
    # every drop counted, one WARNING line for all of them (rate-limited)
    drops = lines(caplog, "is behind")
    assert len(drops) == 1 and drops[0].levelno == logging.WARNING


async def test_a_stuck_async_callback_neither_blocks_calls_nor_grows_tasks() -> None:
    # a real guarded client, one RequestFinished per call, an async callback that is stuck
    release = asyncio.Event()
    handled: list[str] = []

    async def stuck(ev: GuardEvent) -> None:
        await release.wait()
        if isinstance(ev, RequestFinished):
            handled.append(ev.method)

    seen: list[str] = []

    def sync(ev: GuardEvent) -> None:
        if isinstance(ev, RequestFinished):
            seen.append(ev.method)

    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5, on_event=[stuck, sync])
        async with client:
            await asyncio.wait_for(client.get_me(), BOUND)
            for _ in range(30):
                await asyncio.wait_for(client.get_me(), BOUND)  # not held up by the callback
            assert bus_tasks() == 1  # one consumer, not one task per event
            assert client.guard.events.pending >= 30
            release.set()
            await asyncio.wait_for(client.guard.events.drain(), BOUND)
    # every event reached the async callback, in order, once it was released
    assert handled == seen and seen.count("users.getUsers") >= 31
    assert client.guard.events.dropped == 0


async def test_the_consumer_ends_when_idle_and_restarts_for_new_events() -> None:
    got: list[str] = []

    async def cb(ev: GuardEvent) -> None:
        assert isinstance(ev, RequestFinished)
        got.append(ev.method)

    bus = EventBus([cb], max_pending=2)
    bus.emit(finished(1))
    await asyncio.wait_for(bus.drain(), BOUND)
    bus.emit(finished(2))
    bus.emit(finished(3))
    bus.emit(finished(4))  # queue of 2 is full: dropped
    await asyncio.wait_for(bus.drain(), BOUND)
    assert got == ["m1", "m2", "m3"] and bus.dropped == 1
    with pytest.raises(ValueError, match="max_pending"):
        EventBus(max_pending=0)


async def test_repeated_callback_failures_are_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    def broken(ev: GuardEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("sync boom")

    async def broken_async(ev: GuardEvent) -> None:
        raise ValueError("async boom")

    bus = EventBus([broken, broken_async])
    with caplog.at_level(logging.ERROR, logger="telethon_guard"):
        for i in range(100):
            bus.emit(finished(i))
        await asyncio.wait_for(bus.drain(), BOUND)
    assert calls == 100
    logged = lines(caplog, "failed on RequestFinished")
    assert len(logged) == 2  # one line per callback, not one per event (200)
    errors = sorted(str(r.exc_info[1]) for r in logged if r.exc_info)
    assert errors == ["async boom", "sync boom"]  # each with its traceback


@dataclass(frozen=True)
class _Unprintable:
    def __format__(self, spec: str) -> str:
        raise RuntimeError("cannot format this field")


@dataclass(frozen=True)
class _OddEvent(GuardEvent):
    level = logging.WARNING
    field: _Unprintable


def test_an_event_that_cannot_be_logged_is_reported_not_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[GuardEvent] = []
    bus = EventBus([got.append])
    with caplog.at_level(logging.DEBUG, logger="telethon_guard"):
        bus.emit(_OddEvent(_Unprintable()))
    assert len(got) == 1  # callbacks still get it
    errors = lines(caplog, "logging the event _OddEvent failed")
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR and errors[0].exc_info


async def test_retrieved_exceptions_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.add_done_callback(retrieve_exception)
    with caplog.at_level(logging.DEBUG, logger="telethon_guard"):
        fut.set_exception(ConnectionResetError("peer went away"))
        await asyncio.sleep(0)
    found = lines(caplog, "ConnectionResetError: peer went away")
    assert len(found) == 1 and found[0].levelno == logging.DEBUG


def test_log_throttle_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("telethon_guard"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="telethon_guard"):
        assert throttle.log("k", logging.WARNING, "trouble %s", 1)
        assert not throttle.log("k", logging.WARNING, "trouble %s", 2)
        assert not throttle.log("k", logging.WARNING, "trouble %s", 3)
        assert throttle.log("other", logging.WARNING, "other trouble")  # keys are separate
        now[0] = 10.0
        assert throttle.log("k", logging.WARNING, "trouble %s", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "trouble 1", "other trouble", "trouble 4 (2 more since the last line)"]
    assert throttle.suppressed == 2
    assert caplog.records[0].filename == "test_event_bus.py"  # the caller's line, not ours
    with pytest.raises(ValueError):
        LogThrottle(logging.getLogger("x"), -1.0)


def test_a_wait_on_a_known_flood_logs_at_info_a_new_flood_wait_at_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    # A parallel download's parts each wait on the one FLOOD_WAIT the server sent: one WARNING
    # for the server's answer, INFO for the waits the ledger answers from it (a trial saw 38
    # WARNING lines for one download).
    from telethon_guard.events import FloodWaitStarted

    bus = EventBus()
    scope = "acct:1/method:upload.getFile"
    with caplog.at_level(logging.INFO, logger="telethon_guard"):
        bus.emit(FloodWaitStarted(method="upload.getFile", scope=scope, seconds=2.0))
        for _ in range(3):
            bus.emit(FloodWaitStarted(method="upload.getFile", scope=scope, seconds=0.0,
                                      from_server=False))
    levels = [r.levelno for r in caplog.records if r.getMessage().startswith("FloodWaitStarted")]
    assert levels == [logging.WARNING] + [logging.INFO] * 3


async def test_a_failing_callback_is_a_warning_once_per_line_and_logged_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The telethon_guard logger has only a NullHandler until the application sets logging up
    # (Python's lastResort handler is bypassed then): a trial's raising callbacks were silent.
    # The first failure at each line of the callback's code is a GuardWarning at that line.
    def broken(ev: GuardEvent) -> None:
        raise RuntimeError("sync boom")
    sync_line = broken.__code__.co_firstlineno + 1

    async def broken_async(ev: GuardEvent) -> None:
        raise ValueError("async boom")
    async_line = broken_async.__code__.co_firstlineno + 1

    bus = EventBus([broken, broken_async])
    with pytest.warns(GuardWarning) as caught, \
            caplog.at_level(logging.ERROR, logger="telethon_guard"):
        for i in range(5):
            bus.emit(finished(i))
        await asyncio.wait_for(bus.drain(), BOUND)
    ours = sorted((w.lineno, str(w.message)) for w in caught if w.filename == __file__)
    assert [line for line, _ in ours] == [sync_line, async_line]  # once each, not 5 times
    assert "broken raised RuntimeError: sync boom (on RequestFinished)" in ours[0][1]
    assert "broken_async raised ValueError: async boom" in ours[1][1]
    assert len(lines(caplog, "failed on RequestFinished")) == 2  # still logged at ERROR


def test_an_error_warnings_filter_does_not_make_emit_raise() -> None:
    def broken(ev: GuardEvent) -> None:
        raise RuntimeError("boom under -W error")

    got: list[GuardEvent] = []
    bus = EventBus([broken, got.append])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bus.emit(finished(1))  # the GuardWarning would raise here; emit never raises
    assert len(got) == 1


def test_warnings_are_shown_without_any_logging_setup(tmp_path: Path) -> None:
    # A user's script, default warnings filters, no logging configured: a raising callback
    # and a class overriding Telethon's _call are reported on stderr at the user's lines.
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent("""\
        from telethon import TelegramClient
        from telethon.sessions import StringSession
        from telethon_guard import guard
        from telethon_guard.events import EventBus, RequestFinished

        def broken(ev):
            raise RuntimeError("callback boom")

        class Logged(TelegramClient):
            async def _call(self, *args, **kwargs):
                return await super()._call(*args, **kwargs)

        bus = EventBus([broken])
        for _ in range(3):
            bus.emit(RequestFinished(method="m", outcome="ok", duration=0.001))
        guard(Logged(StringSession(), 1, "x" * 32))
        print("done")
        """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
    assert proc.stderr.count(f"{script}:7: GuardWarning: on_event callback broken raised "
                             "RuntimeError: callback boom") == 1, proc.stderr
    guard_line = script.read_text().splitlines().index(
        'guard(Logged(StringSession(), 1, "x" * 32))') + 1
    assert (f"{script}:{guard_line}: GuardWarning: __main__.Logged overrides Telethon's private "
            "_call") in proc.stderr, proc.stderr
