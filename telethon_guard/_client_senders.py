"""The guarded senders of a client: the main sender swapped for a
:class:`~telethon_guard.sender.GuardedMTProtoSender` and the senders Telethon borrows for
other DCs (downloads), whose ``ImportAuthorization`` init goes through the pipeline."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from telethon.tl import functions
from telethon.tl.alltlobjects import LAYER

from . import _telethon as tl
from ._client_call import init_through_pipeline
from ._link import account_key
from .loop import retrieve_exception
from .sender import GuardedMTProtoSender
from .update_path import resume_updates

if TYPE_CHECKING:
    from telethon import TelegramClient

    from ._client_guard import ClientGuard

__all__ = ["create_exported_sender", "make_sender", "replace_main_sender"]

log = logging.getLogger("telethon_guard")


def make_sender(
    client: TelegramClient, state: ClientGuard, auth_key: Any, dc_id: int | None, **kwargs: Any
) -> GuardedMTProtoSender:
    """A guarded sender for ``client`` with Telethon's arguments (``kwargs``) plus the
    guard's: its events, the reconnect pacer of DC ``dc_id`` (``None``: the main sender),
    ``config.max_reconnect_seconds``, the DC id, the account key (read at each event: it is the
    client's current one) and the config (liveness)."""
    return GuardedMTProtoSender(
        auth_key,
        loggers=tl.loggers(client),
        pacer=state.pacer(dc_id),
        events=state.events,
        dc_id=dc_id if dc_id is not None else client.session.dc_id,
        # read when an event is built: the key changes from key:<auth key> to user:<id> at
        # login, after this sender exists (a new-user trial saw key:... on events after login)
        account=functools.partial(account_key, client, state),
        max_reconnect_seconds=state.config.max_reconnect_seconds,
        config=state.config,  # the liveness watchdog's bounds (liveness.py)
        **kwargs,
    )


def replace_main_sender(client: TelegramClient, state: ClientGuard) -> None:
    """Swap the main sender Telethon built in ``__init__`` for a guarded one (same args)."""
    settings = tl.sender_settings(client)  # updates resume after a reconnect: update_path.py
    settings["auto_reconnect_callback"] = functools.partial(
        resume_updates, client, state.wait_available)
    tl.set_main_sender(client, make_sender(client, state, client.session.auth_key, None,
                                           **settings))


async def create_exported_sender(
    client: TelegramClient, state: ClientGuard, dc_id: int
) -> GuardedMTProtoSender:
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
        await init_through_pipeline(client, state, sender, req, sender.send)
    except BaseException:
        await sender.disconnect()
        raise
    return sender
