"""The Telethon adapter: the one module that names Telethon's private API.

Everything private of Telethon (1.x, ``telethon>=1.43``) that the guard reads, writes,
calls or overrides is named here, either behind a small function (the client side) or in a
documented subclass surface (the sender side, which must override Telethon's private methods
to change its behaviour). Other modules of the guard do not spell a Telethon private name;
``tests/guard/test_telethon_adapter.py`` checks that every name listed here exists in the
installed Telethon, and that the guard's Telethon-facing modules use no other.

Version notes (CI runs the integration tests on the oldest and the newest Telethon that
``pyproject.toml`` allows):

* ``MTProtoSender._reconnect_task`` exists from 1.42 on and is only written by Telethon's own
  ``_start_reconnect``, which the guarded sender overrides: the guard keeps its own task and
  never reads Telethon's.
* ``MTProtoSender._disconnected`` is a property from 1.42 on (a plain attribute before).

Why the floor is 1.43 (``telethon>=1.43``): the guard's error types need
``errors.FloodPremiumWaitError`` (``FLOOD_PREMIUM_WAIT_X``, first in 1.37), the sender surface
relies on the 1.42 ``_disconnected`` property, and the integration tests' MTProtoSender world
(``telethon_guard.testing``) builds layer-224 types (``Dialog.unread_poll_votes_count``)
that Telethon has since 1.43 (layer 224): an older floor could not be tested.
"""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from telethon import helpers
from telethon._updates import messagebox as _messagebox
from telethon.extensions.messagepacker import MessagePacker
from telethon.network import MTProtoSender
from telethon.network.connection.connection import Connection, PacketCodec
from telethon.sessions import MemorySession, SQLiteSession
from telethon.tl import types

if TYPE_CHECKING:
    from telethon import TelegramClient

__all__ = [
    "CLIENT_ATTRIBUTES",
    "CLIENT_METHODS",
    "CODEC_ATTRIBUTES",
    "CONNECTION_ATTRIBUTES",
    "ENTITY_CACHE_ATTRIBUTES",
    "MESSAGE_BOX_ATTRIBUTES",
    "MODULE_FUNCTIONS",
    "PACKER_ATTRIBUTES",
    "SENDER_ATTRIBUTES",
    "SENDER_METHODS",
    "SESSION_ATTRIBUTES",
    "TELETHON_FLOOR",
    "SenderSurface",
]

TELETHON_FLOOR = "1.43"
"""Oldest Telethon the guard supports (see the module docstring for why)."""

# ---- the registry: every Telethon private name the guard touches ---------------------------
# (name: what the guard does with it). tests/guard/test_telethon_adapter.py checks each one
# against the installed Telethon (instance attributes on a real, unconnected instance).

CLIENT_ATTRIBUTES: Mapping[str, str] = {
    "_sender": "read (the main sender) and replaced by the guarded sender",
    "_flood_sleep_threshold": "set to 0: Telethon never sleeps on FLOOD_WAIT itself",
    "_flood_waited_requests": "replaced by a memo that never remembers",
    "_event_handler_tasks": "replaced by a set that retrieves its tasks' exceptions",
    "_authorized": "read/written by the guard's is_user_authorized",
    "_loop": "read: the loop check of _call",
    "_log": "read: Telethon's loggers, passed to senders and connections",
    "_init_request": "read: InitConnection wrapped around ImportAuthorization",
    "_no_updates": "read: InvokeWithoutUpdates wrapping",
    "_last_request": "written: time of the last request (keepalive)",
    "_proxy": "read: for exported-sender connections",
    "_local_addr": "read: for exported-sender connections",
    "_connection": "called: the connection class, for exported senders",
    "_connection_retries": "read: sender settings",
    "_retry_delay": "read: sender settings",
    "_auto_reconnect": "read: sender settings",
    "_timeout": "read: sender settings",
    "_auth_key_callback": "read: sender settings",
    "_updates_queue": "read: sender settings; written: a no-op wake of the update loop",
    "_updates_handle": "read: the update-loop task (exception retrieval; which task a "
                       "getDifference / getChannelDifference comes from)",
    "_message_box": "read/written: a deferred difference is begun again (update_path.py)",
    "_keepalive_handle": "read: the keepalive task (exception retrieval)",
    "_mb_entity_cache": "read: its self_id, the logged-in user's id (the default account key)",
}
"""``TelegramClient`` instance attributes."""

CLIENT_METHODS: Mapping[str, str] = {
    "_call": "overridden / wrapped: every request goes through the guard pipeline; called "
             "by call_on_sender, FastTelethon-style code's entry point",
    "_create_exported_sender": "overridden / wrapped: guarded senders for other DCs",
    "_get_cdn_client": "overridden / wrapped: CDN clients share the guard",
    "_disconnect_coro": "overridden / wrapped: marks the client offline, releases the loop",
    "_disconnect": "called: rolls back a failed connect",
    "_switch_dc": "called: on PHONE/NETWORK/USER_MIGRATE",
    "_get_dc": "called: DC address for exported senders",
    "_handle_auto_reconnect": "read: the sender's auto-reconnect callback",
}
"""``TelegramClient`` methods."""

SENDER_ATTRIBUTES: Mapping[str, str] = {
    "_connection": "read/written: the current Connection",
    "_user_connected": "read/written: connected on purpose",
    "_reconnecting": "read/written: stops the send/receive loops",
    "_send_queue": "replaced by the guarded MessagePacker",
    "_state": "read: MTProtoState (decrypt, reset)",
    "_pending_state": "read/written: requests in flight by msg_id",
    "_send_loop_handle": "read/written: the send task",
    "_recv_loop_handle": "read/written: the receive task",
    "_log": "read: the sender's logger",
    "_loggers": "read: Telethon's loggers",
    "_auto_reconnect": "read",
    "_retries": "read: connection_retries (connect() ends after that many lost connections)",
    "_delay": "read: retry_delay (the wait after a refused connection attempt in connect())",
    "_auto_reconnect_callback": "read: run after a reconnect",
    "_connect_timeout": "read: timeout of one connection attempt",
    "_ping": "written: cleared when the liveness watchdog replaces a silent connection",
}
"""``MTProtoSender`` instance attributes (the subclass surface of :class:`SenderSurface`)."""

SENDER_METHODS: Mapping[str, str] = {
    "_disconnected": "overridden: the disconnected future gets a retrieving callback",
    "_try_connect": "overridden: paced connection attempts",
    "_disconnect": "overridden: typed errors for calls in flight",
    "_reconnect": "overridden: the paced reconnect loop",
    "_start_reconnect": "overridden: one paced reconnect loop at a time",
    "_recv_loop": "overridden: transport errors routed to the reconnect path",
    "_keepalive_ping": "overridden: a ping on a dead connection is not an error",
    "_send_loop": "called: the send task after a reconnect",
    "_process_message": "called: from the receive loop",
}
"""``MTProtoSender`` methods."""

PACKER_ATTRIBUTES: Mapping[str, str] = {
    "_deque": "read/written: drop requests cancelled before they were sent",
}
"""``MessagePacker`` instance attributes."""

CONNECTION_ATTRIBUTES: Mapping[str, str] = {
    "_codec": "wrapped: raw transport error codes in every framing",
    "_recv_queue": "emptied before a reused connection object connects again",
    "_send_queue": "emptied before a reused connection object connects again",
    "_dc_id": "read: the DC a connection goes to (follows a DC switch)",
    "_ip": "read: the DC address, the key of the process connection budget (budget.py)",
    "_port": "read: the DC port, the key of the process connection budget (budget.py)",
}
"""``Connection`` instance attributes."""

CODEC_ATTRIBUTES: Mapping[str, str] = {
    "_conn": "set: the guard's codec wrapper keeps the wrapped codec's connection",
}
"""``PacketCodec`` instance attributes."""

MESSAGE_BOX_ATTRIBUTES: Mapping[str, str] = {
    "map": "read: the entries (account, channel ids) with a known pts",
    "getting_diff_for": "read: the entries whose difference is being fetched",
    "try_begin_get_diff": "called: begin a deferred difference again",
}
"""``telethon._updates.MessageBox`` members (a private module: public names, private API)."""

ENTITY_CACHE_ATTRIBUTES: Mapping[str, str] = {
    "self_id": "read: the logged-in user's id; Telethon sets it at login (_on_login), in "
               "get_me() and at connect() from a file session's stored self row (1.43+)",
}
"""``telethon._updates.EntityCache`` members (``client._mb_entity_cache``)."""

SESSION_ATTRIBUTES: Mapping[str, str] = {
    "_conn": "read: the SQLite session's sqlite3 connection (its busy wait bounded, "
             "session_store.py); None until first used and after close(); set to None by "
             "close_sqlite_unsaved (reopened on next use)",
    "_dc_id": "read: the session's DC (MemorySession and its subclasses: what the dc_id "
              "property returns, read without the property's call on every request)",
}
"""``telethon.sessions.SQLiteSession`` instance attributes."""

MODULE_FUNCTIONS: Mapping[str, str] = {
    "helpers._cancel": "called: cancel the send/receive tasks",
}
"""Module-level private functions."""


# ---- the session ----------------------------------------------------------------------------


_SQLITE_TYPES: dict[type, bool] = {}  # session class -> is a SQLiteSession (bounded below)
SQLITE_TYPES: Mapping[type, bool] = _SQLITE_TYPES
"""``{session class: is a SQLiteSession}`` for the classes :func:`is_sqlite_session` has
decided (read it first to skip its call)."""
_MEMORY_DC_ID = MemorySession.dc_id  # the property every Telethon session class inherits


def is_sqlite_session(session: Any) -> bool:
    """Whether ``session`` is a Telethon ``SQLiteSession`` (a file or ``:memory:``).

    Decided once per session class (``isinstance`` against Telethon's ABC-based session
    classes costs ~0.3 us; the session store asks after every request)."""
    cls = type(session)
    known = _SQLITE_TYPES.get(cls)
    if known is None:
        known = issubclass(cls, SQLiteSession)
        if len(_SQLITE_TYPES) < 64:
            _SQLITE_TYPES[cls] = known
    return known


def sqlite_connection(session: Any) -> sqlite3.Connection | None:
    """The ``sqlite3.Connection`` of a Telethon ``SQLiteSession`` (file or ``:memory:``), or
    ``None`` (another session type, or not opened yet / closed)."""
    if not isinstance(session, SQLiteSession):
        return None
    conn = session.__dict__.get("_conn")
    return conn if isinstance(conn, sqlite3.Connection) else None


def close_sqlite_unsaved(session: Any) -> None:
    """Close a Telethon ``SQLiteSession``'s connection, dropping its uncommitted writes
    (``SQLiteSession.close()`` commits first, which fails while another connection holds
    the file's lock). The session opens a new connection when next used. Nothing for other
    sessions or a closed one."""
    conn = sqlite_connection(session)
    if conn is None:
        return
    session._conn = None
    try:
        conn.rollback()
    except sqlite3.Error:
        pass
    try:
        conn.close()
    except sqlite3.Error:
        pass


# ---- the client ---------------------------------------------------------------------------


def main_sender(client: TelegramClient) -> Any:
    """The client's main sender (``client._sender``)."""
    return client._sender


def set_main_sender(client: TelegramClient, sender: MTProtoSender) -> None:
    """Replace the client's main sender (before ``connect()``)."""
    client._sender = sender


def switch_off_flood_handling(client: TelegramClient, memo: dict[Any, Any]) -> None:
    """Telethon never sleeps on FLOOD_WAIT itself nor answers from its flood memo: its
    threshold is 0 and ``memo`` (a dict that remembers nothing) replaces the memo."""
    client._flood_sleep_threshold = 0
    client._flood_waited_requests = memo


def event_handler_tasks(client: TelegramClient) -> Any:
    """The set of update-dispatch tasks (``client._event_handler_tasks``)."""
    return client._event_handler_tasks


def set_event_handler_tasks(client: TelegramClient, tasks: Any) -> None:
    """Replace the set of update-dispatch tasks (a set-like object)."""
    client._event_handler_tasks = tasks


def authorized(client: TelegramClient) -> bool | None:
    """Telethon's cached "is authorized" (``None``: unknown)."""
    value: bool | None = client._authorized
    return value


def set_authorized(client: TelegramClient, value: bool | None) -> None:
    client._authorized = value


def self_user_id(client: TelegramClient) -> int | None:
    """The logged-in user's Telegram id as Telethon knows it (``None``: not known yet).

    Telethon (1.43 to 1.45) sets ``client._mb_entity_cache.self_id`` at login, in
    ``get_me()``, and at ``connect()`` from the self row a file session stores; no request is
    made here (two attribute reads)."""
    value = getattr(getattr(client, "_mb_entity_cache", None), "self_id", None)
    return value if isinstance(value, int) and value else None


def bound_loop(client: TelegramClient) -> asyncio.AbstractEventLoop | None:
    """The loop the client connected on (``None`` before the first connect)."""
    loop: asyncio.AbstractEventLoop | None = client._loop
    return loop


def loggers(client: TelegramClient) -> Any:
    """Telethon's per-module loggers of the client."""
    return client._log


def no_updates(client: TelegramClient) -> bool:
    """Whether the client was built with ``receive_updates=False``."""
    return bool(client._no_updates)


def note_request(client: TelegramClient) -> None:
    """Record that a request is being sent now (Telethon's keepalive reads it)."""
    client._last_request = time.time()


def begin_call(client: TelegramClient) -> tuple[asyncio.AbstractEventLoop | None, bool]:
    """What ``_call`` reads first, in one step: the loop the client connected on (``None``
    before the first connect; :func:`bound_loop`) and ``receive_updates=False``
    (:func:`no_updates`); records that a request is being sent now (:func:`note_request`)."""
    client._last_request = time.time()
    return client._loop, bool(client._no_updates)


def begin_main_call(client: TelegramClient) -> tuple[asyncio.AbstractEventLoop | None, bool,
                                                     Any, Any, int]:
    """:func:`begin_call` for a request on the main sender, in one step: ``(bound loop,
    receive_updates=False, main sender, session, the session's DC id or 0)``; records that a
    request is being sent now."""
    client._last_request = time.time()
    session = client.session
    dc_id = session._dc_id if type(session).dc_id is _MEMORY_DC_ID else session.dc_id
    return client._loop, bool(client._no_updates), client._sender, session, int(dc_id or 0)


def init_request(client: TelegramClient) -> Any:
    """The client's ``InitConnectionRequest`` (its ``query`` is replaced per use)."""
    return client._init_request


async def switch_dc(client: TelegramClient, dc_id: int) -> None:
    """Telethon's DC switch (disconnect, new auth key for ``dc_id``, connect)."""
    await client._switch_dc(dc_id)


async def get_dc(client: TelegramClient, dc_id: int) -> Any:
    """The ``DcOption`` for ``dc_id`` (Telethon's cached config)."""
    return await client._get_dc(dc_id)


async def disconnect_internal(client: TelegramClient) -> None:
    """Telethon's internal disconnect (sender and tasks; no ``disconnect()`` bookkeeping)."""
    await client._disconnect()


def call_on_sender(client: TelegramClient, sender: Any, request: Any) -> Awaitable[Any]:
    """``client._call(sender, request)``: a request on a sender of the caller's own, the way
    parallel-transfer code (FastTelethon, mautrix-telegram's ``parallel_file_transfer``) sends
    ``upload.getFile`` / ``saveFilePart`` on the exported senders it builds; on a guarded client
    it goes through the guard pipeline."""
    result: Awaitable[Any] = client._call(sender, request)
    return result


def new_connection(client: TelegramClient, dc: Any) -> Connection:
    """A new connection object of the client's kind (framing, proxy, local address) to
    ``dc`` (a ``DcOption``), as Telethon builds for exported senders."""
    conn: Connection = client._connection(
        dc.ip_address, dc.port, dc.id,
        loggers=client._log, proxy=client._proxy, local_addr=client._local_addr,
    )
    return conn


def sender_settings(client: TelegramClient) -> dict[str, Any]:
    """The sender arguments ``TelegramBaseClient.__init__`` takes from a ``TelegramClient``'s
    own settings (retries, delay, auto-reconnect, connect timeout, callbacks, updates queue),
    as keyword arguments for ``MTProtoSender`` (auth key and loggers not included)."""
    return {
        "retries": client._connection_retries,
        "delay": client._retry_delay,
        "auto_reconnect": client._auto_reconnect,
        "connect_timeout": client._timeout,
        "auth_key_callback": client._auth_key_callback,
        "updates_queue": client._updates_queue,
        "auto_reconnect_callback": client._handle_auto_reconnect,
    }


def background_tasks(client: TelegramClient) -> dict[str, Any]:
    """The client's background tasks after ``connect()``: ``{"updates": task or None,
    "keepalive": task or None}``."""
    return {
        "updates": getattr(client, "_updates_handle", None),
        "keepalive": getattr(client, "_keepalive_handle", None),
    }


ACCOUNT_ENTRY: Any = _messagebox.ENTRY_ACCOUNT
"""The message box's entry of the account's own pts (``getDifference``; channels are their ids)."""


def updates_task(client: TelegramClient) -> asyncio.Task[Any] | None:
    """Telethon's update-loop task (``client._updates_handle``; ``None`` before connect)."""
    task: asyncio.Task[Any] | None = getattr(client, "_updates_handle", None)
    return task


def begin_difference(client: TelegramClient, entry: Any, reason: str) -> bool:
    """Mark ``entry`` (:data:`ACCOUNT_ENTRY` or a channel id) as needing its difference, as a
    gap would. ``False`` (nothing done) when the box has no pts for it (never tracked, or
    forgotten after a ban) or its difference is already being fetched."""
    box = client._message_box
    if entry not in box.map or entry in box.getting_diff_for:
        return False
    box.try_begin_get_diff(entry, reason)
    return True


def wake_update_loop(client: TelegramClient) -> None:
    """Make the update loop look at its message box now instead of at its next deadline: put
    an empty ``updatesCombined`` whose seq range (-1) is older than any applied seq on its
    queue. ``MessageBox.process_updates`` skips it as already handled (nothing dispatched,
    no state changed); the loop then asks ``get_difference`` / ``get_channel_difference``."""
    stale = -1  # any applied seq is >= 0: Telethon skips seq_start <= its seq as handled
    client._updates_queue.put_nowait(types.UpdatesCombined(
        updates=[], users=[], chats=[], date=datetime.datetime.now(tz=datetime.timezone.utc),
        seq_start=stale, seq=stale))


_INSTANCE_HOOKS: Mapping[str, str] = {
    "call": "_call",
    "create_exported_sender": "_create_exported_sender",
    "disconnect_coro": "_disconnect_coro",
    "get_cdn_client": "_get_cdn_client",
    "connect": "connect",
    "is_user_authorized": "is_user_authorized",
}


def wrap_instance_methods(client: TelegramClient, wrap: Callable[[Any, Any], Any],
                          **wrappers: Any) -> None:
    """Shadow ``client``'s bound methods with ``wrap(bound, wrapper)`` (instance attributes
    shadow the class's methods, and Telethon calls each of them through ``self``). Keywords:
    ``call`` (Telethon's ``_call``), ``create_exported_sender``, ``disconnect_coro``,
    ``get_cdn_client`` (its private methods of those names), ``connect``,
    ``is_user_authorized``. Raises ``TypeError`` for another keyword."""
    for hook, wrapper in wrappers.items():
        name = _INSTANCE_HOOKS.get(hook)
        if name is None:
            raise TypeError(f"no Telethon client hook named {hook!r}")
        setattr(client, name, wrap(getattr(client, name), wrapper))


def call_override(client: Any) -> str | None:
    """The class that overrides Telethon's private ``_call`` in ``client``'s type (besides
    :class:`ClientHooks` and Telethon itself), as ``module.Class``, or ``None``. The guard
    replaces ``_call``, so such an override is never called: callers log a warning."""
    for klass in type(client).__mro__:
        if "_call" in vars(klass):
            if klass is ClientHooks or klass.__module__.startswith("telethon."):
                return None
            return f"{klass.__module__}.{klass.__qualname__}"
    return None


class ClientHooks:
    """The subclass surface of ``TelegramClient`` for :class:`GuardedTelegramClient`: the
    Telethon private methods it overrides, forwarded to the guard's named hooks. Mixed in
    before ``TelegramClient``; the subclass defines the ``guard_*`` hooks."""

    async def _call(self, sender: Any, request: Any, ordered: bool = False,
                    flood_sleep_threshold: float | None = None) -> Any:
        return await self._guard_call_hook(sender, request, ordered, flood_sleep_threshold)

    async def _create_exported_sender(self, dc_id: int) -> Any:
        return await self._guard_exported_sender_hook(dc_id)

    async def _disconnect_coro(self) -> None:
        parent: Callable[[], Awaitable[None]] = super()._disconnect_coro  # type: ignore[misc]
        await self._guard_disconnect_hook(parent)

    async def _get_cdn_client(self, cdn_redirect: Any) -> Any:
        parent: Callable[[Any], Awaitable[Any]] = super()._get_cdn_client  # type: ignore[misc]
        return await self._guard_cdn_client_hook(parent, cdn_redirect)

    # the hooks (defined by the subclass)

    async def _guard_call_hook(self, sender: Any, request: Any, ordered: bool,
                               flood_sleep_threshold: float | None) -> Any:
        raise NotImplementedError

    async def _guard_exported_sender_hook(self, dc_id: int) -> Any:
        raise NotImplementedError

    async def _guard_disconnect_hook(self, parent: Callable[[], Awaitable[None]]) -> None:
        await parent()

    async def _guard_cdn_client_hook(self, parent: Callable[[Any], Awaitable[Any]],
                                     cdn_redirect: Any) -> Any:
        return await parent(cdn_redirect)


# ---- the sender ---------------------------------------------------------------------------

def sender_is_user_connected(sender: Any) -> bool:
    """Whether ``sender`` is connected on purpose (Telethon's ``_user_connected``), for any
    sender (Telethon's or the guard's)."""
    return bool(getattr(sender, "_user_connected", False))


_TELETHON_DISCONNECTED: property = MTProtoSender.__dict__["_disconnected"]
"""Telethon's ``_disconnected`` property (created lazily, replaced on each connect)."""


class SenderSurface(MTProtoSender):
    """The documented subclass surface of Telethon's ``MTProtoSender`` for the guarded sender.

    A subclass may read and write the Telethon attributes listed in :data:`SENDER_ATTRIBUTES`
    (re-declared below with types) and override or call the methods in
    :data:`SENDER_METHODS`; nothing else of Telethon's private sender state. The
    ``_disconnected`` future is read with :meth:`disconnected_future`.
    """

    _connection: Any
    _user_connected: bool
    _reconnecting: bool
    _send_queue: Any
    _state: Any
    _pending_state: dict[int, Any]
    _send_loop_handle: asyncio.Task[Any] | None
    _recv_loop_handle: asyncio.Task[Any] | None
    _log: Any
    _loggers: Any
    _auto_reconnect: bool
    _retries: int | None
    _delay: float
    _auto_reconnect_callback: Callable[[], Any] | None
    _connect_timeout: float | None
    _ping: int | None

    def disconnected_future(self) -> asyncio.Future[Any]:
        """Telethon's ``disconnected`` future itself (not shielded)."""
        fut: asyncio.Future[Any] = _TELETHON_DISCONNECTED.__get__(self)
        return fut

    async def cancel_loops(self) -> None:
        """Cancel and await the send and receive tasks (Telethon's ``helpers._cancel``)."""
        await helpers._cancel(
            self._log,
            send_loop_handle=self._send_loop_handle,
            recv_loop_handle=self._recv_loop_handle,
        )


def queued_states(packer: MessagePacker) -> deque[Any]:
    """The states waiting in a ``MessagePacker`` (its ``_deque``), oldest first (mutable)."""
    states: deque[Any] = packer._deque
    return states


def reset_connection_queues(conn: Connection) -> None:
    """Empty a connection object's send and receive queues: a dead connection may hold a
    stale ``(None, error)`` item that a reused object would hand to the new receive loop."""
    for q in (conn._recv_queue, conn._send_queue):
        while not q.empty():
            q.get_nowait()


def connection_codec(conn: Connection) -> PacketCodec | None:
    """The packet codec of a connected connection (``None`` before ``connect``)."""
    codec: PacketCodec | None = conn._codec
    return codec


def set_connection_codec(conn: Connection, codec: PacketCodec) -> None:
    """Replace the packet codec (before the receive task reads anything)."""
    conn._codec = codec


def connection_dc(conn: Any) -> int | None:
    """The DC id a connection object was built for (``None`` if unknown or not positive)."""
    dc = getattr(conn, "_dc_id", None)
    if isinstance(dc, int) and not isinstance(dc, bool) and dc > 0:
        return dc
    return None


def sender_dc(sender: Any) -> int | None:
    """The DC id of a sender's current connection (``None`` if unknown): a sender the caller
    built itself (FastTelethon's own ``MTProtoSender``) has no ``dc_id`` of its own."""
    return connection_dc(getattr(sender, "_connection", None))


def connection_address(conn: Any) -> tuple[str, int] | None:
    """``(host, port)`` a connection object connects to (``None`` if unknown)."""
    ip = getattr(conn, "_ip", None)
    port = getattr(conn, "_port", None)
    if ip is None or port is None:
        return None
    return str(ip), int(port)


def codec_connection(codec: PacketCodec) -> Any:
    """The connection a packet codec belongs to (``PacketCodec._conn``)."""
    return getattr(codec, "_conn", None)
