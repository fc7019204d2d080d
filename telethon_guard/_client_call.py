"""Telethon's ``_call`` through the guard: every request (every element of a batch) is one
pipeline call whose attempts are single sends; Telethon's loop check, ``resolve``,
``InvokeWithoutUpdates`` wrapping, entity processing and DC migration are kept."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from telethon import errors as tl_errors
from telethon import helpers, utils
from telethon.tl import functions
from telethon.tl.tlobject import TLRequest

from . import _telethon as tl
from . import _tl
from ._link import account_key
from ._send_once import attempt_failed, attempt_once, send_of
from .call import TRANSFER_METHODS, CallInfo
from .errors import EntitiesNotStoredError
from .health import current_deadline, in_deadline_scope
from .keys import SEND_METHODS, is_idempotent
from .session_store import store_entities
from .storage import CLOSED
from .update_path import DIFFERENCE_METHODS, update_loop_client

if TYPE_CHECKING:
    from telethon import TelegramClient

    from ._client_guard import ClientGuard
    from ._link import ClientLink
    from .lane import Lane

__all__ = [
    "guarded_call", "init_through_pipeline", "invoke_one", "is_user_authorized", "lane_call",
    "make_call",
]

log = logging.getLogger("telethon_guard")

_MIGRATE_ERRORS = (
    tl_errors.PhoneMigrateError,
    tl_errors.NetworkMigrateError,
    tl_errors.UserMigrateError,
)
_MAX_DC_SWITCHES = 3

_NOT_A_REQUEST = "You can only invoke requests, not types!"
_NO_RESOLVE = TLRequest.resolve  # a no-op coroutine: requests without entities to resolve


# Per request class, what its description does not take from the instance: ``(method,
# needs_instance, transfer, idempotent, difference)``; ``needs_instance``: the class has a peer
# or ``random_id`` field, read per call by :func:`telethon_guard._tl.describe`. Wrapper classes
# (``InvokeWithLayer``...) are never cached: their method is the inner request's. Bounded (the
# TL schema has ~700 functions).
_Kind = tuple[str, bool, bool, bool, bool]
_DESCRIBED_FIELDS = ("peer", "to_peer", "channel", "random_id")  # what _tl.describe reads
_KINDS: dict[type, _Kind] = {}


def _kind_of(request: TLRequest) -> _Kind | None:
    cls = type(request)
    kind = _KINDS.get(cls)
    if kind is None and _tl.unwrap(request) is request:
        method = _tl.method_name(request)
        needs = any(hasattr(request, name) for name in _DESCRIBED_FIELDS)
        kind = (method, needs, method in TRANSFER_METHODS, is_idempotent(method),
                method in DIFFERENCE_METHODS)
        if len(_KINDS) < 4096:
            _KINDS[cls] = kind
    return kind


def make_call(
    client: TelegramClient,
    state: ClientGuard,
    sender: Any,
    request: TLRequest,
    max_flood_wait: float | None = None,
) -> CallInfo:
    """Describe one request for the pipeline (method, account, DC, peer, deadline).

    What depends only on the request's class (method name, transfer, idempotent, difference
    request) is computed once per class; the peer and ``random_id`` only for classes that
    have those fields. ``call.deadline_at`` is left to the deadline layer (which fills it
    from ``GuardConfig.deadline``) unless a ``deadline_scope`` shortens it.
    """
    kind = _KINDS.get(type(request))
    if kind is None:
        kind = _kind_of(request)
    if kind is None or kind[1]:
        method, peer, random_id = _tl.describe(request)
        transfer = method in TRANSFER_METHODS
        idempotent = is_idempotent(method, random_id)
        difference = method in DIFFERENCE_METHODS
    else:
        method, _, transfer, idempotent, difference = kind
        peer = random_id = None
    call = CallInfo(  # positional: method, request, account, dc_id, peer, random_id,
        method, request, account_key(client, state), _dc_of(client, sender), peer,  # transfer,
        random_id, transfer, idempotent,  # idempotent
    )
    call.sender = sender
    scoped = current_deadline(state.now)  # with_fallback / deadline_scope: only shortens
    if scoped is not None:
        deadline = state.config.deadline
        if deadline:
            scoped = min(scoped, state.now() + deadline)
        call.deadline_at = scoped
    if max_flood_wait is not None:
        _set_max_flood_wait(call, max_flood_wait)
    if difference:
        call.update_loop = update_loop_client(client, method)  # never waits: update_path.py
        deadline = state.config.deadline
        if call.update_loop is not None and call.deadline_at is None and deadline:
            call.deadline_at = state.now() + deadline  # before UpdatePath bounds it further
    return call


def _dc_of(client: TelegramClient, sender: Any) -> int:
    """DC of a call: the session's DC on the main sender (it follows ``_switch_dc``), else the
    exported sender's ``dc_id``, else (a sender the caller built, FastTelethon-style) the DC of
    its connection."""
    if sender is tl.main_sender(client):
        return int(client.session.dc_id or 0)
    return int(getattr(sender, "dc_id", None) or tl.sender_dc(sender)
               or client.session.dc_id or 0)


def _set_max_flood_wait(call: CallInfo, seconds: float) -> None:
    call.max_flood_wait = float(seconds)
    call.tags["max_flood_wait"] = repr(float(seconds))


async def invoke_one(
    client: TelegramClient,
    state: ClientGuard,
    sender: Any,
    request: TLRequest,
    ordered: bool = False,
    max_flood_wait: float | None = None,
) -> Any:
    """One logical request through the pipeline; each attempt is one ``sender.send``."""
    call = make_call(client, state, sender, request, max_flood_wait)
    send = functools.partial(attempt_once, client, send_of(sender), request, ordered)
    return await state.pipeline.invoke(call, send)


# ---- the straight lane -----------------------------------------------------------------

_CURRENT_TASKS: Any = getattr(asyncio.tasks, "_current_tasks", None)  # as attempt.py reads it
if not isinstance(_CURRENT_TASKS, dict):
    _CURRENT_TASKS = None


def _lane_kind(lane: Lane, request: Any) -> str:
    """Whether the lane takes ``request``'s class (:meth:`Lane.kind`): a single request, not a
    wrapper, a file transfer nor a difference request. A class with a peer or ``random_id``
    field (reads, sends, chat writes alike) is described per call when the lane needs its
    peer (:mod:`telethon_guard.lane`)."""
    kind = _kind_of(request) if isinstance(request, TLRequest) else None
    ok = kind is not None and not (kind[2] or kind[4])
    return lane.kind(request, kind[0] if ok and kind is not None else None)


def _has_fields(request: Any) -> bool:
    """Whether ``request``'s class has a peer or ``random_id`` field (:func:`_kind_of`;
    ``True`` when the bounded table has no room for it: then it is described)."""
    kind = _KINDS.get(type(request))
    return kind is None or kind[1]


async def lane_call(
    client: TelegramClient,
    link: ClientLink,
    request: Any,
    ordered: bool = False,
    flood_sleep_threshold: float | None = None,
) -> Any:
    """``client(request)`` of a guarded client: the straight lane (:mod:`telethon_guard.lane`)
    when nothing would stop the call, else :func:`guarded_call` (the pipeline's layers).

    The lane, in order, is what the layers do for a call none of them stops: Telethon's
    ``_call`` checks (the loop, ``request.resolve``); the deadline (``GuardConfig.deadline``
    from now; the attempt timer filed in the lane's :class:`~telethon_guard.clock.
    FifoDeadlines`); the breaker (CLOSED, no failure counted, no probe: nothing to acquire);
    the flood ledger (nothing blocked); the limiter (no learned pace; a send's per-chat
    windows when configured; the slot reserved now, or given back and the call handed to the
    pipeline); the send and the await of its answer; then the breaker's success record (only
    when it changes something), the pacer's success record, the flood scope tracker's for a
    write to a chat (only when it counts sends or tracks a flooded method), the outcome count,
    ``RequestFinished`` (when someone listens) and the session's ``process_entities``. An
    attempt that raised goes on in :meth:`Pipeline.resume <telethon_guard.pipeline.Pipeline.
    resume>` (retry, flood ledger, the DC switch of a ``*_MIGRATE``) exactly as the layers
    would.
    """
    state = link.guard
    lane: Lane | None = state.pipeline.lane
    bound, no_updates, sender, session, dc_id = tl.begin_main_call(client)  # notes the request
    if lane is None:
        return await guarded_call(client, state, sender, request, ordered,
                                  flood_sleep_threshold)
    method = lane.kinds.get(type(request))
    if method is None:
        method = _lane_kind(lane, request)
    loop = asyncio.get_running_loop()
    send = getattr(sender, "send_awaited", None)
    if (not method or flood_sleep_threshold is not None or no_updates or send is None
            or (bound is not None and bound is not loop) or in_deadline_scope() is not None):
        return await guarded_call(client, state, sender, request, ordered,
                                  flood_sleep_threshold)
    if type(request).resolve is not _NO_RESOLVE:  # before the checks: it may await
        await request.resolve(client, utils)
    # From here a call handed to guarded_call is resolved already: Telethon resolves a
    # request once.
    account = lane.account or link.account
    if lane.flood or lane.probes or account is None:
        return await guarded_call(client, state, sender, request, ordered,
                                  flood_sleep_threshold, resolved=True)
    route = lane.routes.get((account, dc_id, method))
    if route is None:
        route = lane.route(account, dc_id, method)
    key, specs = route
    peer: str | None = None
    rid: int | None = None
    described = False  # peer and random_id read (only when the lane needs them)
    if lane.sends and _has_fields(request):  # a send's limiter windows are per chat
        _, peer, rid = _tl.describe(request)
        described = True
        if peer is not None and (rid is not None or method in SEND_METHODS):  # is_send
            specs = lane.send_specs(account, dc_id, method, peer)
    breakers = lane.breakers
    breaker = breakers.get(key) if breakers else None
    task = _CURRENT_TASKS.get(loop) if _CURRENT_TASKS is not None else asyncio.current_task()
    if ((breaker is not None and (breaker.failures or breaker.state != CLOSED))
            or (lane.paces and (account, method) in lane.paces) or task is None):
        return await guarded_call(client, state, sender, request, ordered,
                                  flood_sleep_threshold, resolved=True)
    if specs:  # the limiter's slot, free now (else given back: the pipeline waits for it)
        delay, token = lane.decide(specs)  # type: ignore[misc]
        if delay > 0:
            lane.release(specs, token)
            return await guarded_call(client, state, sender, request, ordered,
                                      flood_sleep_threshold, resolved=True)
    now = lane.now()
    started = (now if len(lane.callbacks) > len(lane.quiet) or lane.enabled(logging.DEBUG)
               else None)  # EventBus.wants_request_events, without the property's call
    fut = None
    timers = None
    answered_at: float | None = None  # the answer's time, for the session store's timing
    try:
        fut = send(request, ordered)
        length = lane.length
        if length is not None:
            timers = lane.timers
            if timers is None or timers.loop is not loop:
                timers = lane.timers_for(loop)
            timers.pending[task] = now  # its deadline: now + length
            if timers.extend is not None:  # attempt_timeout: held while the sender reconnects
                timers.holders[task] = (sender, now)
            if timers.armed is None:
                timers.arm(now + length)
        result = await fut
    except BaseException as exc:
        fired = timers is not None and timers.pending.pop(task, None) is None
        if timers is not None and timers.holders:
            timers.holders.pop(task, None)
        if not described:
            _, peer, rid = _tl.describe(request)
        call = lane.call_of(method, request, account, dc_id, key, now, peer, rid)
        call.send = functools.partial(attempt_once, client, send, request, ordered)
        call.sender = sender
        try:
            try:
                attempt_failed(client, request, fut, exc)
            except BaseException as e:
                result = await state.pipeline.resume(call, e, fired, task, now, started)
        except _MIGRATE_ERRORS as e:
            await _migrate(client, e, 1, request)
            return await guarded_call(client, state, sender, request, ordered, None, 1,
                                      resolved=True)
    else:
        if timers is not None:
            if timers.holders:
                timers.holders.pop(task, None)
            if timers.pending.pop(task, None) is None and sys.version_info >= (3, 11):
                task.uncancel()  # the timer fired as the answer came: the answer wins
        answered = lane.now()  # the answer's time: the pacer's record, the store's start
        breakers = lane.breakers
        if breakers:  # a breaker was ever told a failure: one a success changes?
            breaker = breakers.get(key)
            if breaker is not None and (breaker.failures or breaker.state != CLOSED):
                lane.breaker_succeeded(key, account)
        if lane.succeeded is not None:
            if lane.paces and (account, method) in lane.paces:
                lane.pace_succeeded(account, method, answered)  # a pace learned in flight
            else:
                lane.succeeded(account, method, answered)
        if (lane.scope_sends or lane.scope_methods) and _has_fields(request):
            if not described:  # the flood ledger's on_success: the scope tracker's record
                _, peer, rid = _tl.describe(request)
            if peer is not None:
                lane.scopes.on_write(account, method, peer,
                                     rid is not None or method in SEND_METHODS)
        per = lane.outcomes.get(method)
        if per is not None:
            per["ok"] = per.get("ok", 0) + 1
        else:
            state.pipeline.count(method, "ok")
        if started is not None:
            state.pipeline.finished(method, started, 1, account)
        if lane.monotonic:
            answered_at = answered
    stored = store_entities(session, method, request, result, answered_at)
    if stored is not None:  # async sessions (Telethon warns)
        await stored
    return result


# ---- _call -------------------------------------------------------------------------------


async def guarded_call(
    client: TelegramClient,
    state: ClientGuard,
    sender: Any,
    request: Any,
    ordered: bool = False,
    flood_sleep_threshold: float | None = None,
    switches: int = 0,
    *,
    resolved: bool = False,
) -> Any:
    """Telethon's ``_call`` with every attempt run through the guard pipeline.

    Keeps Telethon's semantics: the event-loop check, ``request.resolve``, the
    ``InvokeWithoutUpdates`` wrapping when updates are off, ``session.process_entities``,
    a list of results for a list of requests (or ``MultiError(exceptions, results,
    requests)`` with the partial results when some elements failed), and the DC switch on
    ``PHONE_MIGRATE`` / ``NETWORK_MIGRATE`` / ``USER_MIGRATE`` (``switches``: DC switches
    this call already made). ``flood_sleep_threshold`` (seconds), when given, is this call's
    ``max_flood_wait``. ``resolved``: the single ``request`` was resolved already (by
    :func:`lane_call`; Telethon resolves a request once).
    """
    bound, no_updates = tl.begin_call(client)  # also notes the request (keepalive)
    if bound is not None and bound != helpers.get_running_loop():
        raise RuntimeError(
            "The asyncio event loop must not change after connection (see the FAQ for details)"
        )
    single = isinstance(request, TLRequest)  # else a list of them (or not a request)
    requests: list[Any] = []
    to_send: list[Any] = []
    one: Any = None
    if single:  # the common case: no lists built
        if not resolved and type(request).resolve is not _NO_RESOLVE:  # (the base class's
            await request.resolve(client, utils)  # resolve does nothing)
        one = functions.InvokeWithoutUpdatesRequest(request) if no_updates else request
    else:
        if not utils.is_list_like(request):
            raise TypeError(_NOT_A_REQUEST)
        requests = list(request)
        to_send = []
        for r in requests:
            if not isinstance(r, TLRequest):
                raise TypeError(_NOT_A_REQUEST)
            if type(r).resolve is not _NO_RESOLVE:
                await r.resolve(client, utils)
            to_send.append(functions.InvokeWithoutUpdatesRequest(r) if no_updates else r)

    while True:
        try:
            if single:  # invoke_one, inline
                call = make_call(client, state, sender, one, flood_sleep_threshold)
                send = functools.partial(attempt_once, client, send_of(sender), one, ordered)
                result = await state.pipeline.invoke(call, send)
                stored = store_entities(client.session, call.method, one, result)
                if stored is not None:  # async sessions (Telethon warns)
                    await stored
                return result
            return await _call_list(
                client, state, sender, requests, to_send, ordered, flood_sleep_threshold
            )
        except _MIGRATE_ERRORS as e:
            switches += 1
            await _migrate(client, e, switches, one if single else requests[0])


async def _migrate(client: TelegramClient, e: Any, switches: int, first: Any) -> None:
    """After a ``*_MIGRATE`` error ``e`` (this call's DC switch number ``switches``): raise it
    (too many switches, or a phone / network migrate of an authorized client), or switch DC
    (then the call is made again). ``first``: the call's (first) request, for the log."""
    should_raise = isinstance(e, (tl_errors.PhoneMigrateError, tl_errors.NetworkMigrateError))
    if switches > _MAX_DC_SWITCHES or (should_raise and await client.is_user_authorized()):
        raise e
    log.info("%s: migrating to DC %d", _tl.method_name(e.request or first), e.new_dc)
    await tl.switch_dc(client, e.new_dc)


async def _call_list(
    client: TelegramClient,
    state: ClientGuard,
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
    for r, outcome in zip(to_send, outcomes, strict=True):
        if isinstance(outcome, asyncio.CancelledError):
            raise outcome
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            exceptions.append(outcome)
            results.append(None)
        else:
            try:
                stored = store_entities(client.session, _tl.method_name(r), r, outcome)
                if stored is not None:
                    await stored
            except EntitiesNotStoredError as e:  # it ran: its result is kept beside the error
                exceptions.append(e)
                results.append(outcome)
                continue
            exceptions.append(None)
            results.append(outcome)
    if any(e is not None for e in exceptions):
        from .errors import batch_error  # FloodWaitMultiError when every failure is a flood

        raise batch_error(exceptions, results, requests)
    return results


async def init_through_pipeline(
    client: TelegramClient, state: ClientGuard, sender: Any, request: TLRequest,
    send: Callable[..., asyncio.Future[Any]],
) -> Any:
    """Send a connection init (``InvokeWithLayer(InitConnection(...))``) on ``sender`` as one
    pipeline call whose attempts are ``send`` (the sender's own, unpatched ``send``)."""
    call = make_call(client, state, sender, request)

    async def attempt() -> Any:
        return await attempt_once(client, send, request)

    return await state.pipeline.invoke(call, attempt)


async def is_user_authorized(client: Any) -> bool:
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
