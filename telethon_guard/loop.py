"""Event-loop hygiene: a chained exception handler for Telethon's stray futures, done-callbacks
that retrieve exceptions, and a loop-lag monitor.

Telethon creates futures and tasks it may never await (the sender's ``disconnected`` future,
keepalive pings, the rest of a batch after one element fails, update-dispatch tasks). When
such a future completes with an exception and is garbage-collected, asyncio calls the loop's
exception handler with "Future exception was never retrieved" (or "Task exception was never
retrieved"), which by default logs a full traceback at ERROR. The guard retrieves those
exceptions with done-callbacks where the futures are created (:func:`retrieve_exception`); the
handler installed by :func:`install_exception_handler` is the safety net and counts what it
catches.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from telethon import errors as tl_errors

log = logging.getLogger("telethon_guard")

_STRAY_MESSAGES = ("exception was never retrieved",)

# Exceptions Telethon's futures and tasks end with when a connection dies or a request fails.
_STRAY_TYPES: tuple[type[BaseException], ...] = (
    tl_errors.InvalidBufferError,
    tl_errors.RPCError,
    tl_errors.AuthKeyNotFound,
    ConnectionError,
    asyncio.IncompleteReadError,
    asyncio.CancelledError,
    TimeoutError,
    OSError,
)

Handler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]
StraySink = Callable[[str, "BaseException | None"], None]
"""Told about every stray exception: ``sink(source, exception)`` (e.g. a client emitting
``StrayFutureRetrieved`` on its event bus)."""


def retrieve_exception(fut: asyncio.Future[Any]) -> None:
    """Done-callback that marks ``fut``'s exception as retrieved (no "never retrieved" log).

    Safe on cancelled futures. Attach with ``fut.add_done_callback(retrieve_exception)``.
    """
    if not fut.cancelled():
        fut.exception()


def retrieving(source: str, sink: StraySink | None) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback like :func:`retrieve_exception` that also tells ``sink`` about an
    exception it retrieved (``source`` names the future, e.g. ``"updates_handle"``)."""

    def callback(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None and sink is not None:
            try:
                sink(source, exc)
            except Exception:  # pragma: no cover
                log.exception("stray-future sink %r failed", sink)

    return callback


def _is_telethon_task(task: asyncio.Future[Any]) -> bool:
    get_coro = getattr(task, "get_coro", None)
    if get_coro is None:
        return False
    coro = get_coro()
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    filename = getattr(code, "co_filename", "") or ""
    return "telethon" in filename.replace("\\", "/").split("/site-packages/")[-1]


class GuardExceptionHandler:
    """Loop exception handler recognising Telethon's stray-future contexts.

    A context is "stray" when its message says an exception was never retrieved and the
    exception is one Telethon's network futures end with (``InvalidBufferError``,
    ``ConnectionError``, ``CancelledError``, ``RPCError``, ...) or the task's coroutine comes
    from Telethon / telethon-guard. Stray contexts are counted in :attr:`caught` (and by type
    in :attr:`by_type`) and logged as one WARNING line on the ``telethon_guard`` logger;
    everything else goes to the previous handler (or the loop's default handler).
    """

    def __init__(self, previous: Handler | None) -> None:
        self.previous = previous
        self.caught = 0
        self.by_type: dict[str, int] = {}
        self.refs = 0
        self.sinks: list[StraySink] = []

    def is_stray(self, context: dict[str, Any]) -> bool:
        message = str(context.get("message", ""))
        if not any(m in message for m in _STRAY_MESSAGES):
            return False
        exc = context.get("exception")
        if isinstance(exc, _STRAY_TYPES):
            return True
        fut = context.get("future") or context.get("task")
        return fut is not None and _is_telethon_task(fut)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.is_stray(context):
            exc = context.get("exception")
            name = type(exc).__name__ if exc is not None else "unknown"
            self.caught += 1
            self.by_type[name] = self.by_type.get(name, 0) + 1
            log.warning(
                "stray Telethon future/task exception retrieved by telethon-guard: %s: %s",
                name, exc,
            )
            source = "loop_handler:" + ("task" if context.get("task") is not None else "future")
            for sink in tuple(self.sinks):
                try:
                    sink(source, exc)
                except Exception:  # pragma: no cover - a sink must never break the loop
                    log.exception("stray-future sink %r failed", sink)
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


_handlers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GuardExceptionHandler] = (
    weakref.WeakKeyDictionary()
)


def install_exception_handler(
    loop: asyncio.AbstractEventLoop | None = None,
) -> GuardExceptionHandler:
    """Install (idempotently) the guard's exception handler on ``loop`` (default: running loop).

    Chains to the handler installed before (``loop.get_exception_handler()``) or to the loop's
    default handler. Returns the handler; calling again returns the same object.
    """
    loop = loop or asyncio.get_running_loop()
    current = loop.get_exception_handler()
    if isinstance(current, GuardExceptionHandler):
        _handlers[loop] = current
        return current
    existing = _handlers.get(loop)
    if existing is not None and current is existing.previous:
        loop.set_exception_handler(existing)
        return existing
    handler = GuardExceptionHandler(current)
    loop.set_exception_handler(handler)
    _handlers[loop] = handler
    return handler


def uninstall_exception_handler(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Remove the guard's handler from ``loop`` and restore the previous one.

    If someone installed another handler on top of ours since, theirs is left in place.
    """
    loop = loop or asyncio.get_running_loop()
    handler = _handlers.pop(loop, None)
    if handler is not None and loop.get_exception_handler() is handler:
        loop.set_exception_handler(handler.previous)


def acquire_exception_handler(
    loop: asyncio.AbstractEventLoop, sink: StraySink | None = None
) -> GuardExceptionHandler:
    """Install the handler and count one more client using it (see :func:`release_...`);
    ``sink`` is told about every stray exception caught while the client is connected."""
    handler = install_exception_handler(loop)
    handler.refs += 1
    if sink is not None:
        handler.sinks.append(sink)
    return handler


def release_exception_handler(
    loop: asyncio.AbstractEventLoop, sink: StraySink | None = None
) -> None:
    """Count one client less; uninstall when the last client of ``loop`` disconnected."""
    handler = _handlers.get(loop)
    if handler is None:
        return
    if sink is not None and sink in handler.sinks:
        handler.sinks.remove(sink)
    handler.refs -= 1
    if handler.refs <= 0:
        uninstall_exception_handler(loop)


def current_handler(loop: asyncio.AbstractEventLoop | None = None) -> GuardExceptionHandler | None:
    """The guard handler installed on ``loop``, if any."""
    loop = loop or asyncio.get_running_loop()
    return _handlers.get(loop)


class RetrievingTaskSet(set):
    """A ``set`` of tasks that attaches :func:`retrieve_exception` to every task added.

    Replaces ``TelegramClient._event_handler_tasks`` so update-dispatch tasks created by
    Telethon's update loop never log "Task exception was never retrieved".
    """

    sink: StraySink | None = None
    """Told about every exception retrieved from a task of the set (optional)."""

    def add(self, task: Any) -> None:
        if isinstance(task, asyncio.Future):
            task.add_done_callback(retrieving("event_handler_task", self.sink))
        super().add(task)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


class LoopLagMonitor:
    """Measures event-loop lag: how late a ``sleep(interval)`` wakes up (seconds, monotonic).

    ``interval`` is the ticker period in seconds (default 10 ms); ``window`` bounds how many
    samples are kept (memory is O(window)). Use ``start()`` / ``await stop()`` or
    ``async with LoopLagMonitor() as mon:``; :meth:`stats` returns ``p50``, ``p99``, ``max``
    (seconds) and ``samples``. Raises ``ValueError`` for a non-positive interval or window.
    """

    def __init__(self, interval: float = 0.01, window: int = 100_000) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0 seconds")
        if window <= 0:
            raise ValueError("window must be > 0")
        self.interval = interval
        self._samples: deque[float] = deque(maxlen=window)
        self._task: asyncio.Task[None] | None = None
        self._max = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> LoopLagMonitor:
        """Start ticking on the running loop (idempotent)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> dict[str, float]:
        """Stop ticking and return :meth:`stats`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return self.stats()

    def reset(self) -> None:
        self._samples.clear()
        self._max = 0.0

    async def _run(self) -> None:
        interval = self.interval
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            lag = max(0.0, time.monotonic() - before - interval)
            self._samples.append(lag)
            if lag > self._max:
                self._max = lag

    @property
    def samples(self) -> Iterable[float]:
        return tuple(self._samples)

    def stats(self) -> dict[str, float]:
        """``{"p50", "p99", "max"}`` lag in seconds and ``"samples"`` (count)."""
        values = sorted(self._samples)
        return {
            "p50": _percentile(values, 0.50),
            "p99": _percentile(values, 0.99),
            "max": self._max,
            "samples": float(len(values)),
        }

    async def __aenter__(self) -> LoopLagMonitor:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


__all__ = [
    "GuardExceptionHandler",
    "LoopLagMonitor",
    "RetrievingTaskSet",
    "acquire_exception_handler",
    "current_handler",
    "install_exception_handler",
    "release_exception_handler",
    "retrieve_exception",
    "retrieving",
    "uninstall_exception_handler",
]
