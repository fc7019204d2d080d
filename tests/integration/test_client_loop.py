"""The loop exception handler, retrieving done-callbacks and the loop-lag monitor."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import pytest
from telethon import errors as tl_errors

from telethon_guard import GuardedTelegramClient, LoopLagMonitor, install_exception_handler
from telethon_guard.events import StrayFutureRetrieved
from telethon_guard.loop import (
    GuardExceptionHandler,
    RetrievingTaskSet,
    current_handler,
    uninstall_exception_handler,
)
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import bounded


def _drop_failed_future(exc: BaseException) -> None:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_exception(exc)
    del fut


@pytest.mark.allow_strays
async def test_handler_counts_telethon_strays_and_chains_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    try:
        handler = install_exception_handler(loop)
        assert install_exception_handler(loop) is handler  # idempotent
        told: list[tuple[str, str]] = []
        handler.sinks.append(lambda source, exc: told.append((source, type(exc).__name__)))
        with caplog.at_level(logging.WARNING, logger="telethon_guard"):
            _drop_failed_future(tl_errors.InvalidBufferError(b"\xa3\xfe\xff\xff"))
            _drop_failed_future(ConnectionError("Connection reset by peer"))
            gc.collect()
            await asyncio.sleep(0)
        assert handler.caught == 2
        assert handler.by_type == {"InvalidBufferError": 1, "ConnectionError": 1}
        assert sorted(told) == [("loop_handler:future", "ConnectionError"),
                                ("loop_handler:future", "InvalidBufferError")]
        assert sum("stray Telethon" in r.getMessage() for r in caplog.records) == 2
        assert seen == []
        # anything else goes to the handler installed before ours
        loop.call_exception_handler({"message": "something else", "exception": KeyError(1)})
        _drop_failed_future(KeyError("not Telethon's"))
        gc.collect()
        await asyncio.sleep(0)
        assert handler.caught == 2
        assert len(seen) == 2
        uninstall_exception_handler(loop)
        assert loop.get_exception_handler() is not handler
        assert current_handler(loop) is None
    finally:
        loop.set_exception_handler(None)


async def test_clients_install_on_connect_and_uninstall_after_the_last() -> None:
    loop = asyncio.get_running_loop()
    assert current_handler(loop) is None
    async with TelegramTestServer() as server:
        a = server.client(cls=GuardedTelegramClient, deadline=5)
        b = server.client(cls=GuardedTelegramClient, deadline=5)
        await bounded(a.connect())
        handler = current_handler(loop)
        assert isinstance(handler, GuardExceptionHandler)
        assert loop.get_exception_handler() is handler
        await bounded(b.connect())
        assert current_handler(loop) is handler
        # update-dispatch tasks get a retrieving done-callback
        assert isinstance(a._event_handler_tasks, RetrievingTaskSet)
        await bounded(a.disconnect())
        assert current_handler(loop) is handler
        await bounded(b.disconnect())
        assert current_handler(loop) is None
        assert loop.get_exception_handler() is None


async def test_failing_event_handler_task_is_retrieved() -> None:
    # Telethon dispatches updates in tasks it never awaits; a task that ends with an
    # exception must not be reported as "Task exception was never retrieved".
    events: list[Any] = []
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5, on_event=events.append)
        async with client:
            async def boom() -> None:
                raise ConnectionError("handler lost its connection")

            task = asyncio.ensure_future(boom())
            client._event_handler_tasks.add(task)
            await asyncio.wait([task], timeout=5)
            del task
            gc.collect()
        handler = current_handler(asyncio.get_running_loop())
        assert handler is None
        strays = [e for e in events if isinstance(e, StrayFutureRetrieved)]
        assert [(e.source, e.error) for e in strays] == [("event_handler_task",
                                                          "ConnectionError")]


async def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    with pytest.raises(ValueError):
        LoopLagMonitor(interval=0)
    mon = LoopLagMonitor(interval=0.005)
    async with mon:
        await asyncio.sleep(0.05)
        time.sleep(0.08)  # noqa: ASYNC251 - block the loop on purpose
        await asyncio.sleep(0.03)
    stats = mon.stats()
    assert stats["samples"] >= 3
    assert stats["max"] >= 0.07
    assert stats["p50"] < stats["max"]
    assert not mon.running
