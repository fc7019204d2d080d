"""``connect()`` and ``disconnect()`` of a guarded client: the init request
(``InvokeWithLayer(InitConnection(...))``) through the pipeline, a rollback when a connect
fails after the sender came up, and the offline / loop bookkeeping of the client's link."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import helpers
from telethon.tl import functions

from . import _telethon as tl
from ._client_call import init_through_pipeline
from ._client_tasks import acquire_loop, hook_tasks, release_loop
from ._link import ClientLink
from .errors import DeadlineExceeded
from .sender import GuardedMTProtoSender
from .session_store import connect_checked, disconnect_checked

__all__ = ["connect_timeout", "guarded_connect", "guarded_disconnect", "is_init_request"]

log = logging.getLogger("telethon_guard")

# The connect() under way per client (only while one runs): a second connect() joins it.
_under_way: weakref.WeakKeyDictionary[Any, asyncio.Future[None]] = weakref.WeakKeyDictionary()


def is_init_request(request: Any) -> bool:
    """Whether ``request`` is Telethon's connection init (``InvokeWithLayer(InitConnection)``,
    possibly inside ``InvokeWithoutUpdates``)."""
    if not isinstance(request, functions.InvokeWithLayerRequest):
        return False
    inner = request.query
    if isinstance(inner, functions.InvokeWithoutUpdatesRequest):
        inner = inner.query
    return isinstance(inner, functions.InitConnectionRequest)


def connect_timeout(config: Any) -> float | None:
    """Seconds ``connect()`` may take in all: ``config.connect_timeout``, else
    ``config.deadline`` (``None``: unbounded)."""
    timeout: float | None = config.connect_timeout
    if timeout is None:
        timeout = config.deadline
    return timeout


async def guarded_connect(
    client: Any, link: ClientLink, connect: Callable[[], Awaitable[None]]
) -> None:
    """Run Telethon's ``connect`` with its init request routed through the pipeline, within
    :func:`connect_timeout` seconds, hooking exception retrieval onto the tasks it creates.

    Atomic: if it fails or is cancelled at any point (TCP, handshake, init request, the
    caller's timeout), the client is left as before the call: no socket, no sender task, no
    reconnect or auto-reconnect callback left running, nothing queued, the loop reference
    released; a later ``connect()`` starts from scratch.

    One attempt at a time: a ``connect()`` called while another of the same client is under
    way joins it and ends with it (the same outcome: returns when it connected, raises the
    same exception object when it failed) instead of starting its own attempt after it; if
    the attempt it joined is cancelled by its caller, it makes its own. Cancelling a joined
    ``connect()`` leaves the attempt running for its first caller.

    :raises DeadlineExceeded: ``connect_timeout`` passed (``method == "connect"``).
    :raises GuardConnectionError: no connection within Telethon's ``connection_retries``.
    Errors of the init request (``FloodWaitBlocked``, ``CircuitOpenError``...) propagate.
    """
    while True:
        running = _under_way.get(client)
        if running is None:
            break
        try:
            await asyncio.shield(running)
            return
        except asyncio.CancelledError:
            if not running.cancelled():
                raise  # this caller was cancelled; the attempt goes on for its own caller
            # the attempt joined was cancelled by its caller: make our own
    outcome: asyncio.Future[None] = helpers.get_running_loop().create_future()
    _under_way[client] = outcome
    try:
        await _connect_once(client, link, connect)
    except asyncio.CancelledError:
        outcome.cancel()
        raise
    except BaseException as e:
        outcome.set_exception(e)
        outcome.exception()  # retrieved: nobody may have joined
        raise
    else:
        outcome.set_result(None)
    finally:
        if _under_way.get(client) is outcome:
            del _under_way[client]


async def _connect_once(
    client: Any, link: ClientLink, connect: Callable[[], Awaitable[None]]
) -> None:
    """One connect attempt of :func:`guarded_connect` (its first caller's)."""
    state = link.guard
    loop = helpers.get_running_loop()
    sender = tl.main_sender(client)
    original = sender.send
    was_offline = link.offline

    def send(request: Any, ordered: bool = False) -> Any:
        if is_init_request(request):
            return init_through_pipeline(client, state, sender, request, original)
        return original(request, ordered=ordered)

    sender.send = send
    link.offline = False
    if hasattr(sender, "dc_id") and client.session.dc_id:
        sender.dc_id = client.session.dc_id  # follows the DC switch (set_dc, then connect)
    guarded_sender = isinstance(sender, GuardedMTProtoSender)
    if guarded_sender:
        sender.connecting = True
    acquire_loop(client, link, loop)
    timeout = connect_timeout(state.config)
    try:
        # SessionLockedError naming the session file (session_store.connect_checked)
        if timeout is None:
            await connect_checked(client.session, connect)
        else:
            await _within(lambda: connect_checked(client.session, connect), timeout)
    except BaseException:
        link.offline = was_offline
        await _roll_back(client, link, sender)
        raise
    finally:
        if guarded_sender:
            sender.connecting = False
        if sender.__dict__.get("send") is send:
            del sender.send
    hook_tasks(client, link)


async def _within(connect: Callable[[], Awaitable[None]], timeout: float) -> None:
    """``await connect()`` in the caller's task (Telethon starts its update loop there),
    cancelled after ``timeout`` seconds: then ``DeadlineExceeded("connect", timeout)``."""
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def expire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await connect()
    except asyncio.CancelledError:
        if not fired:
            raise
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+: undo our own cancel
        if uncancel is not None and uncancel() > 0:
            raise  # the caller cancelled too
        raise DeadlineExceeded("connect", timeout) from None
    else:
        if fired and hasattr(task, "uncancel"):
            # the timer fired as connect() finished and its cancel was swallowed on the way:
            # the connect stands; take our cancel request back (Task.cancelling() is read by
            # the guard's attempts to tell a caller's cancel from Telethon's)
            task.uncancel()
    finally:
        timer.cancel()


async def _roll_back(client: Any, link: ClientLink, sender: Any) -> None:
    """Undo a connect that did not complete (see :func:`guarded_connect`)."""
    try:
        if sender.is_connected() or tl.sender_is_user_connected(sender):
            await tl.disconnect_internal(client)  # the sender, and the update/keepalive tasks
        elif isinstance(sender, GuardedMTProtoSender):
            await sender.abort_connect()
    except Exception:  # pragma: no cover - disconnect is documented never to raise
        log.exception("rolling back a failed connect")
    finally:
        release_loop(client, link)


async def guarded_disconnect(
    client: Any, link: ClientLink, disconnect: Callable[[], Awaitable[None]]
) -> None:
    """Telethon's disconnect with the client marked offline first (in-flight and later calls
    fail with ``ClientDisconnectedError``) and its loop reference released after; a session
    file that cannot be written is logged, not raised (``disconnect_checked``); the main
    client also closes the connections of a storage the guard opened from a URL."""
    link.offline = True
    try:
        # a locked session file is logged, not raised (session_store.disconnect_checked)
        await disconnect_checked(client.session, disconnect)
    finally:
        release_loop(client, link)
        if link.guard.main_client() is client:  # a storage opened from a URL: its sockets
            await link.guard.pipeline.close_storage_connections()
