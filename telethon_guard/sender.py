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
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from telethon import helpers
from telethon.errors import AuthKeyNotFound, InvalidBufferError, SecurityError, TypeNotFoundError
from telethon.network.connection.connection import Connection
from telethon.tl.functions import PingRequest

from ._send_queue import GuardedPacker, requests_of, retrieve
from ._sender_errors import copy_error, typed_error
from ._telethon import (
    SenderSurface,
    connection_codec,
    connection_dc,
    reset_connection_queues,
    sender_settings,
    set_connection_codec,
)
from ._telethon import loggers as client_loggers
from ._tl import method_name
from ._transport_codec import TransportErrorCodec, framing_of
from .budget import note_refused, take_connection_slot
from .errors import (
    AuthKeyInvalidError,
    GuardConfigError,
    GuardConnectionError,
    GuardError,
    MayHaveRunError,
    TransportFloodError,
)
from .events import (
    GuardEvent,
    ReconnectAttempt,
    ReconnectGaveUp,
    ReconnectSucceeded,
    TransportErrorEvent,
)
from .liveness import (
    LivenessVerdict,
    LivenessWatchdog,
    SilentConnectionError,
    SilentConnectionMayHaveRun,
    liveness_policy,
    resend_is_safe,
    run_watchdog,
)
from .reconnect import ReconnectPacer

__all__ = ["ConnectionLostMayHaveRun", "GuardedMTProtoSender", "client_sender_settings",
           "framing_of"]


class ConnectionLostMayHaveRun(MayHaveRunError):
    """A request that is not safe to send again (no ``random_id``, not a read: see
    :func:`telethon_guard.liveness.resend_is_safe`) had been sent on a connection lost to a
    transport error (reset, closed, -429...). The server may have run it (e.g. a second
    ``auth.sendCode`` would send a second code), so the reconnect does not send it again.
    Final (never retried by the guard). ``timeout`` is ``0.0``: no attempt timeout ran out."""

    def __init__(self, method: str) -> None:
        super().__init__(method, 0.0)
        self.args = (f"{method}: the connection was lost after the request was sent; not "
                     "idempotent, so not sent again (it may have run)",)


client_sender_settings = sender_settings
"""The sender arguments Telethon takes from a ``TelegramClient``'s settings (see
:func:`telethon_guard._telethon.sender_settings`)."""


class GuardedMTProtoSender(SenderSurface):
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
    :param account: the guard's account key for events, or ``None``.
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
        account: str | None = None,
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
        if max_reconnect_seconds is not None and (
            isinstance(max_reconnect_seconds, bool)
            or not isinstance(max_reconnect_seconds, (int, float))
            or not max_reconnect_seconds > 0
        ):
            raise GuardConfigError("max_reconnect_seconds",
                                   f"must be a number > 0 or None, got {max_reconnect_seconds!r}")
        if pacer is not None and not isinstance(pacer, ReconnectPacer):
            raise GuardConfigError("pacer", f"must be a ReconnectPacer, got {type(pacer).__name__}")
        if events is not None and not callable(getattr(events, "emit", None)):
            raise GuardConfigError("events", "must have an emit(event) method")
        self._pacer = pacer if pacer is not None else ReconnectPacer()
        self._events = events
        self.dc_id = dc_id
        self.account = account
        self._max_reconnect = (None if max_reconnect_seconds is None
                               else float(max_reconnect_seconds))
        self._send_queue = GuardedPacker(self._state, loggers=self._loggers)

        self.transport_errors: Counter[int] = Counter()
        """Transport errors seen, by negative code (``{-429: 2, -404: 1}``)."""
        self.connection_losses = 0
        """Connections lost without a transport error code (reset, EOF, bad data)."""
        self.reconnect_attempts = 0
        """Connection attempts made by the reconnect loop."""
        self.reconnects = 0
        """Reconnects that the server answered on (the outage ended)."""

        self._last_code: int | None = None  # negative code of the last transport error
        self._given_up = False  # pending calls failed; new calls fail fast until reconnected
        self._terminal: GuardError | None = None  # why we disconnected for good, if we did
        self._opened_at: float | None = None  # pacer clock: when the current connection opened
        self._down_since: float | None = None  # pacer clock: first failure of this outage
        self._outage_attempts = 0  # reconnect attempts in this outage
        self._awaiting_confirm = False  # reconnected; waiting for the server's first message
        # liveness (liveness.py): a watchdog per connection replaces one that went silent
        self._liveness = liveness_policy(config)
        self._watchdog: LivenessWatchdog | None = None
        self.liveness_replacements = 0
        """Connections replaced because they went silent or their replies were ignored."""
        self.liveness_replaced_at: float | None = None
        """``time.monotonic()`` of the last such replacement (``None``: none yet)."""
        self._watched_disconnected: asyncio.Future[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._callback_task: asyncio.Task[Any] | None = None
        self.connecting = False
        """``True`` while the client's ``connect()`` has not completed (set by the guard): a
        reconnect then does not run Telethon's auto-reconnect callback (``get_me``), since
        connect() re-sends its init and logs in itself, and a failed connect must leave no
        request of its own behind."""
        # The paced reconnect loop (our own: Telethon's ``_reconnect_task`` only exists from
        # 1.42 on and is only written by the ``_start_reconnect`` this class overrides).
        self._reconnect_loop: asyncio.Task[Any] | None = None

    @classmethod
    def for_client(
        cls,
        client: Any,
        *,
        pacer: ReconnectPacer | None = None,
        events: Any = None,
        dc_id: int | None = None,
        account: str | None = None,
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

    @property
    def pacer(self) -> ReconnectPacer:
        """The :class:`ReconnectPacer` of this sender (settable, e.g. a scaled one in tests)."""
        return self._pacer

    @pacer.setter
    def pacer(self, pacer: ReconnectPacer) -> None:
        if not isinstance(pacer, ReconnectPacer):
            raise GuardConfigError("pacer", f"must be a ReconnectPacer, got {type(pacer).__name__}")
        self._pacer = pacer

    @property
    def is_reconnecting(self) -> bool:
        """``True`` while a reconnect loop runs."""
        task = self._reconnect_loop
        return task is not None and not task.done()

    @property
    def given_up(self) -> bool:
        """``True`` when reconnecting took over ``max_reconnect_seconds``: calls fail fast."""
        return self._given_up

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
        try:
            return await super().connect(connection)
        except GuardError:
            raise
        except ConnectionError as e:
            raise GuardConnectionError(str(e)) from e

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

    async def _stop_background(self) -> None:
        """Cancel and wait for the reconnect loop and Telethon's auto-reconnect callback."""
        current = asyncio.current_task()
        tasks = [t for t in (self._reconnect_loop, self._callback_task)
                 if t is not None and t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # their CancelledError stays in the tasks (retrieved)

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
        retrieving done-callback (one loop callback less per request). Same errors."""
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

    # ---- helpers ----------------------------------------------------------------------------

    def _emit(self, event: GuardEvent) -> None:
        if self._events is not None:
            try:
                self._events.emit(event)
            except Exception:  # an EventBus never raises; a foreign emitter might
                self._log.exception("event emitter failed on %s", type(event).__name__)

    def _log_task_failure(self, task: asyncio.Task[Any]) -> None:
        """Done-callback: retrieve a task's exception and log it (never "never retrieved")."""
        if not task.cancelled() and task.exception() is not None:
            self._log.error("sender task %s failed: %r", task.get_name(), task.exception())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = helpers.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_task_failure)
        return task

    def _give_up_error(self, cause: BaseException | None) -> GuardError:
        retry_after = self._pacer.next_turn_in()
        if self._last_code == -429:
            msg = (f"transport error -429 on DC {self.dc_id}: not reconnected within "
                   f"{self._max_reconnect} s; next attempt in {retry_after:.1f} s")
            err: GuardError = TransportFloodError(-429, retry_after, msg)
        else:
            err = GuardConnectionError(
                f"connection to DC {self.dc_id} lost and not re-established within "
                f"{self._max_reconnect} s"
            )
            err.retry_after = retry_after
        if cause is not None:
            err.__cause__ = cause
        return err

    def _fail_requests(self, make_error: Callable[[], BaseException] | None) -> int:
        """Fail (or cancel, when ``make_error`` is ``None``) every pending and queued request."""
        states = list(self._pending_state.values())
        self._pending_state.clear()
        packer = self._send_queue
        if isinstance(packer, GuardedPacker):
            states.extend(requests_of(packer.drain_states()))
        n = 0
        for s in states:
            if s.future.done():
                continue
            if make_error is None:
                s.future.cancel()
            else:
                s.future.set_exception(make_error())
            n += 1
        return n

    async def _open_connection(self, give_up_at: float | None = None,
                               cause: BaseException | None = None) -> None:
        """One TCP connection attempt (the caller took a pacer turn). ``give_up_at``: the
        reconnect give-up time (pacer clock, seconds): a budget slot wait past it gives up
        (fails the pending calls) and keeps waiting for the slot."""
        conn: Any = self._connection
        # A dead Connection object may hold a stale (None, error) item in its queues; a reused
        # object would hand it to the new receive loop, which would reconnect again at once.
        reset_connection_queues(conn)
        # The process-wide budget of this DC (budget.py); its wait counts toward the give-up.
        slot = asyncio.ensure_future(take_connection_slot(conn))
        try:
            if give_up_at is not None and not slot.done():
                await asyncio.wait({slot}, timeout=max(0.0, give_up_at - self._pacer.now()))
                if not slot.done():
                    self._give_up(cause)
            await slot
        except BaseException:
            slot.cancel()
            raise
        await conn.connect(timeout=self._connect_timeout)
        # Connection.connect() created its receive task but it has not run yet (no await since):
        # wrap the codec before it reads anything.
        codec = connection_codec(conn)
        if codec is not None and not isinstance(codec, TransportErrorCodec):
            set_connection_codec(conn, TransportErrorCodec(codec))
        self._opened_at = self._pacer.now()
        self._pacer.record_success()

    async def _try_connect(self, attempt: int) -> bool:
        # Telethon's connect loop: with failures on record, take a pacer turn instead of
        # sleeping ``delay``; a clean first connect (or a DC switch) goes at once.
        if self._pacer.failures:
            await self._pacer.wait_turn()
        else:
            self._pacer.record_attempt()
        try:
            self._log.debug("Connection attempt %d...", attempt)
            await self._open_connection()
            return True
        except (OSError, asyncio.TimeoutError) as e:
            self._pacer.record_failure()
            self._log.warning("Attempt %d at connecting failed: %s: %s",
                              attempt, type(e).__name__, e)
            return False

    # ---- failure handling -------------------------------------------------------------------

    def _on_connection_failure(self, error: BaseException | None) -> None:
        """Called by the receive loop (and via ``_start_reconnect``) when the connection broke."""
        code: int | None = None
        if isinstance(error, InvalidBufferError) and error.code is not None:
            code = -abs(error.code)
        if code == -429:
            note_refused(self._connection)  # the process budget paces this DC (budget.py)
        if code is not None:
            self.transport_errors[code] += 1
            self._last_code = code
            self._emit(TransportErrorEvent(code=code, framing=framing_of(self._connection),
                                           dc_id=self.dc_id, account=self.account))
        if code == -404 or isinstance(error, AuthKeyNotFound):
            self._log.warning("DC %s does not know the auth key (transport -404): the session "
                              "must be recreated; not reconnecting", self.dc_id)
            self._end_for_good(AuthKeyInvalidError(self.dc_id, -404))
            return
        if not self._auto_reconnect:
            if code == -429:
                err: GuardError = TransportFloodError(-429, None)
            else:
                err = GuardConnectionError(f"connection to DC {self.dc_id} lost "
                                           "(auto_reconnect is off)")
            err.__cause__ = error
            self._end_for_good(err)
            return
        self._start_reconnect(error)

    def _end_for_good(self, error: GuardError) -> None:
        if self._terminal is not None or not self._user_connected:
            return
        self._terminal = error
        self._reconnecting = True  # stop the loops
        self._spawn(self._disconnect(error=error))

    def _start_reconnect(self, error: BaseException | None) -> None:
        """Start the paced reconnect loop unless one runs (never two at once)."""
        if not self._user_connected or self._terminal is not None:
            return
        if self._reconnecting or self.is_reconnecting:
            return
        if getattr(error, "code", None) is None:
            self.connection_losses += 1
            if error is not None:
                self._last_code = None
        self._reconnecting = True
        failed = self._fail_sent_unsafe(ConnectionLostMayHaveRun)
        if failed:
            self._log.warning("DC %s: connection lost; %d sent call(s) not safe to send again "
                              "failed", self.dc_id, failed)
        self._reconnect_loop = self._spawn(self._reconnect(error))

    def _fail_sent_unsafe(self, make_error: Callable[[str], BaseException]) -> int:
        """Fail, with ``make_error(method)``, each request already sent on the lost connection
        (Telethon's ``_pending_state``) that is not safe to send again; the reconnect re-sends
        the rest, and still sends what was queued but never sent. Returns how many failed."""
        failed = 0
        for s in self._pending_state.values():
            if not s.future.done() and not resend_is_safe(s.request):
                s.future.set_exception(make_error(method_name(s.request)))
                failed += 1
        return failed

    async def _close_transport(self) -> None:
        if self._connection is not None:
            await self._connection.disconnect()
        await self.cancel_loops()

    async def _reconnect(self, last_error: BaseException | None) -> None:
        """The paced reconnect loop (replaces Telethon's ``retries`` x ``delay`` loop)."""
        pacer = self._pacer
        # The connection that just failed recorded a success when it opened: if it lived for
        # ``stable_after`` s the pacer forgets older failures here, else this one adds up.
        pacer.record_failure()
        self._opened_at = None
        self._awaiting_confirm = False
        if self._down_since is None:
            self._down_since = pacer.now()
        down_since = self._down_since
        self._log.info("Closing current connection to begin a paced reconnect (%s)",
                       type(last_error).__name__ if last_error else "no error")
        await self._close_transport()
        self._state.reset()  # a new session id, as Telethon does

        while self._user_connected:
            deadline = None
            if self._max_reconnect is not None and not self._given_up:
                since = pacer.failing_since
                deadline = (since if since is not None else down_since) + self._max_reconnect
            before = pacer.now()
            if not await pacer.wait_turn(deadline=deadline):
                self._give_up(last_error)
                continue
            if not self._user_connected:
                break
            self._outage_attempts += 1
            attempts = self._outage_attempts
            self.reconnect_attempts += 1
            self._emit(ReconnectAttempt(dc_id=self.dc_id, attempt=attempts,
                                        delay=max(0.0, pacer.now() - before),
                                        account=self.account))
            try:
                await self._open_connection(deadline, last_error)
            except (OSError, asyncio.TimeoutError) as e:
                last_error = e
                pacer.record_failure()
                self._log.info("Reconnect attempt %d to DC %s failed: %s: %s",
                               attempts, self.dc_id, type(e).__name__, e)
                continue
            except Exception as e:
                last_error = e
                pacer.record_failure()
                self._log.exception("Unexpected error on reconnect attempt %d", attempts)
                continue

            self._reconnecting = False
            loop = helpers.get_running_loop()
            self._send_loop_handle = loop.create_task(self._send_loop())
            self._recv_loop_handle = loop.create_task(self._recv_loop())
            for task in (self._send_loop_handle, self._recv_loop_handle):
                task.add_done_callback(self._log_task_failure)
            # Re-send what was in flight, except requests whose callers already gave up.
            again = [s for s in self._pending_state.values() if not s.future.done()]
            self._pending_state.clear()
            self._send_queue.extend(again)
            self._given_up = False
            self._awaiting_confirm = True  # ReconnectSucceeded once the server answers on it
            # Telethon's callback (``get_me()`` to resume updates): at most one at a time, so a
            # server that keeps refusing does not pile up one request per attempt.
            cb_task = self._callback_task
            if (self._auto_reconnect_callback and not self.connecting
                    and (cb_task is None or cb_task.done())):
                self._callback_task = self._spawn(self._auto_reconnect_callback())
            return

    def _confirm_reconnect(self) -> None:
        """The server answered on the new connection: the outage is over."""
        self._awaiting_confirm = False
        self.reconnects += 1
        down = self._down_since
        self._emit(ReconnectSucceeded(
            dc_id=self.dc_id, attempts=self._outage_attempts,
            downtime=0.0 if down is None else max(0.0, self._pacer.now() - down),
            account=self.account))
        self._down_since = None
        self._outage_attempts = 0

    def _give_up(self, cause: BaseException | None) -> None:
        if self._given_up:
            return
        self._given_up = True
        n = self._fail_requests(lambda: self._give_up_error(cause))
        if self._events is None:
            self._log.warning("DC %s: no reconnect within %s s; failed %d pending call(s), new "
                              "calls fail fast until reconnected", self.dc_id,
                              self._max_reconnect, n)
        self._emit(ReconnectGaveUp(dc_id=self.dc_id, seconds=self._max_reconnect,
                                   failed_calls=n, code=self._last_code, account=self.account))

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
        watch = self._spawn(run_watchdog(
            dog, now=time.monotonic, pending=self._awaited_replies, ping=self._liveness_ping,
            replace=self._replace_silent))
        recv.add_done_callback(lambda _t: watch.cancel())

    def _note_liveness(self, accepted: bool) -> None:
        dog = self._watchdog
        if dog is not None:
            if accepted:
                dog.received(time.monotonic())
            else:
                dog.ignored()

    def _awaited_replies(self) -> list[tuple[int, bool]]:
        return [(msg_id, not s.future.done()) for msg_id, s in self._pending_state.items()]

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
            if self._awaiting_confirm:
                self._confirm_reconnect()
            try:
                await self._process_message(message)
            except Exception:
                self._log.exception("Unhandled error while processing msgs")

