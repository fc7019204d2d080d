"""The update path: Telethon's update loop never waits inside the guard.

Telethon (1.x) has ONE update-loop task (``client._updates_handle``) that dispatches every
chat's updates and fetches update gaps with ``updates.getDifference`` (the account: private
chats, basic groups) and ``updates.getChannelDifference`` (one channel), through
``client.__call__`` and so through the guard. Anything slept there (a FLOOD_WAIT that fits
``max_flood_wait``, a retry backoff, a limiter slot) stalls the updates of every chat.

Such a call (those two methods, made by the update-loop task: :func:`update_loop_client`, set
as ``CallInfo.update_loop`` by the client) runs through the pipeline's update-path chain
(:class:`UpdatePath` → deadline → breaker → flood ledger → one network attempt: no rate
limiter, no retry) with ``max_flood_wait = 0``, so it never waits:

* it is bounded: ``DIFFERENCE_TIMEOUT`` (2 s) doubling per consecutive failure of that entry
  (a lost reply no longer holds every chat's updates);
* it fails fast with an error Telethon's loop tolerates (``client/updates.py``: a
  ``ServerError`` / ``TimedOutError`` / ``FloodWaitError`` / other ``RPCError`` ends that
  difference early without advancing its pts). FLOOD_WAITs (``FloodWaitBlocked``) and
  Telegram's own RPC errors reach the loop unchanged; every other error (the guard's
  ``ConnectionError`` / ``TimeoutError`` types, which Telethon would answer with a 5 s sleep
  of the whole loop, ``CircuitOpenError``, a transport -429 or -404, anything unexpected, which
  Telethon would treat as fatal and disconnect) becomes :class:`DifferenceDeferred` (a
  ``telethon.errors.ServerError``) with the original as ``__cause__``;
* and that entry's difference is begun again by a timer (:class:`DifferenceRecovery`) when
  the wait ends: after a FLOOD_WAIT at most ``seconds left + RECOVERY_MARGIN`` later; after
  any other failure after ``max(retry_after, RECOVERY_BASE * 2**(n-1))`` capped at
  ``RECOVERY_CAP`` seconds (``n``: consecutive failures of that entry; a success resets it).
  Without it Telethon would not retry before the next update of that chat reveals the gap
  again, or before its no-updates deadline (15 min, ``_updates/messagebox.py``).

Not deferred (Telethon's own handling is right): ``UnauthorizedError`` / ``AuthKeyError``
(logged out: the loop disconnects), ``ChannelPrivateError`` / ``ChannelInvalidError`` (banned:
the channel is forgotten), ``TypeNotFoundError`` and ``sqlite3.OperationalError`` (a misused
session: the loop disconnects), ``CancelledError``.

Exactly once: an ended difference does not advance the pts, so the deferred difference asks
from the same pts and every missed message is returned once; updates pushed meanwhile are
dropped by Telethon while the difference is pending (they are in the difference).

After a reconnect, :func:`resume_updates` (the guarded main sender's auto-reconnect callback)
makes the request that tells Telegram the new connection wants updates until it succeeds, then
begins the account's difference (what was pushed to the dead connection).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import TelegramClient
from telethon import errors as tl_errors
from telethon.tl.functions.updates import GetChannelDifferenceRequest

from . import _telethon as tl
from .call import CallInfo
from .clock import Clock
from .errors import ClientDisconnectedError, GuardError

log = logging.getLogger("telethon_guard.update_path")

Next = Callable[[CallInfo], Awaitable[Any]]

DIFFERENCE_METHODS = frozenset({"updates.getDifference", "updates.getChannelDifference"})
"""The update loop's gap requests (TL method names)."""

RECOVERY_MARGIN = 0.5
"""Seconds after a FLOOD_WAIT's end at which the deferred difference is begun again (the
flood ledger's block has then surely ended; Telegram rounds its seconds up)."""

RECOVERY_BASE = 1.0
"""Seconds before the first re-try of a difference that failed with anything but a flood."""

RECOVERY_CAP = 30.0
"""Longest delay, in seconds, between two re-tries of a failing difference (non-flood)."""

DIFFERENCE_TIMEOUT = 2.0
"""Seconds a difference request of the update loop may take before it is deferred (a lost
reply would otherwise hold every chat's updates until the call's deadline; plain Telethon waits
for it forever). Doubles per consecutive failure of that entry, up to ``RECOVERY_CAP``, so a
slow but working server is still answered."""

_TELETHON_HANDLES = (
    tl_errors.UnauthorizedError, tl_errors.AuthKeyError,
    tl_errors.ChannelPrivateError, tl_errors.ChannelInvalidError,
    tl_errors.TypeNotFoundError, sqlite3.OperationalError,
)


class DifferenceDeferred(GuardError, tl_errors.ServerError):
    """A ``getDifference`` / ``getChannelDifference`` of Telethon's update loop failed and its
    retry is scheduled (``retry_after`` seconds, monotonic). Only Telethon's update loop sees
    it: a ``ServerError``, which that loop answers by ending the difference early.
    ``__cause__`` is the original error."""

    def __init__(self, request: Any, retry_after: float, cause: BaseException) -> None:
        tl_errors.ServerError.__init__(self, request, "DIFFERENCE_DEFERRED", 500)
        self.retry_after = retry_after
        self.cause_name = type(cause).__name__

    def __str__(self) -> str:
        return (f"difference deferred {self.retry_after:.1f} s after {self.cause_name}"
                " (telethon-guard: the update loop never waits)")


def update_loop_client(client: TelegramClient, method: str) -> TelegramClient | None:
    """``client`` when this call (TL name ``method``) is a difference request made by
    ``client``'s update-loop task, else ``None``. Requests of event handlers, even when they
    run on that task (``sequential_updates=True``), are the application's."""
    if method not in DIFFERENCE_METHODS:
        return None
    task = tl.updates_task(client)
    if task is None or asyncio.current_task() is not task:
        return None
    return client


def difference_entry(request: Any) -> Any:
    """The message-box entry a difference request fetches: the channel id for
    ``getChannelDifference``, :data:`telethon_guard._telethon.ACCOUNT_ENTRY` otherwise."""
    if isinstance(request, GetChannelDifferenceRequest):
        return getattr(request.channel, "channel_id", None)
    return tl.ACCOUNT_ENTRY


def recovery_delay(exc: BaseException, failures: int) -> float | None:
    """Seconds until a difference that failed with ``exc`` is begun again; ``None`` when it
    must not be (Telethon handles it, or the client was disconnected on purpose).
    ``failures``: consecutive failures of that entry, this one included (>= 1)."""
    if isinstance(exc, (*_TELETHON_HANDLES, ClientDisconnectedError)):
        return None
    if isinstance(exc, tl_errors.FloodError):  # FLOOD_WAIT, FloodWaitBlocked, premium, ...
        left = getattr(exc, "retry_after", None)
        if left is None:
            left = float(getattr(exc, "seconds", 0) or 0)
        return max(0.0, float(left)) + RECOVERY_MARGIN
    backoff = min(RECOVERY_CAP, RECOVERY_BASE * 2.0 ** min(max(failures, 1) - 1, 32))
    hinted = getattr(exc, "retry_after", None)
    if isinstance(hinted, (int, float)) and hinted > backoff:
        return float(hinted)  # an OPEN breaker, a paced reconnect: nothing works before
    return backoff


def tolerated(exc: Exception, request: Any, delay: float | None) -> Exception:
    """The error Telethon's update loop gets for ``exc``: ``exc`` itself when the loop
    handles it as it should (Telegram's RPC errors, FLOOD_WAITs, the cases Telethon handles),
    else :class:`DifferenceDeferred` (``retry_after``: ``delay``)."""
    if isinstance(exc, tl_errors.RPCError) or isinstance(exc, _TELETHON_HANDLES):
        return exc
    return DifferenceDeferred(request, delay if delay is not None else 0.0, exc)


class DifferenceRecovery:
    """Per client: one timer per message-box entry that begins its deferred difference again
    and wakes the update loop (see the module docstring for the delays)."""

    __slots__ = ("_failures", "_timers")

    def __init__(self) -> None:
        self._failures: dict[tuple[int, Any], int] = {}
        self._timers: dict[tuple[int, Any], asyncio.TimerHandle] = {}

    def failed(self, client: TelegramClient, entry: Any, exc: BaseException) -> float | None:
        """Record a failure of ``entry``'s difference and schedule its retry; return the
        delay in seconds (``None``: not retried by the guard)."""
        key = (id(client), entry)
        failures = self._failures.get(key, 0) + 1
        if len(self._failures) < 4096 or key in self._failures:  # bounded
            self._failures[key] = failures
        delay = recovery_delay(exc, failures)
        if delay is None or entry is None:
            return delay
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._due, client, entry, key)
        log.info("update path: difference of %s deferred %.1f s after %s",
                 "the account" if entry is tl.ACCOUNT_ENTRY else "a channel", delay,
                 type(exc).__name__)
        return delay

    def timeout(self, client: TelegramClient, entry: Any) -> float:
        """Seconds the next difference of ``entry`` may take: ``DIFFERENCE_TIMEOUT`` doubled
        per consecutive failure, at most ``RECOVERY_CAP``."""
        failures = self._failures.get((id(client), entry), 0)
        return min(RECOVERY_CAP, DIFFERENCE_TIMEOUT * 2.0 ** min(failures, 32))

    def succeeded(self, client: TelegramClient, entry: Any) -> None:
        """``entry``'s difference was answered: forget its failures (its timer, if any, finds
        nothing left to do)."""
        self._failures.pop((id(client), entry), None)

    def pending(self) -> int:
        """Deferred differences whose timer has not fired yet."""
        return len(self._timers)

    def _due(self, client: TelegramClient, entry: Any, key: tuple[int, Any]) -> None:
        self._timers.pop(key, None)
        if not client.is_connected():
            return
        if tl.begin_difference(client, entry, "telethon-guard: a deferred difference is due"):
            tl.wake_update_loop(client)


async def resume_updates(client: TelegramClient,
                         wait_available: Callable[[float], Awaitable[bool]]) -> None:
    """The guard's auto-reconnect callback (Telethon's is ``_handle_auto_reconnect``): after
    a reconnect, one high-level request (``get_me()``) tells Telegram the new connection wants
    updates again, and the account's difference is begun to catch up on what was pushed to
    the dead connection.

    Telethon makes that request once and gives up on any error, so after a -429 storm (the
    breaker still OPEN, an attempt timeout on the fresh connection) no update was pushed again
    until the application made a request of its own. Here it is retried while the client is
    connected: ``wait_available(s)`` (the guard's, returns ``True`` once calls can go out)
    then ``get_me()``, waiting ``RECOVERY_BASE`` doubling to ``RECOVERY_CAP`` seconds between
    tries. Stops quietly when the client is disconnected or logged out; never raises."""
    delay = RECOVERY_BASE
    while client.is_connected():
        try:
            if await wait_available(delay):
                await client.get_me()
                break
        except asyncio.CancelledError:
            raise
        except _TELETHON_HANDLES:
            return  # logged out / banned: Telethon's own paths deal with it
        except Exception as exc:  # the guard's fail-fast errors, a flood: try again later
            log.info("update path: resuming updates after a reconnect failed (%s); retry in "
                     "%.1f s", type(exc).__name__, delay)
            await asyncio.sleep(delay)
        delay = min(RECOVERY_CAP, delay * 2)
    if client.is_connected() and tl.begin_difference(
            client, tl.ACCOUNT_ENTRY, "telethon-guard: catching up after a reconnect"):
        tl.wake_update_loop(client)


class UpdatePath:
    """Pipeline layer, outermost of the update-path chain (calls with ``call.update_loop``
    set): no waiting (``max_flood_wait = 0``), errors made tolerable for Telethon's update
    loop, the failed entry's difference re-begun when its wait ends, and the call bounded by
    :meth:`DifferenceRecovery.timeout` (on ``clock``, the guard clock)."""

    __slots__ = ("_clock", "recovery")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.recovery = DifferenceRecovery()

    async def handle(self, call: CallInfo, call_next: Next) -> Any:
        """Run the rest of the chain once; raise :func:`tolerated` errors only."""
        client = call.update_loop
        call.max_flood_wait = 0.0
        entry = difference_entry(call.request)
        if client is not None:
            limit = self._clock.now() + self.recovery.timeout(client, entry)
            if call.deadline_at is None or limit < call.deadline_at:
                call.deadline_at = limit
        try:
            result = await call_next(call)
        except Exception as exc:
            delay = self.recovery.failed(client, entry, exc) if client is not None else None
            err = tolerated(exc, call.request, delay)
            if err is exc:
                raise
            raise err from exc
        if client is not None:
            self.recovery.succeeded(client, entry)
        return result


__all__ = [
    "DIFFERENCE_METHODS",
    "DIFFERENCE_TIMEOUT",
    "RECOVERY_BASE",
    "RECOVERY_CAP",
    "RECOVERY_MARGIN",
    "DifferenceDeferred",
    "DifferenceRecovery",
    "UpdatePath",
    "difference_entry",
    "recovery_delay",
    "resume_updates",
    "tolerated",
    "update_loop_client",
]
