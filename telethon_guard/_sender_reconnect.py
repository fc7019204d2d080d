"""The guarded sender's reconnect path: what happens when a connection breaks.

:class:`ReconnectingSender` is the half of
:class:`~telethon_guard.sender.GuardedMTProtoSender` that recovers connections; the sender
itself keeps sending, receiving, liveness and the user's connect / disconnect. Its one job:

* classify a broken connection (transport -429 / -404, lost) and count it
  (:meth:`ReconnectingSender._on_connection_failure`); -404 or ``auto_reconnect=False`` end the
  connection for good with a typed error;
* fail the calls already sent that are not safe to send again
  (:func:`~telethon_guard.liveness.resend_is_safe`, :class:`ConnectionLostMayHaveRun`);
* run ONE paced reconnect loop: a :class:`~telethon_guard.reconnect.ReconnectPacer` turn, then
  a slot of the process connection budget (:mod:`telethon_guard.budget`), then the TCP
  connection; re-send what is still awaited; Telethon's auto-reconnect callback at most once
  at a time;
* give up on the pending calls after ``max_reconnect_seconds`` (typed errors, new calls fail
  fast) while attempts go on, and report the outage's end when the server answers.

All times are seconds on the pacer's clock (monotonic by default). Telethon's private sender
state is only reached through :class:`~telethon_guard._telethon.SenderSurface`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from telethon import helpers
from telethon.errors import AuthKeyNotFound, InvalidBufferError
from telethon.tl.functions import PingRequest

from ._send_queue import GuardedPacker, requests_of
from ._sender_errors import ConnectionLostMayHaveRun
from ._telethon import (
    SenderSurface,
    connection_codec,
    reset_connection_queues,
    set_connection_codec,
)
from ._tl import method_name
from ._transport_codec import TransportErrorCodec, framing_of
from .budget import note_connected, note_refused, take_connection_slot
from .errors import (
    AuthKeyInvalidError,
    ConnectionRetriesExhausted,
    GuardConfigError,
    GuardConnectionError,
    GuardError,
    TransportFloodError,
)
from .events import (
    GuardEvent,
    ReconnectAttempt,
    ReconnectGaveUp,
    ReconnectSucceeded,
    TransportErrorEvent,
)
from .liveness import resend_is_safe
from .reconnect import ReconnectPacer

__all__ = ["ReconnectingSender", "await_slot"]


async def await_slot(
    slot: asyncio.Future[float],
    pacer: ReconnectPacer,
    turn: float | None,
    give_up_at: float | None,
    give_up: Callable[[], None],
) -> None:
    """Wait for ``slot`` (a connection slot of the process budget, :mod:`telethon_guard.budget`)
    for the attempt whose pacer turn was recorded at ``turn``, then tell the pacer the attempt
    starts now (:meth:`~telethon_guard.reconnect.ReconnectPacer.attempt_started`): its windows
    count connections, not the turns that preceded a budget wait.

    ``give_up_at``: pacer clock time (seconds) after which ``give_up()`` is called once (the
    pending calls fail) while the wait for the slot goes on; ``None``: never. Cancellation
    cancels the slot's wait (the budget gives the slot back) and propagates, as does any error
    of the slot.
    """
    try:
        if give_up_at is not None and not slot.done():
            await asyncio.wait({slot}, timeout=max(0.0, give_up_at - pacer.now()))
            if not slot.done():
                give_up()
        await slot
    except BaseException:
        slot.cancel()
        raise
    if turn is not None:
        pacer.attempt_started(turn)


class ReconnectingSender(SenderSurface):
    """Telethon's ``MTProtoSender`` with the guard's reconnect path (see the module docstring).

    Not used on its own: :class:`~telethon_guard.sender.GuardedMTProtoSender` builds on it and
    calls :meth:`_init_reconnect` from its constructor.
    """

    # The guard's own attributes in slots: Telethon's ~25 stay in the instance dict, which
    # then keeps its compact shared-key form (51 keys in the dict made it a 1.5 KiB table).
    __slots__ = ("_account", "_awaiting_confirm", "_callback_task", "_connect_losses",
                 "_down_since", "_events", "_given_up", "_last_code", "_live_since",
                 "_max_reconnect", "_opened_at", "_outage_attempts", "_pacer",
                 "_reconnect_loop", "_resent", "_tasks", "_terminal", "_tries", "_unanswered",
                 "connecting", "connection_losses", "dc_id", "reconnect_attempts", "reconnects",
                 "transport_errors")

    def _init_reconnect(
        self,
        *,
        pacer: ReconnectPacer | None,
        events: Any,
        dc_id: int | None,
        account: str | Callable[[], str | None] | None,
        max_reconnect_seconds: float | None,
    ) -> None:
        """Validate and set up the reconnect state (called once, from the constructor).

        :raises GuardConfigError: on a bad ``max_reconnect_seconds``, ``pacer`` or ``events``.
        """
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
        self._account = account
        self._max_reconnect = (None if max_reconnect_seconds is None
                               else float(max_reconnect_seconds))

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
        self._live_since: float | None = None  # time.monotonic() of the same (live_age)
        self._down_since: float | None = None  # pacer clock: first failure of this outage
        self._outage_attempts = 0  # reconnect attempts in this outage
        self._awaiting_confirm = False  # reconnected; waiting for the server's first message
        self._unanswered = False  # a new connection on which nothing was received yet
        # id(request) -> request: sent on a lost connection and re-sent (may_have_run)
        self._resent: weakref.WeakValueDictionary[int, Any] | None = None
        self._tasks: set[asyncio.Task[Any]] | None = None  # made on the first _spawn
        self._callback_task: asyncio.Task[Any] | None = None
        self._connect_losses = 0  # connections lost or failed during this connect()
        # failed attempts of Telethon's connect loop in this connect(), and the last error
        self._tries: tuple[int, BaseException | None] = (0, None)
        self.connecting = False
        """``True`` while the client's ``connect()`` has not completed (set by the guard): a
        reconnect then does not run Telethon's auto-reconnect callback (``get_me``), since
        connect() re-sends its init and logs in itself, and a failed connect must leave no
        request of its own behind."""
        # The paced reconnect loop (our own: Telethon's ``_reconnect_task`` only exists from
        # 1.42 on and is only written by the ``_start_reconnect`` this class overrides).
        self._reconnect_loop: asyncio.Task[Any] | None = None


    # ---- reconnect state ------------------------------------------------------------------

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
    def account(self) -> str | None:
        """The account key the connection events carry: the string given, or what the callable
        given returns now (a guarded client passes its current key: ``key:<auth key id>``
        before the user id is known, ``user:<id>`` after; read when an event is built, never on
        a call's path). ``None`` when neither is given or the callable raised."""
        account = self._account
        if account is None or isinstance(account, str):
            return account
        try:
            return account()
        except Exception:
            return None

    @account.setter
    def account(self, account: str | Callable[[], str | None] | None) -> None:
        self._account = account

    @property
    def is_reconnecting(self) -> bool:
        """``True`` while a reconnect loop runs."""
        task = self._reconnect_loop
        return task is not None and not task.done()

    def may_have_run(self, request: Any) -> bool:
        """``True`` when ``request`` was sent on a connection that was lost before its answer
        came (a reset, a close, a liveness replacement) and is re-sent (or was) because that
        is safe (:func:`~telethon_guard.liveness.resend_is_safe`): the server may have run it
        already, so whatever the re-send's answer (e.g. a FLOOD_WAIT), it must not be sent
        as a new request elsewhere (:class:`~telethon_guard.pool_workers.WorkerRouter`)."""
        resent = self._resent
        return resent is not None and resent.get(id(request)) is request

    def live_age(self) -> float | None:
        """Seconds (``time.monotonic()``) since the current connection opened, i.e. since
        when a request queued now or earlier has been on a live connection at the latest;
        ``None`` while there is no live connection to send on because a paced reconnect runs
        (its pacer turn, its budget slot, the TCP connect; requests queued meanwhile, and
        those in flight on the broken connection that are safe to send again, wait to be
        sent on the next one); ``math.inf`` when disconnected, given up (the pending calls
        failed) or not connected yet.

        The attempt timer (:mod:`telethon_guard.attempt`, the straight lane) reads it:
        ``attempt_timeout`` counts from the send on a live connection, so a request waiting
        for a reconnect does not time out against the circuit breaker."""
        if not self._user_connected or self._given_up or self._terminal is not None:
            return math.inf
        if self._reconnecting or self.is_reconnecting:
            return None
        since = self._live_since
        return math.inf if since is None else max(0.0, time.monotonic() - since)

    @property
    def given_up(self) -> bool:
        """``True`` when reconnecting took over ``max_reconnect_seconds``: calls fail fast."""
        return self._given_up

    async def _stop_background(self) -> None:
        """Cancel and wait for the reconnect loop and Telethon's auto-reconnect callback."""
        current = asyncio.current_task()
        tasks = [t for t in (self._reconnect_loop, self._callback_task)
                 if t is not None and t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # their CancelledError stays in the tasks (retrieved)

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
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = set()
        tasks.add(task)
        task.add_done_callback(tasks.discard)
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
                               cause: BaseException | None = None,
                               turn: float | None = None) -> None:
        """One TCP connection attempt (the caller took a pacer turn, recorded at ``turn``).
        ``give_up_at``: the reconnect give-up time (pacer clock, seconds): a budget slot wait
        past it gives up (fails the pending calls) and keeps waiting for the slot."""
        conn: Any = self._connection
        # A dead Connection object may hold a stale (None, error) item in its queues; a reused
        # object would hand it to the new receive loop, which would reconnect again at once.
        reset_connection_queues(conn)
        # The process-wide budget of this DC (budget.py); its wait counts toward the give-up.
        await await_slot(asyncio.ensure_future(take_connection_slot(conn)), self._pacer, turn,
                         give_up_at, lambda: self._give_up(cause))
        await conn.connect(timeout=self._connect_timeout)
        # Connection.connect() created its receive task but it has not run yet (no await since):
        # wrap the codec before it reads anything.
        codec = connection_codec(conn)
        if codec is not None and not isinstance(codec, TransportErrorCodec):
            set_connection_codec(conn, TransportErrorCodec(codec))
        self._opened_at = self._pacer.now()
        self._live_since = time.monotonic()
        self._pacer.record_success()
        self._unanswered = True

    async def _try_connect(self, attempt: int) -> bool:
        # Telethon's connect loop: with failures on record, take a pacer turn instead of
        # sleeping ``delay``; a clean first connect (or a DC switch) goes at once.
        turn = (await self._pacer.take_turn() if self._pacer.failures
                else self._pacer.record_attempt())
        try:
            self._log.debug("Connection attempt %d...", attempt)
            await self._open_connection(turn=turn)
            return True
        except (OSError, asyncio.TimeoutError) as e:
            self._tries = (self._tries[0] + 1, e)
            if self.connecting:
                self._connect_losses += 1  # Telethon's loop ends at connection_retries itself
            self._log.warning("Attempt %d at connecting failed: %s: %s",
                              attempt, type(e).__name__, e)
            if isinstance(e, ConnectionRefusedError):
                # Nothing listens there: a definite answer at once, not Telegram shedding
                # load (-429) nor a silent connection. Retried after Telethon's retry_delay,
                # as plain Telethon does, not after the pacer's doubling backoff (1+2+4+8+16 s
                # for the default 5 retries: 29 s instead of 5 s); none after the last one.
                retries = self._retries
                if retries is None or retries < 0 or attempt <= retries:
                    await asyncio.sleep(self._delay)
            else:
                self._pacer.record_failure()
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
        if self._connect_failed(error):
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

    def _connect_failed(self, error: BaseException | None) -> bool:
        """While the client's ``connect()`` runs, count a connection lost or failed; ``True``
        when that used up Telethon's ``connection_retries`` (``connection_retries + 1``
        connections, as Telethon's own connect loop makes): the connection then ends for
        good with :class:`ConnectionRetriesExhausted`, which ``connect()`` raises."""
        if not self.connecting:
            return False
        self._connect_losses += 1
        retries = self._retries
        if retries is None or retries < 0 or self._connect_losses <= retries:
            return False
        code = f" (last: transport error {self._last_code})" if self._last_code else ""
        err = ConnectionRetriesExhausted(
            f"no connection to DC {self.dc_id} within connection_retries={retries}: "
            f"{self._connect_losses} connection(s) lost or refused before connect() "
            f"completed{code}")
        err.__cause__ = error
        self._end_for_good(err)
        return True

    def _fail_sent_unsafe(self, make_error: Callable[[str], BaseException]) -> int:
        """Fail, with ``make_error(method)``, each request already sent on the lost connection
        (Telethon's ``_pending_state``) that is not safe to send again; the reconnect re-sends
        the rest, and still sends what was queued but never sent. Returns how many failed."""
        failed = 0
        for s in self._pending_state.values():
            if s.future.done():
                continue
            if not resend_is_safe(s.request):
                s.future.set_exception(make_error(method_name(s.request)))
                failed += 1
            else:  # re-sent: it may have run (may_have_run)
                resent = self._resent
                if resent is None:
                    resent = self._resent = weakref.WeakValueDictionary()
                try:
                    resent[id(s.request)] = s.request
                except TypeError:  # not weak-referenceable: not tracked
                    pass
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
            turn = await pacer.take_turn(deadline=deadline)
            if turn is None:
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
                await self._open_connection(deadline, last_error, turn)
            except (OSError, asyncio.TimeoutError) as e:
                last_error = e
                pacer.record_failure()
                self._log.info("Reconnect attempt %d to DC %s failed: %s: %s",
                               attempts, self.dc_id, type(e).__name__, e)
                if self._connect_failed(e):
                    return
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
            if not again:
                # Nothing to re-send: a ping, so the server answers on the new connection and
                # the reconnect is confirmed now (ReconnectSucceeded; an OPEN breaker of this
                # DC then goes HALF_OPEN, breaker.py) rather than when a call is let through.
                self._confirm_ping()
            # Telethon's callback (``get_me()`` to resume updates): at most one at a time, so a
            # server that keeps refusing does not pile up one request per attempt.
            cb_task = self._callback_task
            if (self._auto_reconnect_callback and not self.connecting
                    and (cb_task is None or cb_task.done())):
                self._callback_task = self._spawn(self._auto_reconnect_callback())
            return

    def _confirm_ping(self) -> None:
        """Send a ping on the new connection (its answer confirms the reconnect); a refused
        send (the connection already gone) is left to the next reconnect."""
        with contextlib.suppress(GuardError):
            self.send(PingRequest(int.from_bytes(os.urandom(8), "big", signed=True)))

    def _first_message(self) -> None:
        """The receive loop got the first message on a new connection: the DC answers again
        (the process budget lifts its storm pace, budget.py); after a reconnect, the outage
        is over."""
        self._unanswered = False
        note_connected(self._connection)
        if self._awaiting_confirm:
            self._confirm_reconnect()

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
