"""The guard's hook into Telethon, shared by :class:`~telethon_guard.GuardedTelegramClient`
and :func:`guard` (which protects a client someone else created).

Hook points (Telethon 1.45, see docs design.md §2):

* ``_call(sender, request, ordered, flood_sleep_threshold)``: every request of the client,
  on the main sender and on exported other-DC senders (downloads), and batched lists. Each
  request (each element of a list) becomes one :class:`~telethon_guard.call.CallInfo` and goes
  through ``Pipeline.invoke`` with a ``send()`` that makes exactly one network attempt.
  Telethon's own flood sleeping, flat 2 s retries and flood memo never act: its
  ``flood_sleep_threshold`` is 0 and its ``_flood_waited_requests`` memo never stores.
* ``connect()``: the init request ``InvokeWithLayer(InitConnection(GetConfig))`` that Telethon
  sends straight to the sender goes through the pipeline too; a failed connect after the
  sender came up is rolled back with a disconnect before the error is raised.
* ``_create_exported_sender(dc_id)``: other-DC senders are guarded senders and their
  ``InvokeWithLayer(InitConnection(ImportAuthorization))`` goes through the pipeline.

``guard(client)`` uses :mod:`wrapt` (``FunctionWrapper``) to wrap the *instance's* bound
``_call``, ``connect``, ``is_user_authorized``, ``_create_exported_sender``,
``_get_cdn_client`` and ``_disconnect_coro`` (instance attributes shadow the class's methods,
and Telethon always calls them through ``self``), switches Telethon's flood sleeping and memo
off on the instance and, unless connected, swaps in the guarded sender. Limits of that
approach:

* ``client(request, flood_sleep_threshold=...)`` goes through ``TelegramClient.__call__``,
  looked up on the class, which drops ``flood_sleep_threshold``; the config's
  ``max_flood_wait`` applies (use :class:`GuardedTelegramClient` for per-call overrides).
* If the client is already connected, its current (Telethon) sender is kept until the next
  ``connect()`` after a disconnect (no paced -429 reconnects until then); calls are guarded
  at once, and ``disconnect()`` cancelling in-flight requests still reaches callers as
  ``ClientDisconnectedError``.
* The wrapping lives on that one object (and on the CDN clients Telethon creates from it,
  which share its guard); ``type(client)`` is unchanged, so ``isinstance`` checks against
  :class:`GuardedTelegramClient` are false.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import logging
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import wrapt
from telethon import errors as tl_errors
from telethon import helpers, utils
from telethon.network import MTProtoSender
from telethon.tl import functions
from telethon.tl.alltlobjects import LAYER
from telethon.tl.tlobject import TLRequest

from . import _telethon as tl
from . import _tl
from .call import TRANSFER_METHODS, CallInfo
from .clock import MonotonicClock
from .errors import ClientDisconnectedError, GuardConfigError, GuardConnectionError, GuardError
from .health import current_deadline
from .keys import is_idempotent
from .loop import (
    RetrievingTaskSet,
    StraySink,
    acquire_exception_handler,
    release_exception_handler,
    retrieve_exception,
    retrieving,
)
from .update_path import update_loop_client

if TYPE_CHECKING:
    from telethon import TelegramClient

    from .config import GuardConfig
    from .pipeline import Pipeline

log = logging.getLogger("telethon_guard")

T = TypeVar("T")

_MIGRATE_ERRORS = (
    tl_errors.PhoneMigrateError,
    tl_errors.NetworkMigrateError,
    tl_errors.UserMigrateError,
)
_MAX_DC_SWITCHES = 3

# Set while a guarded client builds a CDN client (``self.__class__(...)``), so the new
# instance shares the parent's guard (same pipeline, flood ledger, limiter and breaker).
_parent_guard: contextvars.ContextVar[GuardState | None] = contextvars.ContextVar(
    "telethon_guard_parent", default=None
)

_NOT_A_REQUEST = "You can only invoke requests, not types!"
_NO_RESOLVE = TLRequest.resolve  # a no-op coroutine: requests without entities to resolve


class _NeverRemember(dict):
    """Stand-in for Telethon's ``_flood_waited_requests``: remembers nothing, so Telethon's
    own flood memo can never answer (or sleep) for the guard's flood ledger."""

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


# ---- configuration -----------------------------------------------------------------------


def _config_fields() -> frozenset[str]:
    from .config import GuardConfig

    return frozenset(f.name for f in dataclasses.fields(GuardConfig))


def build_config(
    guard_config: GuardConfig | None = None,
    preset: str | None = None,
    **fields: Any,
) -> GuardConfig:
    """Make the :class:`GuardConfig` from the client's guard keywords.

    Exactly one style: ``guard_config=GuardConfig(...)``, or ``preset="user"|"bot"`` plus
    optional field overrides, or field keywords alone (defaults for the rest). Raises
    :class:`~telethon_guard.errors.GuardConfigError` for invalid values or mixed styles and
    ``TypeError`` for a keyword that is no guard setting.
    """
    from .config import GuardConfig

    known = _config_fields()
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}: "
            "neither a Telethon nor a telethon-guard setting"
        )
    if guard_config is not None:
        if not isinstance(guard_config, GuardConfig):
            raise GuardConfigError("guard_config", "must be a telethon_guard.GuardConfig")
        if preset is not None or fields:
            raise GuardConfigError(
                "guard_config", "pass either guard_config=... or preset/field keywords, not both"
            )
        return guard_config
    if preset is not None:
        if preset == "user":
            base = GuardConfig.for_user()
        elif preset == "bot":
            base = GuardConfig.for_bot()
        else:
            raise GuardConfigError("preset", f"must be 'user' or 'bot', not {preset!r}")
        return dataclasses.replace(base, **fields) if fields else base
    return GuardConfig(**fields)


# ---- the per-client (or shared) guard state -----------------------------------------------


class GuardState:
    """What ``client.guard`` exposes: ``config`` (:class:`GuardConfig`), ``pipeline``
    (:class:`Pipeline`) and ``events`` (the pipeline's event hub). One object may be shared by
    a client and the CDN clients Telethon creates from it."""

    def __init__(self, config: GuardConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.events: Any = getattr(pipeline, "events", None)
        self._now: Callable[[], float] | None = None
        self._pacers: dict[int, Any] = {}
        # Observability (telethon_guard.stats / .health): an event collector for stats() and a
        # weak reference to the main client for ``available``.
        from .stats import StatsCollector

        self.collector = StatsCollector()
        subscribe = getattr(self.events, "subscribe", None)
        if callable(subscribe):
            try:
                subscribe(self.collector, request_events=False)
            except TypeError:  # an event hub without the keyword
                subscribe(self.collector)
        self._client_ref: weakref.ref[Any] | None = None

    @classmethod
    def create(
        cls,
        guard_config: GuardConfig | None = None,
        preset: str | None = None,
        **fields: Any,
    ) -> GuardState:
        from .pipeline import Pipeline

        extras: dict[str, Any] = {}
        known = _config_fields()
        for name in ("storage", "events", "clock"):
            if name in fields and name not in known:
                extras[name] = fields.pop(name)
        config = build_config(guard_config, preset, **fields)
        return cls(config, Pipeline(config, **extras))

    def pacer(self, dc_id: int | None) -> Any:
        """The reconnect pacer shared by this guard's senders to DC ``dc_id`` (``None``: the
        main sender), built from ``config.reconnect_pacing``, ``reconnect_backoff_base``,
        ``reconnect_backoff_cap`` and ``reconnect_jitter``, drawing its jitter from the
        config's ``rng`` / ``seed`` and timing on the guard clock; ``None`` if unavailable."""
        key = dc_id if dc_id is not None else 0
        pacer = self._pacers.get(key)
        if pacer is None:
            try:
                from .reconnect import ReconnectPacer
            except ImportError:
                return None
            cfg = self.config
            windows = getattr(cfg, "reconnect_pacing", None)
            backoff: dict[str, Any] = {
                kw: getattr(cfg, name)
                for kw, name in (("backoff_base", "reconnect_backoff_base"),
                                 ("backoff_cap", "reconnect_backoff_cap"),
                                 ("jitter", "reconnect_jitter"))
                if hasattr(cfg, name)
            }
            # the guard's randomness (config.seed / config.rng) and clock reach the jitter
            make_rng = getattr(cfg, "make_rng", None)
            if callable(make_rng):
                backoff["rng"] = make_rng()
            clock = getattr(self.pipeline, "clock", None)
            if clock is not None:
                backoff["clock"] = clock.now
                backoff["sleep"] = clock.sleep
            pacer = (ReconnectPacer(windows, **backoff) if windows
                     else ReconnectPacer(**backoff))
            self._pacers[key] = pacer
        return pacer

    def now(self) -> float:
        """The guard clock (monotonic seconds) the pipeline measures deadlines against."""
        now = self._now
        if now is not None:
            return now()
        clock = getattr(self.pipeline, "clock", None)
        if getattr(type(clock), "now", None) is MonotonicClock.now:  # common case: remembered
            self._now = time.monotonic
            return time.monotonic()
        if clock is None:
            return time.monotonic()
        now = getattr(clock, "now", None)
        if callable(now):
            return float(now())
        if callable(clock):
            return float(clock())
        return time.monotonic()

    def stats(self) -> Any:
        """A :class:`~telethon_guard.stats.GuardStats` snapshot (counters by method and
        outcome, breaker states, blocked methods with seconds left, limiter queue, reconnects,
        stray futures...); ``stats["calls"]`` and ``stats.as_dict()`` work too."""
        from .stats import snapshot

        return snapshot(self.pipeline, self.collector, self.available)

    def main_client(self) -> Any:
        """The first client this guard was attached to (``None`` if gone)."""
        return self._client_ref() if self._client_ref is not None else None

    @property
    def available(self) -> bool:
        """``False`` while the main DC's breaker is OPEN (time left) or HALF_OPEN, the main
        sender is reconnecting or gave up, or the client is disconnected; see
        :func:`telethon_guard.health.unavailable_reason`. Synchronous, no I/O."""
        from .health import unavailable_reason

        return unavailable_reason(self) is None

    @property
    def unavailable_reason(self) -> str | None:
        """Why :attr:`available` is ``False`` (``None`` when available)."""
        from .health import unavailable_reason

        return unavailable_reason(self)

    async def wait_available(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for :attr:`available`; ``True`` if it became
        available, ``False`` on timeout. Raises ``ValueError`` for a bad ``timeout``."""
        from .health import wait_available

        return await wait_available(self, timeout)

    def __repr__(self) -> str:
        return f"<GuardState config={self.config!r}>"


def account_key(client: TelegramClient, state: GuardState) -> str:
    """The account key of ``client`` for flood scopes, limits and breaker keys.

    ``GuardConfig.account`` when set; else derived from the session's auth key id (stable for
    the session and shared by every process using it); else the client object until a key
    exists.
    """
    configured = getattr(state.config, "account", None)
    if configured:
        return str(configured)
    cached: str | None = getattr(client, "_tg_account", None)
    if cached:
        return cached
    key = getattr(getattr(client.session, "auth_key", None), "key_id", None)
    if key is not None:
        value = f"key:{key:016x}"
        client._tg_account = value
        return value
    return f"client:{id(client):x}"


# ---- one network attempt -------------------------------------------------------------------


async def await_request(fut: asyncio.Future[T]) -> T:
    """Await a future returned by ``MTProtoSender.send``.

    The caller's own cancellation propagates unchanged (and cancels ``fut``, as awaiting it
    directly would). A future cancelled *by Telethon* (its ``disconnect()`` cancels every
    in-flight request, also during a DC switch) becomes
    :class:`~telethon_guard.errors.GuardConnectionError`, since the caller's task was not
    cancelled (:func:`attempt_once` makes it ``ClientDisconnectedError`` when the client was
    disconnected on purpose).

    Python 3.11+: ``fut`` is awaited directly and a ``CancelledError`` is told apart with
    ``Task.cancelling()`` (the caller's task was cancelled: propagate). Python 3.10 waits with
    ``asyncio.wait`` (no ``cancelling()``) and retrieves ``fut``'s exception in a callback.
    """
    if sys.version_info >= (3, 11):
        try:
            return await fut
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                fut.cancel()
                raise
            if not fut.cancelled():
                raise  # not Telethon's cancel of the request: propagate unchanged
        raise GuardConnectionError("the request was cancelled by a disconnect of the client")
    fut.add_done_callback(retrieve_exception)
    if not fut.done():
        try:
            await asyncio.wait((fut,))
        except asyncio.CancelledError:
            fut.cancel()
            raise
    if fut.cancelled():
        raise GuardConnectionError("the request was cancelled by a disconnect of the client")
    return fut.result()


def offline(client: TelegramClient) -> bool:
    """Whether the client is disconnected on purpose: never connected, or ``disconnect()``
    was called and no ``connect()`` since (a DC switch's disconnect does not count)."""
    return bool(getattr(client, "_tg_offline", False))


async def attempt_once(
    client: TelegramClient,
    send: Callable[..., Any],
    request: TLRequest,
    ordered: bool = False,
) -> Any:
    """ONE network attempt: ``send(request)`` (a sender's ``send``) and await its future.

    Connection errors while the client is disconnected on purpose become
    :class:`~telethon_guard.errors.ClientDisconnectedError` (final: never retried, not a
    breaker failure); otherwise they reach the pipeline, which retries them.
    """
    try:
        fut = send(request, ordered=ordered)
        if sys.version_info >= (3, 11):  # await_request's path, inline (one frame less)
            try:
                return await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    # Cancelled after the answer came (e.g. the attempt timer in the same loop
                    # turn): retrieve its exception (send_awaited added no callback for it).
                    fut.exception()
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    fut.cancel()
                    raise
                if not fut.cancelled():
                    raise
            raise GuardConnectionError(
                "the request was cancelled by a disconnect of the client")
        return await await_request(fut)
    except ConnectionError as e:
        if offline(client) and (
            not isinstance(e, GuardError) or isinstance(e, GuardConnectionError)
        ):
            raise ClientDisconnectedError(
                f"{_tl.method_name(request)}: the client is disconnected "
                "(client.disconnect() was called, or connect() was not)") from e
        raise


def _send_of(sender: Any) -> Callable[..., Any]:
    """The send function :func:`attempt_once` uses: the guarded sender's ``send_awaited`` on
    Python 3.11+ (attempt_once awaits the future and retrieves or cancels it, so the sender
    adds no retrieving callback), else ``send``."""
    if _AWAITS_INLINE:
        awaited = getattr(sender, "send_awaited", None)
        if awaited is not None:
            return awaited
    return sender.send


_AWAITS_INLINE = sys.version_info >= (3, 11)


def make_call(
    client: TelegramClient,
    state: GuardState,
    sender: Any,
    request: TLRequest,
    max_flood_wait: float | None = None,
) -> CallInfo:
    """Describe one request for the pipeline (method, account, DC, peer, deadline)."""
    method, peer, random_id = _tl.describe(request)
    deadline = getattr(state.config, "deadline", None)
    call = CallInfo(  # positional: method, request, account, dc_id, peer, random_id,
        method, request, account_key(client, state), _dc_of(client, sender), peer,  # transfer,
        random_id, method in TRANSFER_METHODS, is_idempotent(method, random_id),  # deadline_at
        (state.now() + deadline) if deadline else None,
    )
    scoped = current_deadline()  # health.with_fallback / deadline_scope: only shortens
    if scoped is not None and (call.deadline_at is None or scoped < call.deadline_at):
        call.deadline_at = scoped
    if max_flood_wait is not None:
        _set_max_flood_wait(call, max_flood_wait)
    call.update_loop = update_loop_client(client, method)  # never waits: update_path.py
    return call


def _dc_of(client: TelegramClient, sender: Any) -> int:
    """DC of a call: the session's DC on the main sender (it follows ``_switch_dc``), else the
    exported sender's ``dc_id``."""
    if sender is tl.main_sender(client):
        return int(client.session.dc_id or 0)
    return int(getattr(sender, "dc_id", None) or client.session.dc_id or 0)


def _set_max_flood_wait(call: CallInfo, seconds: float) -> None:
    call.max_flood_wait = float(seconds)
    call.tags["max_flood_wait"] = repr(float(seconds))


async def invoke_one(
    client: TelegramClient,
    state: GuardState,
    sender: Any,
    request: TLRequest,
    ordered: bool = False,
    max_flood_wait: float | None = None,
) -> Any:
    """One logical request through the pipeline; each attempt is one ``sender.send``."""
    call = make_call(client, state, sender, request, max_flood_wait)
    send = functools.partial(attempt_once, client, _send_of(sender), request, ordered)
    return await state.pipeline.invoke(call, send)


# ---- _call -------------------------------------------------------------------------------


async def guarded_call(
    client: TelegramClient,
    state: GuardState,
    sender: Any,
    request: Any,
    ordered: bool = False,
    flood_sleep_threshold: float | None = None,
) -> Any:
    """Telethon's ``_call`` with every attempt run through the guard pipeline.

    Keeps Telethon's semantics: the event-loop check, ``request.resolve``, the
    ``InvokeWithoutUpdates`` wrapping when updates are off, ``session.process_entities``,
    a list of results for a list of requests (or ``MultiError(exceptions, results,
    requests)`` with the partial results when some elements failed), and the DC switch on
    ``PHONE_MIGRATE`` / ``NETWORK_MIGRATE`` / ``USER_MIGRATE``. ``flood_sleep_threshold``
    (seconds), when given, is this call's ``max_flood_wait``.
    """
    bound = tl.bound_loop(client)
    if bound is not None and bound != helpers.get_running_loop():
        raise RuntimeError(
            "The asyncio event loop must not change after connection (see the FAQ for details)"
        )
    single = not utils.is_list_like(request)
    requests: list[Any] = [request] if single else list(request)
    to_send: list[Any] = []
    no_updates = tl.no_updates(client)
    for r in requests:
        if not isinstance(r, TLRequest):
            raise TypeError(_NOT_A_REQUEST)
        if type(r).resolve is not _NO_RESOLVE:  # the base class's resolve does nothing
            await r.resolve(client, utils)
        to_send.append(functions.InvokeWithoutUpdatesRequest(r) if no_updates else r)
    tl.note_request(client)

    switches = 0
    while True:
        try:
            if single:  # invoke_one, inline
                r = to_send[0]
                call = make_call(client, state, sender, r, flood_sleep_threshold)
                send = functools.partial(attempt_once, client, _send_of(sender), r, ordered)
                result = await state.pipeline.invoke(call, send)
                entities = client.session.process_entities(result)
                if inspect.isawaitable(entities):  # async sessions (Telethon warns)
                    await utils.maybe_async(entities)
                return result
            return await _call_list(
                client, state, sender, requests, to_send, ordered, flood_sleep_threshold
            )
        except _MIGRATE_ERRORS as e:
            switches += 1
            should_raise = isinstance(
                e, (tl_errors.PhoneMigrateError, tl_errors.NetworkMigrateError)
            )
            if switches > _MAX_DC_SWITCHES or (
                should_raise and await client.is_user_authorized()
            ):
                raise
            log.info("%s: migrating to DC %d", _tl.method_name(e.request or requests[0]),
                     e.new_dc)
            await tl.switch_dc(client, e.new_dc)


async def _call_list(
    client: TelegramClient,
    state: GuardState,
    sender: Any,
    requests: list[Any],
    to_send: list[Any],
    ordered: bool,
    max_flood_wait: float | None,
) -> list[Any]:
    """A batch: every element its own pipeline call, so a failed element is re-sent alone
    and the others' results are kept. ``ordered`` sends them one after the other."""
    outcomes: list[Any]
    if ordered:
        outcomes = []
        for r in to_send:
            try:
                outcomes.append(
                    await invoke_one(client, state, sender, r, False, max_flood_wait)
                )
            except Exception as e:
                outcomes.append(e)
    else:
        outcomes = list(
            await asyncio.gather(
                *(invoke_one(client, state, sender, r, False, max_flood_wait)
                  for r in to_send),
                return_exceptions=True,
            )
        )
    results: list[Any] = []
    exceptions: list[BaseException | None] = []
    for outcome in outcomes:
        if isinstance(outcome, asyncio.CancelledError):
            raise outcome
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            exceptions.append(outcome)
            results.append(None)
        else:
            await utils.maybe_async(client.session.process_entities(outcome))
            exceptions.append(None)
            results.append(outcome)
    if any(e is not None for e in exceptions):
        from .errors import batch_error  # FloodWaitMultiError when every failure is a flood

        raise batch_error(exceptions, results, requests)
    return results


# ---- senders -------------------------------------------------------------------------------


def sender_class() -> type[MTProtoSender]:
    """``GuardedMTProtoSender`` once telethon_guard.sender exists, else Telethon's sender."""
    try:
        from .sender import GuardedMTProtoSender
    except ImportError:
        return MTProtoSender
    return GuardedMTProtoSender


def make_sender(
    client: TelegramClient, state: GuardState, auth_key: Any, dc_id: int | None, **kwargs: Any
) -> MTProtoSender:
    """A sender for ``client`` with Telethon's arguments plus the guard's extras (events,
    a reconnect pacer per DC built from ``config.reconnect_pacing`` and the backoff settings,
    ``config.max_reconnect_seconds``, DC id, account) that the sender class accepts."""
    cls = sender_class()
    accepted = inspect.signature(cls.__init__).parameters
    extras: dict[str, Any] = {}
    if "events" in accepted:
        extras["events"] = state.events
    if "config" in accepted:
        extras["config"] = state.config
    if "dc_id" in accepted:
        extras["dc_id"] = dc_id if dc_id is not None else client.session.dc_id
    if "account" in accepted:
        extras["account"] = account_key(client, state)
    if "max_reconnect_seconds" in accepted and hasattr(state.config, "max_reconnect_seconds"):
        extras["max_reconnect_seconds"] = state.config.max_reconnect_seconds
    if "pacer" in accepted:
        pacer = state.pacer(dc_id)
        if pacer is not None:
            extras["pacer"] = pacer
    sender = cls(auth_key, loggers=tl.loggers(client), **extras, **kwargs)
    if dc_id is not None:
        sender.dc_id = dc_id
    return sender


def replace_main_sender(client: TelegramClient, state: GuardState) -> None:
    """Swap the main sender Telethon built in ``__init__`` for a guarded one (same args)."""
    if sender_class() is MTProtoSender:
        return
    tl.set_main_sender(client, make_sender(
        client, state, client.session.auth_key, None, **tl.sender_settings(client)))


def _is_init_request(request: Any) -> bool:
    if not isinstance(request, functions.InvokeWithLayerRequest):
        return False
    inner = request.query
    if isinstance(inner, functions.InvokeWithoutUpdatesRequest):
        inner = inner.query
    return isinstance(inner, functions.InitConnectionRequest)


async def _init_through_pipeline(
    client: TelegramClient, state: GuardState, sender: Any, request: TLRequest,
    send: Callable[..., asyncio.Future[Any]],
) -> Any:
    call = make_call(client, state, sender, request)

    async def attempt() -> Any:
        return await attempt_once(client, send, request)

    return await state.pipeline.invoke(call, attempt)


async def guarded_connect(
    client: TelegramClient, state: GuardState, connect: Callable[[], Awaitable[None]]
) -> None:
    """Run Telethon's ``connect`` with its init request routed through the pipeline,
    rolling back (disconnect) if it fails after the sender came up, and hooking
    exception retrieval onto the tasks it creates."""
    loop = helpers.get_running_loop()
    sender = tl.main_sender(client)
    original = sender.send

    def send(request: Any, ordered: bool = False) -> Any:
        if _is_init_request(request):
            return _init_through_pipeline(client, state, sender, request, original)
        return original(request, ordered=ordered)

    sender.send = send
    client._tg_offline = False
    if hasattr(sender, "dc_id") and client.session.dc_id:
        sender.dc_id = client.session.dc_id  # follows _switch_dc (set_dc, then connect)
    if not getattr(client, "_tg_loop_ref", False):
        acquire_exception_handler(loop, stray_sink(client, state))
        client._tg_loop_ref = loop
    try:
        await connect()
    except BaseException:
        if sender.is_connected() or tl.sender_is_user_connected(sender):
            try:
                await tl.disconnect_internal(client)
            except Exception:  # pragma: no cover - disconnect is documented never to raise
                log.exception("rolling back a failed connect")
        release_loop(client)
        raise
    finally:
        if sender.__dict__.get("send") is send:
            del sender.send
    hook_tasks(client, state)


def stray_sink(client: TelegramClient, state: GuardState) -> StraySink:
    """This client's sink for stray exceptions: emits ``StrayFutureRetrieved`` on the guard's
    event bus (one object per client, so it can be unregistered)."""
    sink: StraySink | None = getattr(client, "_tg_sink", None)
    if sink is None:
        def emit(source: str, exc: BaseException | None) -> None:
            from .events import StrayFutureRetrieved

            if state.events is not None:
                state.events.emit(StrayFutureRetrieved(
                    source=source, error=type(exc).__name__ if exc is not None else "unknown",
                    account=account_key(client, state)))

        sink = emit
        client._tg_sink = sink
    return sink


def hook_tasks(client: TelegramClient, state: GuardState) -> None:
    """Retrieve exceptions of the tasks and futures Telethon creates on connect (and report
    them as ``StrayFutureRetrieved`` events)."""
    sink = stray_sink(client, state)
    for name, task in tl.background_tasks(client).items():
        if isinstance(task, asyncio.Future):
            task.add_done_callback(retrieving(f"{name}_handle", sink))
    try:
        disconnected = tl.main_sender(client).disconnected
    except Exception:
        disconnected = None
    if isinstance(disconnected, asyncio.Future):
        disconnected.add_done_callback(retrieve_exception)
    tasks = tl.event_handler_tasks(client)
    if not isinstance(tasks, RetrievingTaskSet):
        retrieving_tasks = RetrievingTaskSet()
        for t in tasks:
            retrieving_tasks.add(t)
        tasks = retrieving_tasks
        tl.set_event_handler_tasks(client, tasks)
    tasks.sink = sink


def release_loop(client: TelegramClient) -> None:
    """Drop this client's reference on the loop's exception handler (after disconnect)."""
    loop = getattr(client, "_tg_loop_ref", None)
    if loop:
        client._tg_loop_ref = None
        release_exception_handler(loop, getattr(client, "_tg_sink", None))


async def create_exported_sender(
    client: TelegramClient, state: GuardState, dc_id: int
) -> MTProtoSender:
    """Telethon's ``_create_exported_sender`` with a guarded sender and the
    ``ImportAuthorization`` init going through the pipeline; disconnects on failure."""
    dc = await tl.get_dc(client, dc_id)
    sender = make_sender(client, state, None, dc_id)
    await sender.connect(tl.new_connection(client, dc))
    try:
        try:
            sender.disconnected.add_done_callback(retrieve_exception)
        except Exception:
            pass
        log.info("exporting authorization for a borrowed sender in DC %d", dc_id)
        auth = await client(functions.auth.ExportAuthorizationRequest(dc_id))
        init = tl.init_request(client)
        init.query = functions.auth.ImportAuthorizationRequest(id=auth.id, bytes=auth.bytes)
        req = functions.InvokeWithLayerRequest(LAYER, init)
        await _init_through_pipeline(client, state, sender, req, sender.send)
    except BaseException:
        await sender.disconnect()
        raise
    return sender


async def is_user_authorized(client: TelegramClient) -> bool:
    """Telethon's ``is_user_authorized`` without its false negative: Telethon caches ``False``
    on *any* ``RPCError`` from ``updates.getState``, so a flood wait or a server error would
    make the client believe it is logged out (and ``start()`` ask for a phone again). Here only
    an authorization error (401) means "no"; other errors propagate, nothing is cached."""
    if tl.authorized(client) is None:
        try:
            await client(functions.updates.GetStateRequest())
            tl.set_authorized(client, True)
        except tl_errors.UnauthorizedError:
            tl.set_authorized(client, False)
    return bool(tl.authorized(client))


def prepare_client(client: TelegramClient, state: GuardState) -> None:
    """Switch Telethon's own flood sleeping / memo off and hook task retrieval."""
    tl.switch_off_flood_handling(client, _NeverRemember())
    client._tg_offline = not client.is_connected()
    tasks = tl.event_handler_tasks(client)
    if not isinstance(tasks, RetrievingTaskSet):
        tasks = RetrievingTaskSet(tasks)
        tl.set_event_handler_tasks(client, tasks)
    tasks.sink = stray_sink(client, state)
    if state.main_client() is None:  # the first client is the main one (CDN clients follow)
        state._client_ref = weakref.ref(client)


# ---- guard(client) ------------------------------------------------------------------------


def guard(client: TelegramClient, **kwargs: Any) -> TelegramClient:
    """Give an existing ``TelegramClient`` the guard's protection; returns the same object.

    Accepts the same guard keywords as :class:`GuardedTelegramClient` (``guard_config=``,
    ``preset=`` or :class:`GuardConfig` fields). Uses ``wrapt.FunctionWrapper`` around the
    instance's bound ``_call``, ``connect``, ``_create_exported_sender`` and
    ``_disconnect_coro``; see the module docstring for the limits. Calling ``guard`` twice
    raises :class:`GuardConfigError`. ``client.guard`` is then the :class:`GuardState`.
    """
    if getattr(client, "_tg_state", None) is not None:
        raise GuardConfigError("client", "this client is already guarded")
    state = GuardState.create(**kwargs)
    from .storage.sqlite_session import attach_session_storage

    attach_session_storage(client.session, state)  # flood state survives restarts
    return attach(client, state)


def attach(client: TelegramClient, state: GuardState) -> TelegramClient:
    """Wrap ``client``'s instance methods so its requests go through ``state``'s pipeline."""
    client._tg_state = state
    prepare_client(client, state)
    if not client.is_connected():
        replace_main_sender(client, state)

    def call_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        return guarded_call(client, state, *args, **kw)

    def connect_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        if not client.is_connected() and not isinstance(tl.main_sender(client), sender_class()):
            replace_main_sender(client, state)  # guarded after a disconnect, too
        return maybe_sync(guarded_connect(client, state, lambda: wrapped(*args, **kw)))

    def exported_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        return create_exported_sender(client, state, *args, **kw)

    async def disconnect_coro(wrapped: Any) -> None:
        client._tg_offline = True
        try:
            await wrapped()
        finally:
            release_loop(client)

    def disconnect_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        return disconnect_coro(wrapped)

    async def cdn_client(wrapped: Any, args: Any, kw: Any) -> Any:
        cdn = await wrapped(*args, **kw)
        if getattr(cdn, "_tg_state", None) is None:
            attach(cdn, state)
        return cdn

    def cdn_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        return cdn_client(wrapped, args, kw)

    def authorized_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        return maybe_sync(is_user_authorized(client))

    wrappers = {
        "is_user_authorized": authorized_wrapper,
        "_call": call_wrapper,
        "connect": connect_wrapper,
        "_create_exported_sender": exported_wrapper,
        "_disconnect_coro": disconnect_wrapper,
        "_get_cdn_client": cdn_wrapper,
    }
    tl.wrap_instance_methods(client, wrappers, wrapt.FunctionWrapper)
    client.guard = state
    if client.is_connected():
        hook_tasks(client, state)
    return client


def sync_mode() -> bool:
    """Whether ``telethon.sync`` rewrote ``TelegramClient``'s public methods."""
    if "telethon.sync" not in sys.modules:  # the per-call answer without a failed look-up
        return False
    from telethon import TelegramClient

    return hasattr(TelegramClient.connect, "__tl.sync")


def maybe_sync(coro: Any) -> Any:
    """Return ``coro``, or run it to completion when ``telethon.sync`` is active and no loop
    is running (the same rule ``telethon.sync`` applies to Telethon's own methods)."""
    if sync_mode():
        loop = helpers.get_running_loop()
        if not loop.is_running():
            return loop.run_until_complete(coro)
    return coro


__all__ = ["GuardState", "build_config", "guard"]
