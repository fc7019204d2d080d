"""``GuardedMTProtoSender``: Telethon's ``MTProtoSender`` that survives transport -429.

What Telethon 1.45 does (design-notes §2) and what this sender does instead:

* **-429 on TcpFull** (negative length): Telethon disconnects for good; in-flight calls get
  ``InvalidBufferError``, later calls ``ConnectionError``. Here: a paced reconnect (the
  :class:`~telethon_guard.reconnect.ReconnectPacer` schedule); queued and new calls are sent
  after it, and so are in-flight calls that are safe to send again (see below).
* **-429 on Intermediate / Abridged** (a 4-byte packet, or 4 raw bytes): Telethon reconnects at
  once with no backoff, a reconnect storm. Here: the same paced reconnect.
* **Connection lost**: Telethon makes ``retries`` attempts ``delay`` s apart. Here: paced.
* **No reconnect within** ``max_reconnect_seconds``: pending calls fail with
  :class:`~telethon_guard.errors.TransportFloodError` (after -429) or
  :class:`~telethon_guard.errors.GuardConnectionError`; new calls fail fast with the same error
  until a reconnect succeeds; paced attempts go on meanwhile.
* **-404 / unknown auth key**: disconnect once with
  :class:`~telethon_guard.errors.AuthKeyInvalidError`; no reconnect loop.
* **send() while disconnected**: ``GuardConnectionError`` instead of a bare ``ConnectionError``
  (or the typed error that ended the connection).
* **disconnect() with calls in flight**: their futures fail with ``GuardConnectionError``
  instead of being cancelled (Telethon makes callers that were never cancelled see
  ``CancelledError``).
* **Calls in flight when the connection is lost** (reset, closed, -429): Telethon re-sends
  every one. Here only those safe to send again although they may have run
  (:func:`~telethon_guard.liveness.resend_is_safe`: a ``random_id``, an idempotent read, a
  ping); any other call already sent fails with :class:`ConnectionLostMayHaveRun` (a
  ``MayHaveRunError``), e.g. no second ``auth.sendCode`` (a second code). The liveness
  replacement applies the same rule (``SilentConnectionMayHaveRun``).
* **Requests whose callers gave up** (cancelled, timed out) before they were sent, or before
  a reconnect re-sends them: not sent (Telethon sends them anyway).
* **Futures nobody awaits** (pings, the rest of a batch, the ``disconnected`` future): each gets
  a done-callback retrieving its exception, so nothing logs "Future exception was never
  retrieved".

Raw transport errors: with Intermediate / Abridged framing, 4 raw bytes of ``-429`` are not a
valid frame; Telethon would see a ``ValueError`` or a short read. The sender wraps the
connection's packet codec so that such 4 bytes surface as ``InvalidBufferError`` with their
code, in every framing (needed to tell a permanent -404 from a -429).

The reconnect path (failure handling, the paced reconnect loop, give-up, connection attempts
through the pacer and the process budget) is :class:`~telethon_guard._sender_reconnect.
ReconnectingSender`, this sender's base class; this module keeps sending, receiving, liveness
and the user's connect / disconnect.

Usage with a plain ``TelegramClient`` (``GuardedTelegramClient`` does this for you): replace its
sender right after construction, before ``connect()``::

    client = TelegramClient(session, api_id, api_hash)
    client._sender = GuardedMTProtoSender.for_client(client, pacer=ReconnectPacer(),
                                                     events=EventBus())
    await client.connect()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from telethon.errors import InvalidBufferError, SecurityError, TypeNotFoundError
from telethon.network.connection.connection import Connection
from telethon.network.requeststate import RequestState
from telethon.tl.functions import PingRequest

from ._send_queue import GuardedPacker, retrieve
from ._sender_errors import ConnectionLostMayHaveRun, copy_error, typed_error
from ._sender_reconnect import ReconnectingSender
from ._telethon import connection_dc, sender_settings
from ._telethon import loggers as client_loggers
from ._transport_codec import framing_of
from .errors import ConnectionRetriesExhausted, GuardConnectionError, GuardError
from .liveness import (
    LivenessVerdict,
    LivenessWatchdog,
    SilentConnectionError,
    SilentConnectionMayHaveRun,
    liveness_policy,
    watch_liveness,
)
from .reconnect import ReconnectPacer

__all__ = ["ConnectionLostMayHaveRun", "GuardedMTProtoSender", "client_sender_settings",
           "framing_of"]


client_sender_settings = sender_settings
"""The sender arguments Telethon takes from a ``TelegramClient``'s settings (see
:func:`telethon_guard._telethon.sender_settings`)."""


class GuardedMTProtoSender(ReconnectingSender):
    """An ``MTProtoSender`` with paced recovery from transport errors and no stray futures.

    Same constructor as Telethon's ``MTProtoSender`` (``auth_key, *, loggers, retries, delay,
    auto_reconnect, connect_timeout, auth_key_callback, updates_queue,
    auto_reconnect_callback``) plus, keyword-only:

    :param pacer: the :class:`~telethon_guard.reconnect.ReconnectPacer` deciding when a new
        connection may be opened. Every reconnect and every connect retry waits for its turn;
        a connect with no failure on record goes at once (and is recorded in the windows).
        Default: a new pacer with TDLib's settings. Share one pacer between senders that
        connect to the same address.
    :param events: an :class:`~telethon_guard.events.EventBus` (anything with ``emit(event)``)
        or ``None``. Emits :class:`TransportErrorEvent`, :class:`ReconnectAttempt`,
        :class:`ReconnectSucceeded`, :class:`ReconnectGaveUp` (the bus logs it as a warning;
        without a bus the sender logs the warning itself).
    :param dc_id: the DC this sender talks to (events and ``AuthKeyInvalidError.dc_id``).
    :param account: the guard's account key for events, a callable returning it when an event
        is built (a guarded client's current key, which changes from ``key:<auth key id>`` to
        ``user:<id>`` at login), or ``None``.
    :param max_reconnect_seconds: seconds (monotonic, counted from the first failure since the
        last stable connection) that pending calls wait for a reconnect. After that they fail
        with :class:`TransportFloodError` (after -429) or :class:`GuardConnectionError`, and new
        calls fail fast with the same error until a reconnect succeeds; reconnect attempts go
        on at the pacer's pace. ``None``: wait for ever. Default 60.0.
    :param config: a :class:`~telethon_guard.config.GuardConfig` (or ``None``: the defaults)
        for the liveness watchdog (:mod:`telethon_guard.liveness`): a connection that is open
        but silent while replies are awaited, whose keepalive ping goes unanswered, or whose
        replies Telethon ignored ("very old" after a loop stall), is replaced through the paced
        reconnect; requests safe to send again are re-sent, the others fail with
        :class:`~telethon_guard.liveness.SilentConnectionMayHaveRun`.
    :raises GuardConfigError: on a bad ``max_reconnect_seconds`` or ``pacer``.

    Telethon's ``retries`` still bounds the attempts of one ``connect()``; reconnects are
    bounded by time (``max_reconnect_seconds``) instead, and the pacer replaces ``delay``
    between connection attempts (``delay`` is only used between auth-key generation retries).

    Counters for the breaker and metrics: :attr:`transport_errors` (``Counter`` by negative
    code, e.g. ``{-429: 3}``), :attr:`connection_losses`, :attr:`reconnect_attempts`,
    :attr:`reconnects`.

    With ``auto_reconnect=False`` a transport error or a lost connection disconnects the sender
    for good (like Telethon) but with a typed error.
    """

    __slots__ = ("_liveness", "_watchdog", "_watched_disconnected", "liveness_replaced_at",
                 "liveness_replacements")  # as ReconnectingSender's: Telethon's dict stays small

    def __init__(
        self,
        auth_key: Any,
        *,
        loggers: Any,
        retries: int = 5,
        delay: float = 1,
        auto_reconnect: bool = True,
        connect_timeout: float | None = None,
        auth_key_callback: Callable[[Any], Awaitable[Any]] | None = None,
        updates_queue: asyncio.Queue[Any] | None = None,
        auto_reconnect_callback: Callable[[], Coroutine[Any, Any, Any]] | None = None,
        pacer: ReconnectPacer | None = None,
        events: Any = None,
        dc_id: int | None = None,
        account: str | Callable[[], str | None] | None = None,
        max_reconnect_seconds: float | None = 60.0,
        config: Any = None,
    ) -> None:
        super().__init__(
            auth_key,
            loggers=loggers,
            retries=retries,
            delay=delay,
            auto_reconnect=auto_reconnect,
            connect_timeout=connect_timeout,
            auth_key_callback=auth_key_callback,
            updates_queue=updates_queue,
            auto_reconnect_callback=auto_reconnect_callback,
        )
        self._init_reconnect(pacer=pacer, events=events, dc_id=dc_id, account=account,
                             max_reconnect_seconds=max_reconnect_seconds)
        self._send_queue = GuardedPacker(self._state, loggers=self._loggers)

        # liveness (liveness.py): a watchdog per connection replaces one that went silent
        self._liveness = liveness_policy(config)
        self._watchdog: LivenessWatchdog | None = None
        self.liveness_replacements = 0
        """Connections replaced because they went silent or their replies were ignored."""
        self.liveness_replaced_at: float | None = None
        """``time.monotonic()`` of the last such replacement (``None``: none yet)."""
        self._watched_disconnected: asyncio.Future[Any] | None = None

    @classmethod
    def for_client(
        cls,
        client: Any,
        *,
        pacer: ReconnectPacer | None = None,
        events: Any = None,
        dc_id: int | None = None,
        account: str | Callable[[], str | None] | None = None,
        max_reconnect_seconds: float | None = 60.0,
    ) -> GuardedMTProtoSender:
        """A sender built from a (not yet connected) ``TelegramClient``'s own settings, exactly
        as ``TelegramBaseClient.__init__`` builds its ``MTProtoSender``, plus the guard's extras.

        To protect a plain client (what ``GuardedTelegramClient`` does for you)::

            client = TelegramClient(session, api_id, api_hash)
            client._sender = GuardedMTProtoSender.for_client(client, pacer=ReconnectPacer())
            await client.connect()

        ``dc_id`` defaults to the session's DC.
        """
        return cls(
            client.session.auth_key,
            loggers=client_loggers(client),
            **client_sender_settings(client),
            pacer=pacer,
            events=events,
            dc_id=dc_id if dc_id is not None else client.session.dc_id,
            account=account,
            max_reconnect_seconds=max_reconnect_seconds,
        )

    # ---- public surface ---------------------------------------------------------------------

    async def connect(self, connection: Connection) -> bool:
        """Connect (paced); Telethon's bare ``ConnectionError`` becomes ``GuardConnectionError``."""
        if not self._user_connected:
            # Telethon reuses the main sender after a DC switch: follow the connection's DC.
            dc = connection_dc(connection)
            if dc is not None:
                self.dc_id = dc
            self._terminal = None
            self._given_up = False
            self._reconnecting = False  # a reconnect cut short by a disconnect left it set
            self._last_code = None
            self._down_since = None
            self._outage_attempts = 0
            self._awaiting_confirm = False
            self._connect_losses = 0
            self._tries = (0, None)
        try:
            return await super().connect(connection)
        except GuardError:
            raise
        except ConnectionError as e:
            # Telethon's loop made its connection_retries + 1 attempts: during the client's
            # connect() that is the same outcome as connections lost after opening. Telethon's
            # own message says "failed <connection_retries> time(s)", one short.
            cls = ConnectionRetriesExhausted if self.connecting else GuardConnectionError
            failed, last = self._tries
            if failed and str(e).startswith("Connection to Telegram failed"):
                text = (f"Connection to Telegram failed {failed} time(s): the first attempt "
                        f"and connection_retries={self._retries} retries (DC {self.dc_id}); "
                        f"last: {type(last).__name__}: {last}")
            else:
                text = f"{e} (DC {self.dc_id}, connection_retries={self._retries})"
            if last is not None and e.__cause__ is None:
                e.__cause__ = last  # ours <- Telethon's <- the last attempt's error
            raise cls(text) from e

    async def disconnect(self) -> None:
        """Disconnect (user action): stops any reconnect loop; calls in flight or queued fail with
        ``GuardConnectionError``; the ``disconnected`` future resolves without error."""
        await self._stop_background()
        await super().disconnect()

    async def abort_connect(self) -> None:
        """Undo a :meth:`connect` that did not complete (failed, or cancelled by its caller):
        no socket, no send / receive / reconnect / callback task, no queued request; the
        sender is as it was before ``connect()``. A connected sender is disconnected."""
        if self._user_connected:
            await self.disconnect()
            return
        await self._stop_background()
        self._reconnecting = False
        conn = self._connection
        if conn is not None:
            await conn.disconnect()  # closes the socket, cancels the connection's own tasks
        await self.cancel_loops()
        self._fail_requests(lambda: GuardConnectionError("connect() did not complete"))
        self._connection = None

    def send(self, request: Any, ordered: bool = False) -> Any:
        """Queue ``request`` (or a list of requests) like Telethon; returns the future(s).

        :raises GuardConnectionError: the sender is disconnected (or ``AuthKeyInvalidError`` /
            ``TransportFloodError`` when that is why it disconnected).
        :raises TransportFloodError: reconnecting has taken longer than
            ``max_reconnect_seconds`` (``retry_after``: seconds until the next attempt).
        """
        if not self._user_connected:
            if self._terminal is not None:
                raise copy_error(self._terminal)
            raise GuardConnectionError("Cannot send requests while disconnected")
        if self._given_up:
            raise self._give_up_error(None)
        # Every request's future gets its retrieving done-callback when it is queued
        # (GuardedPacker.append / extend), so none is added here.
        return super().send(request, ordered)

    def send_awaited(self, request: Any, ordered: bool = False) -> asyncio.Future[Any]:
        """:meth:`send` for ONE request whose caller awaits the returned future and, when it
        stops awaiting it, cancels it or retrieves its exception (the guard's attempt): no
        retrieving done-callback (one loop callback less per request). Same errors.

        A connected sender queues the request's state itself (what Telethon's ``send`` does
        for one request: no list test, no second ``send`` frame); anything else (not
        connected, given up, a request that does not serialize) goes through :meth:`send`,
        which raises as it does."""
        if self._user_connected and not self._given_up:
            try:
                state = RequestState(request)
            except struct.error:
                pass  # send() logs it and raises, as Telethon does
            else:
                self._send_queue.append_awaited(state)
                return state.future
        queue = self._send_queue
        queue.awaited = True
        try:
            fut: asyncio.Future[Any] = self.send(request, ordered)
        finally:
            queue.awaited = False
        return fut

    @property
    def disconnected(self) -> asyncio.Future[Any]:
        """Future resolved when the sender disconnects for good (its exception is retrieved)."""
        fut: asyncio.Future[Any] = asyncio.shield(self._disconnected)
        fut.add_done_callback(retrieve)
        return fut

    @property
    def _disconnected(self) -> asyncio.Future[Any]:
        # Telethon's (SenderSurface): each new future gets a retrieving callback.
        fut = self.disconnected_future()
        if fut is not self._watched_disconnected:
            fut.add_done_callback(retrieve)
            self._watched_disconnected = fut
        return fut

    async def _disconnect(self, error: BaseException | None = None) -> None:
        """End the connection for good. In-flight and queued calls fail with the typed error
        (``GuardConnectionError`` on a user disconnect, instead of Telethon's cancellation);
        the ``disconnected`` future gets the typed error (or ``None`` on a user disconnect)."""
        if self._connection is None:
            self._log.info("Not disconnecting (already have no connection)")
            return
        # A user disconnect racing a disconnect for good keeps the reason for good.
        typed = typed_error(error if error is not None else self._terminal, self.dc_id)
        if error is not None and self._terminal is None:
            self._terminal = typed
        self._log.info("Disconnecting from %s...", self._connection)
        self._user_connected = False
        try:
            await self._connection.disconnect()
        finally:
            self._fail_requests(lambda: copy_error(typed))
            await self.cancel_loops()
            self._log.info("Disconnection from %s complete!", self._connection)
            self._connection = None
        fut = self._disconnected
        if not fut.done():
            if error is not None:
                fut.set_exception(copy_error(typed))
            else:
                fut.set_result(None)

    def _keepalive_ping(self, rnd_id: int) -> None:
        # Telethon's ping future is never awaited; ``send`` attaches the retrieving callback.
        with contextlib.suppress(GuardError):
            super()._keepalive_ping(rnd_id)

    # ---- liveness (the watchdog's logic is telethon_guard/liveness.py) -------------------------

    def _start_watchdog(self) -> None:
        """Called by each new receive loop: a watchdog for its connection, stopped with it."""
        policy = self._liveness
        recv = asyncio.current_task()
        if policy is None or recv is None:
            return
        dog = self._watchdog = LivenessWatchdog(policy, time.monotonic())
        # One loop timer checks every connection's watchdog (no task per connection).
        watch = watch_liveness(
            dog, now=time.monotonic, pending=self._awaited_replies, ping=self._liveness_ping,
            replace=self._replace_silent)
        recv.add_done_callback(watch.cancel)

    def _note_liveness(self, accepted: bool) -> None:
        dog = self._watchdog
        if dog is not None:
            if accepted:
                dog.received(time.monotonic())
            else:
                dog.ignored()

    def _awaited_replies(self) -> list[tuple[int, bool]] | tuple[()]:
        pending = self._pending_state
        if not pending:  # idle: nothing allocated (checked every tick per connection)
            return ()
        return [(msg_id, not s.future.done()) for msg_id, s in pending.items()]

    def _liveness_ping(self) -> bool:
        if not self._user_connected or self._reconnecting or self._given_up:
            return False
        try:
            self.send(PingRequest(int.from_bytes(os.urandom(8), "big", signed=True)))
        except GuardError:
            return False
        return True

    def _replace_silent(self, verdict: LivenessVerdict) -> None:
        """The watchdog's REPLACE: fail what may not be sent again, then a paced reconnect
        (which re-sends the rest on the new connection)."""
        if not self._user_connected or self._reconnecting or self.is_reconnecting:
            return
        timeout = self._liveness.timeout if self._liveness is not None else 0.0
        failed = self._fail_sent_unsafe(
            lambda method: SilentConnectionMayHaveRun(method, timeout))
        self.liveness_replacements += 1
        self.liveness_replaced_at = time.monotonic()
        self._ping = None  # Telethon's keepalive would reconnect again on its lost ping
        self._log.warning("DC %s: replacing the connection (%s); %d call(s) not safe to send "
                          "again failed", self.dc_id, verdict.reason, failed)
        self._start_reconnect(SilentConnectionError(f"connection to DC {self.dc_id} "
                                                    f"replaced: {verdict.reason}"))

    # ---- receive loop -------------------------------------------------------------------------

    async def _recv_loop(self) -> None:
        """Telethon's receive loop with every transport failure routed to
        :meth:`_on_connection_failure` (no disconnect for good on -429)."""
        self._start_watchdog()
        while self._user_connected and not self._reconnecting:
            try:
                body = await self._connection.recv()
            except asyncio.CancelledError:
                raise
            except InvalidBufferError as e:
                self._log.warning("Transport error from DC %s: %s", self.dc_id, e)
                self._on_connection_failure(e)
                return
            except (OSError, asyncio.IncompleteReadError) as e:
                self._log.info("Connection closed while receiving data: %s", e)
                self._on_connection_failure(e)
                return
            except Exception as e:
                self._log.warning("Error while receiving data: %s: %s", type(e).__name__, e)
                self._on_connection_failure(e)
                return

            try:
                message = self._state.decrypt_message_data(body)
                if message is None:
                    self._note_liveness(False)  # ignored: "very old" / "very new" / resent
                    continue
            except TypeNotFoundError as e:
                self._log.info("Type %08x not found, remaining data %r",
                               e.invalid_constructor_id, e.remaining)
                continue
            except SecurityError as e:
                self._log.warning("Security error while unpacking a received message: %s", e)
                self._note_liveness(False)
                continue
            except InvalidBufferError as e:
                self._log.warning("Transport error from DC %s: %s", self.dc_id, e)
                self._on_connection_failure(e)
                return
            except Exception as e:
                self._log.warning("Error while decrypting data: %s: %s", type(e).__name__, e)
                self._on_connection_failure(e)
                return

            self._note_liveness(True)
            if self._unanswered:
                self._first_message()
            try:
                await self._process_message(message)
            except Exception:
                self._log.exception("Unhandled error while processing msgs")

