"""``connect()`` and ``disconnect()`` of a guarded client: the init request
(``InvokeWithLayer(InitConnection(...))``) through the pipeline, a rollback when a connect
fails after the sender came up, and the offline / loop bookkeeping of the client's link."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import helpers
from telethon.tl import functions

from . import _telethon as tl
from ._client_call import init_through_pipeline
from ._client_tasks import acquire_loop, hook_tasks, release_loop
from ._link import ClientLink
from .session_store import connect_checked

__all__ = ["guarded_connect", "guarded_disconnect", "is_init_request"]

log = logging.getLogger("telethon_guard")


def is_init_request(request: Any) -> bool:
    """Whether ``request`` is Telethon's connection init (``InvokeWithLayer(InitConnection)``,
    possibly inside ``InvokeWithoutUpdates``)."""
    if not isinstance(request, functions.InvokeWithLayerRequest):
        return False
    inner = request.query
    if isinstance(inner, functions.InvokeWithoutUpdatesRequest):
        inner = inner.query
    return isinstance(inner, functions.InitConnectionRequest)


async def guarded_connect(
    client: Any, link: ClientLink, connect: Callable[[], Awaitable[None]]
) -> None:
    """Run Telethon's ``connect`` with its init request routed through the pipeline,
    rolling back (disconnect) if it fails after the sender came up, and hooking
    exception retrieval onto the tasks it creates."""
    state = link.guard
    loop = helpers.get_running_loop()
    sender = tl.main_sender(client)
    original = sender.send

    def send(request: Any, ordered: bool = False) -> Any:
        if is_init_request(request):
            return init_through_pipeline(client, state, sender, request, original)
        return original(request, ordered=ordered)

    sender.send = send
    link.offline = False
    if hasattr(sender, "dc_id") and client.session.dc_id:
        sender.dc_id = client.session.dc_id  # follows the DC switch (set_dc, then connect)
    acquire_loop(client, link, loop)
    try:
        await connect_checked(client.session, connect)  # SessionLockedError naming the file
    except BaseException:
        if sender.is_connected() or tl.sender_is_user_connected(sender):
            try:
                await tl.disconnect_internal(client)
            except Exception:  # pragma: no cover - disconnect is documented never to raise
                log.exception("rolling back a failed connect")
        release_loop(client, link)
        raise
    finally:
        if sender.__dict__.get("send") is send:
            del sender.send
    hook_tasks(client, link)


async def guarded_disconnect(
    client: Any, link: ClientLink, disconnect: Callable[[], Awaitable[None]]
) -> None:
    """Telethon's disconnect with the client marked offline first (in-flight and later calls
    fail with ``ClientDisconnectedError``) and its loop reference released after."""
    link.offline = True
    try:
        await disconnect()
    finally:
        release_loop(client, link)
