"""Stray futures: done-callbacks that retrieve the exceptions of Telethon's futures and tasks, and
a chained loop exception handler as the safety net for the ones Telethon leaves behind.

Telethon creates futures and tasks it may never await (the sender's ``disconnected`` future,
keepalive pings, the rest of a batch after one element fails, update-dispatch tasks). When
such a future completes with an exception and is garbage-collected, asyncio calls the loop's
exception handler with "Future exception was never retrieved" (or "Task exception was never
retrieved"), which by default logs a full traceback at ERROR. The guard retrieves those
exceptions with done-callbacks where the futures are created (:func:`retrieve_exception`,
:func:`retrieving`, :class:`RetrievingTaskSet`); the handler installed by
:func:`install_exception_handler` (or by a guarded client while it is connected) is the safety
net: it swallows and counts only what it can attribute to Telethon (see
:func:`telethon_attribution`) and passes everything else to the handler installed before it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Callable
from functools import lru_cache
from types import TracebackType
from typing import Any

import telethon
from telethon import errors as tl_errors

from .log_throttle import LogThrottle

log = logging.getLogger("telethon_guard")

_STRAY_MESSAGES = ("exception was never retrieved",)

# Exceptions Telethon's futures and tasks end with when a connection dies or a request fails:
# expected, logged as one line. Anything else from a Telethon future is logged with its traceback.
_NETWORK_TYPES: tuple[type[BaseException], ...] = (
    tl_errors.InvalidBufferError,
    tl_errors.RPCError,
    tl_errors.AuthKeyNotFound,
    ConnectionError,
    asyncio.IncompleteReadError,
    asyncio.CancelledError,
    TimeoutError,
    OSError,
)

STRAY_LOG_EVERY = 60.0
"""Seconds between two WARNING lines of the safety net for one exception type (the count in
:attr:`GuardExceptionHandler.caught` still sees every stray)."""

Handler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]
StraySink = Callable[[str, "BaseException | None"], None]
"""Told about every stray exception: ``sink(source, exception)`` (e.g. a client emitting
``StrayFutureRetrieved`` on its event bus)."""


def retrieve_exception(fut: asyncio.Future[Any]) -> None:
    """Done-callback that marks ``fut``'s exception as retrieved (no "never retrieved" log).

    Safe on cancelled futures. Attach with ``fut.add_done_callback(retrieve_exception)``. The
    exception is expected (the future's owner reports the failure another way); it is logged
    at DEBUG on the ``telethon_guard`` logger.
    """
    if not fut.cancelled():
        exc = fut.exception()
        if exc is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("retrieved the exception of an unawaited future: %s: %s",
                      type(exc).__name__, exc)


def retrieving(source: str, sink: StraySink | None) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback like :func:`retrieve_exception` that also tells ``sink`` about an
    exception it retrieved (``source`` names the future, e.g. ``"updates_handle"``); logged at
    DEBUG on the ``telethon_guard`` logger either way."""
    return _Retrieving(source, sink)


class _Retrieving:
    """:func:`retrieving`'s callback: a slotted object (~64 bytes) rather than a closure
    (~0.3 KiB), since every client holds a few."""

    __slots__ = ("sink", "source")

    def __init__(self, source: str, sink: StraySink | None) -> None:
        self.source = source
        self.sink = sink

    def __call__(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            return
        source = self.source
        if log.isEnabledFor(logging.DEBUG):
            log.debug("retrieved the exception of %s: %s: %s", source, type(exc).__name__, exc)
        sink = self.sink
        if sink is not None:
            try:
                sink(source, exc)
            except Exception:  # pragma: no cover
                log.exception("stray-future sink %r failed", sink)

    def __repr__(self) -> str:
        return f"<retrieving {self.source}>"


# ---- attribution: is this future Telethon's? -------------------------------------------------

_TELETHON_DIR = os.path.normcase(os.path.dirname(os.path.realpath(telethon.__file__))) + os.sep


@lru_cache(maxsize=1024)
def in_telethon(filename: str) -> bool:
    """Whether the source file ``filename`` belongs to the installed ``telethon`` package (a
    path under its directory, symlinks resolved; not a name match, so ``my_telethon_bot/``
    or ``telethon_guard/`` are not Telethon)."""
    if not filename or filename.startswith("<"):
        return False
    return os.path.normcase(os.path.realpath(filename)).startswith(_TELETHON_DIR)


def _raised_in_telethon(tb: TracebackType | None) -> bool:
    while tb is not None:
        if in_telethon(tb.tb_frame.f_code.co_filename):
            return True
        tb = tb.tb_next
    return False


def telethon_attribution(context: dict[str, Any]) -> str | None:
    """Why the future or task of a loop exception-handler ``context`` is Telethon's, or ``None``.

    A "never retrieved" context carries the future (or task) and its exception, nothing else:
    who created the future is not recorded unless the loop runs in debug mode. The evidence,
    in order (each is a fact about the object, never a guess from the exception's type alone):

    * ``"coroutine"``: a task whose coroutine is code of the ``telethon`` package (Telethon's
      update, keepalive, send/receive loops, update dispatch);
    * ``"creation stack"``: asyncio debug mode recorded the stack that created the future, and
      a frame of it is in ``telethon`` (e.g. ``RequestState`` creating a request's future);
    * ``"error type"``: the exception's class is defined in ``telethon`` (``InvalidBufferError``,
      an ``RPCError``, ``AuthKeyNotFound``): only Telethon's code raises those;
    * ``"guard error type"``: the class is one of telethon-guard's connection errors, which the
      guard's sender sets on Telethon's request futures (``GuardConnectionError``,
      ``TransportFloodError``, ``AuthKeyInvalidError``, ...) without raising them;
    * ``"raised in telethon"``: the exception's traceback runs through ``telethon``'s code
      (e.g. the ``ConnectionError`` Telethon's receive loop caught and set on its futures).

    An ``OSError`` / ``TimeoutError`` / ``CancelledError`` created elsewhere has none of these
    and is not Telethon's.
    """
    fut = context.get("task") or context.get("future")
    if fut is not None:
        get_coro = getattr(fut, "get_coro", None)
        coro = get_coro() if get_coro is not None else None
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is not None and in_telethon(code.co_filename):
            return "coroutine"
        created = getattr(fut, "_source_traceback", None)  # set in asyncio debug mode only
        if created and any(in_telethon(frame.filename) for frame in created):
            return "creation stack"
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        module = type(exc).__module__
        if module == "telethon" or module.startswith("telethon."):
            return "error type"
        if module.startswith("telethon_guard.") and isinstance(exc, _NETWORK_TYPES):
            return "guard error type"
        if _raised_in_telethon(exc.__traceback__):
            return "raised in telethon"
    return None


# ---- the safety net ---------------------------------------------------------------------------


class GuardExceptionHandler:
    """Loop exception handler swallowing the stray futures of Telethon, chaining the rest.

    A context is a Telethon stray when its message says an exception was never retrieved and
    :func:`telethon_attribution` attributes its future or task to Telethon. Telethon strays are
    counted in :attr:`caught` (and by exception type in :attr:`by_type`), told to every sink and
    logged as one WARNING line on the ``telethon_guard`` logger (at most one per exception type
    every :data:`STRAY_LOG_EVERY` seconds; with the traceback when the type is not a network
    error). Everything else, including never-retrieved ``OSError`` / ``TimeoutError`` /
    ``CancelledError`` of other libraries, goes to the previous handler (or the loop's default
    handler) unchanged.

    Ownership: :attr:`installed_by_user` (set by :func:`install_exception_handler`) and
    :attr:`refs` (guarded clients connected on the loop, :func:`acquire_exception_handler`).
    The handler is removed only when neither holds it.
    """

    def __init__(self, previous: Handler | None) -> None:
        self.previous = previous
        self.caught = 0
        self.by_type: dict[str, int] = {}
        self.refs = 0
        self.installed_by_user = False
        self.sinks: list[StraySink] = []
        self._throttle = LogThrottle(log, STRAY_LOG_EVERY)

    def is_stray(self, context: dict[str, Any]) -> bool:
        """Whether ``context`` reports a never-retrieved exception of a Telethon future."""
        message = str(context.get("message", ""))
        if not any(m in message for m in _STRAY_MESSAGES):
            return False
        return telethon_attribution(context) is not None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.is_stray(context):
            exc = context.get("exception")
            name = type(exc).__name__ if exc is not None else "unknown"
            self.caught += 1
            self.by_type[name] = self.by_type.get(name, 0) + 1
            expected = exc is None or isinstance(exc, _NETWORK_TYPES)
            self._throttle.log(
                name, logging.WARNING,
                "stray Telethon future/task exception retrieved by telethon-guard: %s: %s",
                name, exc, exc_info=None if expected else exc,
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


def _install(loop: asyncio.AbstractEventLoop) -> GuardExceptionHandler:
    current = loop.get_exception_handler()
    if isinstance(current, GuardExceptionHandler):
        _handlers[loop] = current
        return current
    existing = _handlers.get(loop)
    if existing is not None and current is existing.previous:
        loop.set_exception_handler(existing)
        return existing
    handler = GuardExceptionHandler(current)
    if existing is not None:  # someone replaced ours: keep its owners on the new one
        handler.refs, handler.installed_by_user = existing.refs, existing.installed_by_user
        handler.sinks = existing.sinks
    loop.set_exception_handler(handler)
    _handlers[loop] = handler
    return handler


def _remove_if_unowned(loop: asyncio.AbstractEventLoop) -> None:
    handler = _handlers.get(loop)
    if handler is None or handler.refs > 0 or handler.installed_by_user:
        return
    del _handlers[loop]
    if loop.get_exception_handler() is handler:
        loop.set_exception_handler(handler.previous)


def install_exception_handler(
    loop: asyncio.AbstractEventLoop | None = None,
) -> GuardExceptionHandler:
    """Install (idempotently) the guard's exception handler on ``loop`` (default: running loop).

    Chains to the handler installed before (``loop.get_exception_handler()``) or to the loop's
    default handler. Returns the handler; calling again returns the same object. The handler
    then belongs to the caller: guarded clients disconnecting do not remove it, only
    :func:`uninstall_exception_handler` does. Raises ``RuntimeError`` without a running loop
    when ``loop`` is ``None``.
    """
    loop = loop or asyncio.get_running_loop()
    handler = _install(loop)
    handler.installed_by_user = True
    return handler


def uninstall_exception_handler(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Undo :func:`install_exception_handler`: restore the previous handler on ``loop``.

    While guarded clients are connected on ``loop`` the handler stays until the last one
    disconnects. If someone installed another handler on top of ours since, theirs is left in
    place.
    """
    loop = loop or asyncio.get_running_loop()
    handler = _handlers.get(loop)
    if handler is not None:
        handler.installed_by_user = False
        _remove_if_unowned(loop)


def acquire_exception_handler(
    loop: asyncio.AbstractEventLoop, sink: StraySink | None = None
) -> GuardExceptionHandler:
    """Install the handler and count one more client using it (see :func:`release_...`);
    ``sink`` is told about every stray exception caught while the client is connected."""
    handler = _install(loop)
    handler.refs += 1
    if sink is not None:
        handler.sinks.append(sink)
    return handler


def release_exception_handler(
    loop: asyncio.AbstractEventLoop, sink: StraySink | None = None
) -> None:
    """Count one client less; remove the handler when the last client of ``loop``
    disconnected, unless the user installed it (:func:`install_exception_handler`)."""
    handler = _handlers.get(loop)
    if handler is None:
        return
    if sink is not None and sink in handler.sinks:
        handler.sinks.remove(sink)
    handler.refs = max(0, handler.refs - 1)
    _remove_if_unowned(loop)


def current_handler(loop: asyncio.AbstractEventLoop | None = None) -> GuardExceptionHandler | None:
    """The guard handler installed on ``loop``, if any."""
    loop = loop or asyncio.get_running_loop()
    return _handlers.get(loop)


class RetrievingTaskSet(set):
    """A ``set`` of tasks that attaches :func:`retrieve_exception` to every task added.

    Replaces ``TelegramClient._event_handler_tasks`` so update-dispatch tasks created by
    Telethon's update loop never log "Task exception was never retrieved".
    """

    __slots__ = ("sink",)  # no instance __dict__ (~0.4 KiB): one set per client

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sink: StraySink | None = None
        """Told about every exception retrieved from a task of the set (optional)."""

    def add(self, task: Any) -> None:
        if isinstance(task, asyncio.Future):
            task.add_done_callback(retrieving("event_handler_task", self.sink))
        super().add(task)


__all__ = [
    "STRAY_LOG_EVERY",
    "GuardExceptionHandler",
    "RetrievingTaskSet",
    "StraySink",
    "acquire_exception_handler",
    "current_handler",
    "install_exception_handler",
    "release_exception_handler",
    "retrieve_exception",
    "retrieving",
    "telethon_attribution",
    "uninstall_exception_handler",
]
