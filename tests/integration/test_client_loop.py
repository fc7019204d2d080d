"""The loop exception handler, retrieving done-callbacks and the loop-lag monitor."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections import defaultdict
from typing import Any

import pytest
from telethon import errors as tl_errors
from telethon.network.connection import ConnectionTcpFull

from telethon_guard import GuardedTelegramClient, LoopLagMonitor, install_exception_handler
from telethon_guard.errors import GuardConfigError, GuardConnectionError
from telethon_guard.events import StrayFutureRetrieved
from telethon_guard.loop import (
    GuardExceptionHandler,
    RetrievingTaskSet,
    acquire_exception_handler,
    current_handler,
    release_exception_handler,
    telethon_attribution,
    uninstall_exception_handler,
)
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import bounded


def _drop_failed_future(exc: BaseException) -> None:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_exception(exc)
    del fut


def _telethon_connection() -> ConnectionTcpFull:
    """A real Telethon connection object that is not connected (its send/recv raise
    Telethon's own ``ConnectionError('Not connected')``)."""
    return ConnectionTcpFull("127.0.0.1", 9, 2,
                             loggers=defaultdict(lambda: logging.getLogger("telethon")))


def _error_raised_by_telethon() -> ConnectionError:
    try:
        _telethon_connection().send(b"\0" * 8)
    except ConnectionError as e:
        return e
    raise AssertionError("Telethon's Connection.send did not raise")  # pragma: no cover


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
            _drop_failed_future(_error_raised_by_telethon())
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


@pytest.mark.allow_strays  # the Telethon task's stray is logged by the safety net
async def test_only_futures_attributable_to_telethon_are_swallowed() -> None:
    # Other libraries' never-retrieved OSError / TimeoutError / CancelledError are their bugs:
    # they must reach the handler installed before the guard's, uncounted.
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    try:
        handler = install_exception_handler(loop)

        async def other_library_task() -> None:
            raise TimeoutError("another library's timeout")

        # a coroutine whose file merely has "telethon" in its path is not Telethon's code
        namespace: dict[str, Any] = {}
        exec(compile("async def work():\n    raise OSError('not Telethon either')\n",
                     "/srv/my_telethon_bot/worker.py", "exec"), namespace)
        # a real Telethon coroutine (Connection.recv of a connection never connected)
        telethon_task = loop.create_task(_telethon_connection().recv())
        tasks = [loop.create_task(other_library_task()), loop.create_task(namespace["work"]()),
                 telethon_task]
        await bounded(asyncio.wait(tasks))
        del tasks, telethon_task
        _drop_failed_future(OSError("another library's socket"))
        _drop_failed_future(ConnectionResetError("another library's peer"))
        _drop_failed_future(asyncio.CancelledError())
        gc.collect()
        await asyncio.sleep(0)
        passed_on = sorted(type(ctx["exception"]).__name__ for ctx in seen)
        assert passed_on == ["CancelledError", "ConnectionResetError", "OSError", "OSError",
                             "TimeoutError"]
        assert handler.caught == 1 and handler.by_type == {"ConnectionError": 1}
    finally:
        uninstall_exception_handler(loop)
        loop.set_exception_handler(None)


def test_attribution_names_its_evidence() -> None:
    raised = _error_raised_by_telethon()
    assert telethon_attribution({"exception": raised}) == "raised in telethon"
    assert telethon_attribution({"exception": tl_errors.FloodWaitError(None, capture=3)}) == (
        "error type")
    assert telethon_attribution({"exception": GuardConnectionError("lost")}) == (
        "guard error type")
    assert telethon_attribution({"exception": ConnectionError("made here")}) is None
    assert telethon_attribution({"exception": GuardConfigError("deadline", "bad")}) is None


async def test_creation_stack_in_debug_mode_attributes_telethons_request_futures() -> None:
    # asyncio debug mode records who created a future: Telethon's RequestState creates the
    # future of every request, so a plain ConnectionError set on it is Telethon's.
    from telethon.network.requeststate import RequestState
    from telethon.tl.functions.help import GetConfigRequest

    loop = asyncio.get_running_loop()
    debug = loop.get_debug()
    loop.set_debug(True)
    try:
        state = RequestState(GetConfigRequest())
    finally:
        loop.set_debug(debug)
    error = ConnectionError("made here, set on Telethon's future")
    state.future.set_exception(error)
    assert telethon_attribution({"future": state.future, "exception": error}) == (
        "creation stack")
    state.future.exception()


async def test_a_client_disconnecting_keeps_the_users_installation() -> None:
    loop = asyncio.get_running_loop()
    mine = install_exception_handler(loop)
    try:
        async with TelegramTestServer() as server:
            client = server.client(cls=GuardedTelegramClient, deadline=5)
            await bounded(client.connect())
            assert current_handler(loop) is mine
            await bounded(client.disconnect())
            # the guard's release must not remove what the user installed
            assert current_handler(loop) is mine
            assert loop.get_exception_handler() is mine
            # and the user's uninstall waits for the clients still holding it
            await bounded(client.connect())
            uninstall_exception_handler(loop)
            assert loop.get_exception_handler() is mine
            await bounded(client.disconnect())
        assert current_handler(loop) is None
        assert loop.get_exception_handler() is None
    finally:
        uninstall_exception_handler(loop)
        loop.set_exception_handler(None)


def test_release_counts_owners_not_calls() -> None:
    loop = asyncio.new_event_loop()
    try:
        handler = acquire_exception_handler(loop)
        assert install_exception_handler(loop) is handler
        release_exception_handler(loop)
        release_exception_handler(loop)  # one release too many is harmless
        assert loop.get_exception_handler() is handler
        acquire_exception_handler(loop)
        uninstall_exception_handler(loop)
        assert loop.get_exception_handler() is handler
        release_exception_handler(loop)
        assert loop.get_exception_handler() is None and current_handler(loop) is None
    finally:
        loop.close()


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
    for bad, error in (("x", TypeError), (None, TypeError), (True, TypeError),
                       (math.inf, ValueError), (math.nan, ValueError)):
        with pytest.raises(error, match="interval"):
            LoopLagMonitor(interval=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="window"):
        LoopLagMonitor(window=1.5)  # type: ignore[arg-type]
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


async def test_retrieved_task_exceptions_are_logged_even_without_a_sink(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def dispatch() -> None:
        raise ConnectionError("update handler lost its connection")

    tasks = RetrievingTaskSet()  # no sink: the exception must still leave a trace
    with caplog.at_level(logging.DEBUG, logger="telethon_guard"):
        task = asyncio.get_running_loop().create_task(dispatch())
        tasks.add(task)
        await bounded(asyncio.wait([task]))
        await asyncio.sleep(0)
    found = [r for r in caplog.records
             if "event_handler_task: ConnectionError: update handler lost" in r.getMessage()]
    assert len(found) == 1 and found[0].levelno == logging.DEBUG


async def test_a_failed_lag_monitor_is_logged_when_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(LoopLagMonitor):
        async def _run(self) -> None:
            raise RuntimeError("ticker broke")

    mon = Broken(interval=0.005)
    mon.start()
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger="telethon_guard"):
        stats = await bounded(mon.stop())
    assert stats["samples"] == 0
    assert [r.getMessage() for r in caplog.records] == [
        "loop-lag monitor failed: RuntimeError('ticker broke')"]
