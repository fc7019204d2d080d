"""``guard(client)``: the guard's protection for a ``TelegramClient`` someone else created
(:class:`~telethon_guard.GuardedTelegramClient` is the subclass form of the same hooks).

Hook points (Telethon 1.45, see docs design-notes §2):

* ``_call(sender, request, ordered, flood_sleep_threshold)``: every request of the client,
  on the main sender and on exported other-DC senders (downloads), and batched lists. Each
  request (each element of a list) becomes one :class:`~telethon_guard.call.CallInfo` and goes
  through ``Pipeline.invoke`` with a ``send()`` that makes exactly one network attempt; a
  ``client(request)`` on the main sender takes the straight lane first (:mod:`telethon_guard.
  lane`: the layers' work inline when nothing would stop the call), as
  :class:`~telethon_guard.GuardedTelegramClient` does.
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

import warnings
from typing import TYPE_CHECKING, Any

import wrapt

from . import _telethon as tl
from ._client_call import guarded_call, is_user_authorized, lane_call
from ._client_connect import guarded_connect, guarded_disconnect
from ._client_guard import ClientGuard
from ._client_senders import create_exported_sender, replace_main_sender
from ._client_setup import prepare_client, warn_call_override
from ._client_tasks import hook_tasks
from ._link import link_of
from ._sync import maybe_sync
from .errors import GuardConfigError, GuardWarning
from .sender import GuardedMTProtoSender
from .storage.sqlite_session import attach_session_storage

if TYPE_CHECKING:
    from telethon import TelegramClient

__all__ = ["attach", "guard"]

_LANE_KW = frozenset({"ordered", "flood_sleep_threshold"})
"""The keyword arguments of a ``_call`` that :func:`~telethon_guard._client_call.lane_call`
takes as they are (Telethon's ``__call__`` passes ``ordered``)."""


def guard(client: TelegramClient, **kwargs: Any) -> TelegramClient:
    """Give an existing ``TelegramClient`` the guard's protection; returns the same object.

    Accepts the same guard keywords as :class:`GuardedTelegramClient` (``guard_config=``,
    ``preset=`` or :class:`GuardConfig` fields). Uses ``wrapt.FunctionWrapper`` around the
    instance's bound ``_call``, ``connect``, ``_create_exported_sender`` and
    ``_disconnect_coro``; see the module docstring for the limits. Calling ``guard`` twice
    raises :class:`GuardConfigError`; anything but a ``TelegramClient`` raises ``TypeError``.
    A client that is already connected is guarded with a :class:`GuardWarning` (shown by
    default, pointing at the ``guard()`` call): its sender is replaced only at its next
    ``connect()`` after a ``disconnect()``. So is a client whose class overrides ``_call``.
    ``client.guard`` is then the :class:`ClientGuard`.
    """
    from telethon import TelegramClient

    if not isinstance(client, TelegramClient):
        raise TypeError(f"guard() takes a telethon.TelegramClient (built, connected or not), "
                        f"got {type(client).__name__} {client!r:.60}")
    if link_of(client) is not None:
        raise GuardConfigError("client", "this client is already guarded")
    state = ClientGuard.create(**kwargs)
    attach_session_storage(client.session, state)  # flood state survives restarts
    if client.is_connected():
        warnings.warn(
            "guard(): the client is already connected: its calls are guarded from now on, "
            "but it keeps Telethon's own sender (no paced reconnects after transport "
            "errors or -429, no liveness watchdog) until its next connect() after a "
            "disconnect(); call guard() before connect(), or disconnect() and connect() "
            "again", GuardWarning, stacklevel=2)
    warn_call_override(client)
    return attach(client, state)


def attach(client: TelegramClient, state: ClientGuard) -> TelegramClient:
    """Wrap ``client``'s instance methods so its requests go through ``state``'s pipeline."""
    link = prepare_client(client, state)
    if not client.is_connected():
        replace_main_sender(client, state)

    def call_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        # client(request): Telethon's __call__ sends on the main sender; the straight lane
        # takes it when nothing would stop it, as GuardedTelegramClient.__call__ does.
        if len(args) == 2 and args[0] is tl.main_sender(client) and kw.keys() <= _LANE_KW:
            return lane_call(client, link, args[1], kw.get("ordered", False),
                             kw.get("flood_sleep_threshold"))
        return guarded_call(client, state, *args, **kw)

    def connect_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        if (not client.is_connected()
                and not isinstance(tl.main_sender(client), GuardedMTProtoSender)):
            replace_main_sender(client, state)  # guarded after a disconnect, too
        return maybe_sync(guarded_connect(client, link, lambda: wrapped(*args, **kw)))

    def exported_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        return create_exported_sender(client, state, *args, **kw)

    def disconnect_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        return guarded_disconnect(client, link, wrapped)

    async def cdn_client(wrapped: Any, args: Any, kw: Any) -> Any:
        cdn = await wrapped(*args, **kw)
        if link_of(cdn) is None:
            attach(cdn, state)
        return cdn

    def cdn_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        return cdn_client(wrapped, args, kw)

    def authorized_wrapper(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
        return maybe_sync(is_user_authorized(client))

    tl.wrap_instance_methods(
        client, wrapt.FunctionWrapper,
        call=call_wrapper,
        connect=connect_wrapper,
        is_user_authorized=authorized_wrapper,
        create_exported_sender=exported_wrapper,
        disconnect_coro=disconnect_wrapper,
        get_cdn_client=cdn_wrapper,
    )
    client.guard = state
    if client.is_connected():
        hook_tasks(client, link)
    return client
