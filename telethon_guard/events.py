"""Typed, immutable guard events and the :class:`EventBus` that delivers them.

Every event is a frozen dataclass. The bus delivers each event to

* the ``telethon_guard`` logger, one line per event, at the event's ``level``;
* every ``on_event`` callback (sync, or async: the returned awaitable is queued for that
  callback's one consumer task, at most ``max_pending`` deep; see :class:`EventBus`).
  A failing callback never breaks (nor delays) the call that emitted the event: its first
  failure at a source line is a :class:`~telethon_guard.errors.GuardWarning` (shown by default),
  every failure is logged at ERROR on the ``telethon_guard`` logger (throttled).

Events never contain session strings, auth keys or phone numbers. Scopes and keys that name a
peer carry a short hash instead of the peer id unless ``GuardConfig.log_peer_ids`` is set
(see :func:`redact_peer`).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import re
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .errors import GuardWarning
from .log_throttle import LogThrottle

logger = logging.getLogger("telethon_guard")

_PEER_RE = re.compile(r"peer:(-?\d+)")


def redact_peer(text: str) -> str:
    """Replace every ``peer:<id>`` in ``text`` by ``peer#<6 hex digits of sha256(id)>``."""

    def sub(m: re.Match[str]) -> str:
        return "peer#" + hashlib.sha256(m.group(1).encode()).hexdigest()[:6]

    return _PEER_RE.sub(sub, text)


@dataclass(frozen=True)
class GuardEvent:
    """Base class of every event. ``account`` is the guard's account key (never a phone)."""

    level: ClassVar[int] = logging.INFO

    def log_level(self) -> int:
        """The level this event is logged at (its class's ``level`` unless a field says
        otherwise)."""
        return self.level

    def describe(self) -> str:
        """One log line: the event name and its fields as ``key=value``."""
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float):
                v = f"{v:.3f}"
            parts.append(f"{f.name}={v}")
        return f"{type(self).__name__} " + " ".join(parts)


@dataclass(frozen=True)
class FloodWaitStarted(GuardEvent):
    """A call waits for a flood scope. ``seconds`` to wait; ``from_server``: a new FLOOD_WAIT
    from Telegram, logged at WARNING; else the flood ledger answered from an earlier one (that
    one was the warning), logged at INFO."""

    level: ClassVar[int] = logging.WARNING
    method: str
    scope: str
    seconds: float
    from_server: bool = True
    account: str | None = None

    def log_level(self) -> int:
        return logging.WARNING if self.from_server else logging.INFO


@dataclass(frozen=True)
class FloodWaitEnded(GuardEvent):
    """A wait for ``scope`` ended after ``seconds``."""

    method: str
    scope: str
    seconds: float
    account: str | None = None


@dataclass(frozen=True)
class FloodBlocked(GuardEvent):
    """A call was refused at once: the flood wait (``seconds`` left) does not fit its budget."""

    level: ClassVar[int] = logging.WARNING
    method: str
    scope: str
    seconds: float
    from_server: bool
    account: str | None = None


@dataclass(frozen=True)
class PaceLearned(GuardEvent):
    """Adaptive pacing learned (or relaxed) the pace of ``method``: ``count`` per ``period`` s."""

    method: str
    count: int
    period: float
    account: str | None = None


@dataclass(frozen=True)
class RequestLimited(GuardEvent):
    """The rate limiter delayed a call by ``waited`` seconds (``key``: the binding key)."""

    level: ClassVar[int] = logging.DEBUG
    key: str
    waited: float
    method: str = ""
    account: str | None = None


@dataclass(frozen=True)
class RetryScheduled(GuardEvent):
    """Attempt ``attempt`` (1-based) failed with ``error``; the next starts after ``delay`` s."""

    level: ClassVar[int] = logging.WARNING
    error: str
    attempt: int
    delay: float
    method: str = ""
    account: str | None = None


@dataclass(frozen=True)
class RetriesExhausted(GuardEvent):
    """The retry budget ended after ``attempts`` attempts; ``error`` is raised to the caller."""

    level: ClassVar[int] = logging.ERROR
    error: str
    attempts: int
    method: str = ""
    account: str | None = None


@dataclass(frozen=True)
class TransportErrorEvent(GuardEvent):
    """A transport error ``code`` (-429, -404, ...) in ``framing`` (e.g. ``"full"``) if known."""

    level: ClassVar[int] = logging.WARNING
    code: int
    framing: str | None = None
    dc_id: int | None = None
    account: str | None = None


@dataclass(frozen=True)
class ReconnectAttempt(GuardEvent):
    """Connection attempt ``attempt`` to ``dc_id`` after waiting ``delay`` s (paced)."""

    dc_id: int | None
    attempt: int
    delay: float = 0.0
    account: str | None = None


@dataclass(frozen=True)
class ReconnectSucceeded(GuardEvent):
    """Reconnected to ``dc_id`` after ``attempts`` attempts and ``downtime`` s."""

    dc_id: int | None
    attempts: int
    downtime: float = 0.0
    account: str | None = None


@dataclass(frozen=True)
class ReconnectGaveUp(GuardEvent):
    """No reconnect to ``dc_id`` within ``seconds`` (``max_reconnect_seconds``): the
    ``failed_calls`` pending calls failed, new calls fail fast until a reconnect succeeds
    (attempts go on at the pacer's pace). ``code``: the last transport error code (e.g. -429),
    ``None`` for a lost connection without one."""

    level: ClassVar[int] = logging.WARNING
    dc_id: int | None
    seconds: float | None
    failed_calls: int
    code: int | None = None
    account: str | None = None


@dataclass(frozen=True)
class BreakerStateChanged(GuardEvent):
    """The breaker ``key`` moved from ``old`` to ``new`` (``"CLOSED"``/``"OPEN"``/``"HALF_OPEN"``);
    ``retry_after``: seconds until a probe is allowed when OPEN."""

    level: ClassVar[int] = logging.WARNING
    key: str
    old: str
    new: str
    retry_after: float | None = None
    account: str | None = None


@dataclass(frozen=True)
class StrayFutureRetrieved(GuardEvent):
    """An exception nobody awaited was retrieved (``source``: which future; ``error``: its type)."""

    level: ClassVar[int] = logging.DEBUG
    source: str
    error: str
    account: str | None = None


@dataclass(frozen=True)
class DeadlineExceededEvent(GuardEvent):
    """A call ran out of its ``deadline`` (s) while in ``stage`` (limiter/flood/backoff/network)."""

    level: ClassVar[int] = logging.WARNING
    method: str
    deadline: float
    stage: str
    account: str | None = None


@dataclass(frozen=True)
class RequestFinished(GuardEvent):
    """One logical call through the pipeline ended (after every retry and wait).

    ``method``: TL method name (a bounded set, safe as a metric label); ``outcome``: a small
    fixed vocabulary from :func:`request_outcome` (``"ok"``, ``"flood_wait"``,
    ``"circuit_open"``, ``"deadline"``, ``"transport_flood"``, ``"connection"``,
    ``"auth_key"``, ``"delivered"``, ``"server_error"``, ``"rpc_error"``, ``"cancelled"``,
    ``"error"``); ``error``: the exception's type name (``""`` when ok); ``duration``: seconds
    on the guard clock from entering the pipeline to the result; ``attempts``: network
    attempts made. Logged at DEBUG; emitted only when
    :attr:`EventBus.wants_request_events` (a callback subscribed for it, or DEBUG logging).
    """

    level: ClassVar[int] = logging.DEBUG
    method: str
    outcome: str
    duration: float
    error: str = ""
    attempts: int = 0
    account: str | None = None


OUTCOMES: tuple[str, ...] = (
    "ok", "flood_wait", "circuit_open", "deadline", "transport_flood", "connection",
    "auth_key", "delivered", "server_error", "rpc_error", "cancelled", "error",
)
"""Every value :func:`request_outcome` returns (the ``outcome`` label of requests_total)."""


def request_outcome(exc: BaseException | None) -> str:
    """The bounded outcome category of a call that raised ``exc`` (``None``: ``"ok"``).

    Guard errors are checked first (they subclass Telethon's / builtin errors on purpose):
    ``FloodWaitBlocked`` & co. and Telegram's FLOOD_WAIT / SLOWMODE_WAIT -> ``"flood_wait"``;
    ``CircuitOpenError`` -> ``"circuit_open"``; ``DeadlineExceeded`` / ``AttemptTimeoutError``
    / ``TimeoutError`` -> ``"deadline"``; ``TransportFloodError`` -> ``"transport_flood"``;
    ``AuthKeyInvalidError`` / ``AuthKeyNotFound`` -> ``"auth_key"``; ``AlreadyDelivered`` /
    RANDOM_ID_DUPLICATE -> ``"delivered"``; other ``ConnectionError`` -> ``"connection"``;
    Telegram 5xx and -503 -> ``"server_error"``; any other RPC error -> ``"rpc_error"``;
    ``CancelledError`` -> ``"cancelled"``; anything else -> ``"error"``.
    """
    if exc is None:
        return "ok"
    from telethon import errors as tl_errors

    from . import errors as g

    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, g.AlreadyDelivered | tl_errors.RandomIdDuplicateError):
        return "delivered"
    if isinstance(exc, g.CircuitOpenError):
        return "circuit_open"
    if isinstance(exc, g.TransportFloodError):
        return "transport_flood"
    if isinstance(exc, g.AuthKeyInvalidError | tl_errors.AuthKeyNotFound):
        return "auth_key"
    if isinstance(exc, tl_errors.FloodError):  # 420: FLOOD_WAIT, SLOWMODE_WAIT, premium
        return "flood_wait"
    if isinstance(exc, TimeoutError):
        return "deadline"
    if isinstance(exc, ConnectionError):
        return "connection"
    if isinstance(exc, tl_errors.ServerError | tl_errors.TimedOutError):
        return "server_error"
    if isinstance(exc, tl_errors.RPCError):
        return "rpc_error"
    return "error"


@dataclass(frozen=True)
class ObservedDelay(GuardEvent):
    """``observe_only``: ``layer`` would have delayed (``seconds`` > 0) or blocked the call."""

    layer: str
    key: str
    seconds: float
    would_block: bool = False
    method: str = ""
    account: str | None = None


@dataclass(frozen=True)
class StorageFallback(GuardEvent):
    """Shared storage ``backend`` is down (``active=True``: using local state) or back."""

    level: ClassVar[int] = logging.ERROR
    backend: str
    reason: str
    active: bool = True


DEFAULT_MAX_PENDING = 1000
"""Events queued per async ``on_event`` callback before new ones are dropped (memory bound:
about this many pending coroutines per callback)."""

CALLBACK_LOG_EVERY = 60.0
"""Seconds between two log lines about one callback (failures, drops): they can repeat per call."""


class _Consumer:
    """One async callback's bounded queue of awaitables and the one task awaiting them in order."""

    __slots__ = ("callback", "queue", "task")

    def __init__(self, callback: Callable[[GuardEvent], Any]) -> None:
        self.callback = callback
        self.queue: deque[tuple[Awaitable[Any], GuardEvent]] = deque()
        self.task: asyncio.Task[None] | None = None


_WARNED_AT: set[tuple[str, int]] = set()
"""Source lines (file, line) of on_event callbacks whose failure was warned about already."""
_MAX_WARNED = 256
"""Bound of :data:`_WARNED_AT`; beyond it failures are only logged."""


def warn_callback_failed(callback: Callable[..., Any], event: GuardEvent,
                         exc: BaseException) -> None:
    """Issue a :class:`~telethon_guard.errors.GuardWarning` for ``exc`` raised by an ``on_event``
    ``callback`` on ``event``, once per source line it was raised from (the callback's own
    frame: ``warnings`` shows that file and line), for the whole process. Never raises (a
    ``"error"`` warnings filter is swallowed: the failure is logged anyway)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next  # the bus's own frame -> the callback's (or its coroutine's) frame
    if tb is None:
        return
    frame = tb.tb_frame
    where = (frame.f_code.co_filename, tb.tb_lineno)
    if where in _WARNED_AT or len(_WARNED_AT) >= _MAX_WARNED:
        return
    _WARNED_AT.add(where)
    name = getattr(callback, "__qualname__", None) or repr(callback)
    try:
        warnings.warn_explicit(
            f"on_event callback {name} raised {type(exc).__name__}: {exc} (on "
            f"{type(event).__name__}); the guard skips it and the call goes on. Said once for "
            "this line; every failure is logged at ERROR on the 'telethon_guard' logger",
            GuardWarning, where[0], where[1], module=frame.f_globals.get("__name__"),
            module_globals=frame.f_globals)
    except Exception:  # a warnings filter "error": the failure is logged anyway
        pass


class EventBus:
    """Delivers events to the ``telethon_guard`` logger and to ``on_event`` callbacks.

    ``emit`` never raises and never blocks. A callback raising is logged at ERROR (with
    traceback; at most one line per callback every :data:`CALLBACK_LOG_EVERY` seconds, saying
    how many were left out) and skipped; the first failure raised at each source line (of the
    callback's own code) is also a :class:`~telethon_guard.errors.GuardWarning` pointing at
    that line, because the library's logger has only a ``NullHandler`` until the application
    configures logging (see :func:`warn_callback_failed`). An async callback (one returning an
    awaitable) is called in ``emit`` and its awaitable queued for that callback: ONE consumer
    task per callback awaits them in order on the running loop, so a slow callback holds at
    most ``max_pending`` (default :data:`DEFAULT_MAX_PENDING`) queued events plus the one it
    is handling, not one task per event. When its queue is full
    the new event is dropped for that callback (the coroutine is closed, never run): counted in
    :attr:`dropped` and logged as a rate-limited WARNING. The consumer task ends when its queue
    is empty. Without a running loop the awaitable is closed and skipped (logged). ``redact``
    (default ``True``) replaces peer ids in the log line by a hash; callbacks get the event as
    emitted (layers already redact scopes). Raises ``ValueError`` for ``max_pending`` < 1.
    """

    __slots__ = ("_callbacks", "_consumers", "_log", "_quiet", "_tasks", "_throttle",
                 "dropped", "max_pending", "redact")

    def __init__(self, callbacks: Iterable[Callable[[GuardEvent], Any]] = (), *,
                 log: logging.Logger | None = None, redact: bool = True,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an int >= 1, got {max_pending!r}")
        self._callbacks: list[Callable[[GuardEvent], Any]] = list(callbacks)
        self._log = log or logger
        self._throttle = LogThrottle(self._log, CALLBACK_LOG_EVERY)
        # the consumer tasks running (a dict as an ordered set: an empty set costs 216 bytes,
        # an empty dict 64, and every client has a bus)
        self._tasks: dict[asyncio.Task[None], None] = {}
        self._consumers: dict[int, _Consumer] = {}  # id(callback) -> its queue, while pending
        self._quiet: list[Callable[[GuardEvent], Any]] = []
        self.redact = redact
        self.max_pending = max_pending
        self.dropped = 0
        """Events not delivered to an async callback because its queue was full (or no loop)."""

    def subscribe(self, callback: Callable[[GuardEvent], Any], *,
                  request_events: bool = True) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it again (idempotent).

        ``request_events=False``: the callback does not need :class:`RequestFinished`, so it
        alone does not make the pipeline build one per call (it still receives them when
        another listener wants them).
        """
        self._callbacks.append(callback)
        if not request_events:
            self._quiet.append(callback)

        def unsubscribe() -> None:
            for subscribed in (self._callbacks, self._quiet):
                if callback in subscribed:
                    subscribed.remove(callback)

        return unsubscribe

    @property
    def wants_request_events(self) -> bool:
        """``True`` when a :class:`RequestFinished` per call would be seen: a callback
        subscribed without ``request_events=False``, or DEBUG logging enabled."""
        return (len(self._callbacks) > len(self._quiet)
                or self._log.isEnabledFor(logging.DEBUG))

    def listener_tables(self) -> tuple[list[Any], list[Any], Callable[[int], bool]]:
        """``(callbacks, quiet, is_enabled_for)``: the live lists behind
        :attr:`wants_request_events` (read only) and the logger's ``isEnabledFor``, so a
        caller can ask it without this property's call: ``len(callbacks) > len(quiet) or
        is_enabled_for(logging.DEBUG)`` (the straight lane, :mod:`telethon_guard.lane`)."""
        return self._callbacks, self._quiet, self._log.isEnabledFor

    @property
    def has_listeners(self) -> bool:
        """``True`` when an event would be seen by a callback or by an enabled log level."""
        return bool(self._callbacks) or self._log.isEnabledFor(logging.DEBUG)

    @property
    def pending(self) -> int:
        """Events queued for async callbacks whose handling has not started yet."""
        return sum(len(c.queue) for c in self._consumers.values())

    def emit(self, event: GuardEvent) -> None:
        """Deliver ``event``; never raises, never waits."""
        try:
            level = event.log_level()
            if self._log.isEnabledFor(level):
                line = event.describe()
                if self.redact:
                    line = redact_peer(line)
                self._log.log(level, "%s", line)
        except Exception:  # a field's __format__ or a logging filter raising
            self._throttle.log("describe:" + type(event).__name__, logging.ERROR,
                               "logging the event %s failed", type(event).__name__,
                               exc_info=True)
        for cb in tuple(self._callbacks):
            try:
                result = cb(event)
            except Exception as exc:
                warn_callback_failed(cb, event, exc)
                self._throttle.log(f"failed:{id(cb)}", logging.ERROR,
                                   "on_event callback %r failed on %s", cb,
                                   type(event).__name__, exc_info=True)
                continue
            if inspect.isawaitable(result):
                self._enqueue(cb, result, event)

    def _enqueue(self, cb: Callable[[GuardEvent], Any], awaitable: Awaitable[Any],
                 event: GuardEvent) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _close(awaitable)
            self.dropped += 1
            self._throttle.log(f"no-loop:{id(cb)}", logging.WARNING,
                               "async on_event callback %r skipped: no running loop", cb)
            return
        consumer = self._consumers.get(id(cb))
        if consumer is None:
            consumer = self._consumers[id(cb)] = _Consumer(cb)
        if len(consumer.queue) < self.max_pending:
            consumer.queue.append((awaitable, event))
        else:
            _close(awaitable)
            self.dropped += 1
            self._throttle.log(
                f"full:{id(cb)}", logging.WARNING,
                "async on_event callback %r is behind: %d events queued (max_pending), "
                "dropped %s for it (%d dropped in all)",
                cb, len(consumer.queue), type(event).__name__, self.dropped)
        task = consumer.task
        if task is None or task.done() or task.get_loop() is not loop:
            # none yet, finished, or stranded on a loop that no longer runs
            task = consumer.task = loop.create_task(self._consume(consumer))
            self._tasks[task] = None
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def _consume(self, consumer: _Consumer) -> None:
        queue = consumer.queue
        try:
            while queue:
                awaitable, event = queue.popleft()
                try:
                    await awaitable
                except Exception as exc:
                    warn_callback_failed(consumer.callback, event, exc)
                    self._throttle.log(
                        f"failed:{id(consumer.callback)}", logging.ERROR,
                        "async on_event callback %r failed on %s: %r", consumer.callback,
                        type(event).__name__, exc, exc_info=exc)
        finally:
            if queue:  # cancelled (loop shutdown): the rest is never delivered
                left = len(queue)
                while queue:
                    _close(queue.popleft()[0])
                self.dropped += left
                self._log.warning("async on_event callback %r stopped: %d queued events "
                                  "dropped", consumer.callback, left)
            if self._consumers.get(id(consumer.callback)) is consumer and not queue:
                del self._consumers[id(consumer.callback)]

    async def drain(self) -> None:
        """Wait until the async callbacks have handled every event queued so far (tests,
        shutdown)."""
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)


def _close(awaitable: Awaitable[Any]) -> None:
    """Close a coroutine that will never run (no "never awaited" warning)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


EVENT_ROUTE: ContextVar[Any] = ContextVar("telethon_guard_event_route", default=None)
"""The event bus of the client whose call runs in this context (set by ``Pipeline.invoke``
when its layers are shared with other clients; ``None`` otherwise)."""


class RoutedEvents:
    """The event hub of guard layers shared by several clients (one ``GuardConfig`` and one
    local storage, :func:`telethon_guard.pipeline.shared_layers`): each event goes to the bus
    of the client whose call is running (:data:`EVENT_ROUTE`), so every client's
    ``guard.events`` subscribers, ``stats()`` and ``on_event`` see its own events exactly as
    with layers of its own; outside any call, to ``fallback`` (``config.on_event`` and the
    ``telethon_guard`` logger)."""

    __slots__ = ("fallback",)

    def __init__(self, fallback: EventBus) -> None:
        self.fallback = fallback

    def current(self) -> EventBus:
        """The bus an event emitted now goes to."""
        bus = EVENT_ROUTE.get()
        return bus if bus is not None else self.fallback

    def emit(self, event: GuardEvent) -> None:
        self.current().emit(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)


__all__ = [
    "CALLBACK_LOG_EVERY",
    "DEFAULT_MAX_PENDING",
    "EVENT_ROUTE",
    "OUTCOMES",
    "BreakerStateChanged",
    "DeadlineExceededEvent",
    "EventBus",
    "FloodBlocked",
    "FloodWaitEnded",
    "FloodWaitStarted",
    "GuardEvent",
    "ObservedDelay",
    "PaceLearned",
    "ReconnectAttempt",
    "ReconnectGaveUp",
    "ReconnectSucceeded",
    "RequestFinished",
    "RequestLimited",
    "RetriesExhausted",
    "RetryScheduled",
    "RoutedEvents",
    "StorageFallback",
    "StrayFutureRetrieved",
    "TransportErrorEvent",
    "redact_peer",
    "request_outcome",
]
