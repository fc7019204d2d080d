"""Telegram / Telethon errors -> what the guard does about them (design-notes section 3).

=======================================================  ============  ======  ===========
Error                                                    Action        Scope   Breaker
=======================================================  ============  ======  ===========
``FLOOD_WAIT_X`` (``FloodWaitError``)                    FLOOD         method  no
``SLOWMODE_WAIT_X`` (``SlowModeWaitError``)              FLOOD         peer    no
``FLOOD_PREMIUM_WAIT_X`` (``FloodPremiumWaitError``)     FLOOD         dc      no
``FLOOD_TEST_PHONE_WAIT_X``, ``2FA_CONFIRM_WAIT_X``,     RAISE         --      no
``TAKEOUT_INIT_DELAY_X`` (this request only)
``PEER_FLOOD`` (400) and any other 4xx / 303 migrate     RAISE         --      no
500 / ``RPC_CALL_FAIL`` / ``RPC_MCGET_FAIL`` /           TRANSIENT     --      yes
``WORKER_BUSY_TOO_LONG_RETRY`` / -503 ``Timeout``
``RANDOM_ID_DUPLICATE`` (a ``ServerError`` subclass)     DELIVERED     --      no
``ConnectionError``, ``OSError``, ``InvalidBufferError``  DISCONNECT    --      yes
429, ``CancelledError`` from Telethon's disconnect,
``GuardConnectionError`` raised by ``send()``
``InvalidBufferError`` 404, ``AuthKeyInvalidError``,     RAISE         --      no
``TransportFloodError`` (transport recovery already
waited: breaker yes), ``ConnectionRetriesExhausted``
(breaker yes), other guard errors
attempt timeout (``TimeoutError``)                       TRANSIENT     --      yes
anything else                                            RAISE         --      no
=======================================================  ============  ======  ===========

Flood waits are clamped like TDLib's ``NetQueryDelayer``: to [1 s, 14 days]; ``FLOOD_WAIT_0``
(and any wait under 1 s) becomes 1 s, so "FLOOD_WAIT_0 four times then OK" means at least 1 s
between the five sends.
"""

from __future__ import annotations

import asyncio
import enum
from typing import NamedTuple

from telethon import errors as tl_errors

from . import errors as g_errors
from .config import MAX_FLOOD_WAIT_CLAMP

MIN_FLOOD_WAIT = 1.0
"""Lower clamp of a server flood wait in seconds (TDLib NetQueryDelayer; FLOOD_WAIT_0 -> 1 s)."""


class Action(enum.Enum):
    """What to do with an error."""

    TRANSIENT = "transient"  # retry with backoff inside the deadline
    DISCONNECT = "disconnect"  # connection dropped: retry like TRANSIENT
    FLOOD = "flood"  # record in the flood ledger; wait-and-retry if it fits
    DELIVERED = "delivered"  # RANDOM_ID_DUPLICATE: already executed, never re-send
    RAISE = "raise"  # give the error to the caller at once


class FloodScope(enum.Enum):
    """What a flood wait blocks (design-notes section 3)."""

    METHOD = "method"  # FLOOD_WAIT: account + method
    PEER = "peer"  # SLOWMODE_WAIT: account + chat
    TRANSFERS = "transfers"  # FLOOD_PREMIUM_WAIT: account + DC + file transfers
    CHAT = "chat"  # FLOOD_WAIT on a write to one chat, scoped by flood_scope.py


class Verdict(NamedTuple):
    """Classification of one error. ``seconds``: the clamped flood wait (FLOOD only);
    ``breaker_failure``: counts toward opening the circuit breaker."""

    action: Action
    breaker_failure: bool = False
    scope: FloodScope | None = None
    seconds: float = 0.0


def clamp_flood_seconds(seconds: float | int | None) -> float:
    """Clamp a server wait to [1 s, 14 days] (TDLib NetQueryDelayer)."""
    s = float(seconds or 0)
    if s < MIN_FLOOD_WAIT:
        return MIN_FLOOD_WAIT
    if s > MAX_FLOOD_WAIT_CLAMP:
        return MAX_FLOOD_WAIT_CLAMP
    return s


_TRANSIENT_V = Verdict(Action.TRANSIENT, True)
_DISCONNECT_V = Verdict(Action.DISCONNECT, True)
_RAISE_V = Verdict(Action.RAISE, False)
_DELIVERED_V = Verdict(Action.DELIVERED, False)
_RAISE_BREAKER_V = Verdict(Action.RAISE, True)

_PER_REQUEST_FLOOD: tuple[type[BaseException], ...] = tuple(
    c
    for c in (
        getattr(tl_errors, "FloodTestPhoneWaitError", None),
        getattr(tl_errors, "TwoFaConfirmWaitError", None),
        getattr(tl_errors, "TakeoutInitDelayError", None),
    )
    if c is not None
)


def classify(exc: BaseException, *, disconnect_cancel: bool = False) -> Verdict:
    """Classify ``exc`` raised by one network attempt.

    ``disconnect_cancel``: ``exc`` is a ``CancelledError`` that came from Telethon cancelling the
    request future on disconnect while the calling task itself was not cancelled (the caller
    decides with ``Task.cancelling()``); it is treated as a disconnect. Any other
    ``CancelledError`` is RAISE (it must propagate unchanged).
    """
    if isinstance(exc, tl_errors.RPCError):
        # Guard-raised flood errors (FloodWaitBlocked & co.) are already decided.
        if isinstance(exc, g_errors.GuardError):
            return _DELIVERED_V if isinstance(exc, g_errors.AlreadyDelivered) else _RAISE_V
        if isinstance(exc, tl_errors.FloodWaitError):
            return Verdict(Action.FLOOD, False, FloodScope.METHOD,
                           clamp_flood_seconds(exc.seconds))
        if isinstance(exc, tl_errors.SlowModeWaitError):
            return Verdict(Action.FLOOD, False, FloodScope.PEER,
                           clamp_flood_seconds(exc.seconds))
        if isinstance(exc, tl_errors.FloodPremiumWaitError):
            return Verdict(Action.FLOOD, False, FloodScope.TRANSFERS,
                           clamp_flood_seconds(exc.seconds))
        if _PER_REQUEST_FLOOD and isinstance(exc, _PER_REQUEST_FLOOD):
            return _RAISE_V
        if isinstance(exc, tl_errors.RandomIdDuplicateError):
            return _DELIVERED_V
        if isinstance(exc, (tl_errors.ServerError, tl_errors.TimedOutError)):
            return _TRANSIENT_V
        code = exc.code
        if isinstance(code, int) and abs(code) in (500, 503):
            return _TRANSIENT_V
        return _RAISE_V
    if isinstance(exc, g_errors.GuardError):
        # Decided by the layer that raised them (transport recovery, a nested call); never
        # retried here. Transport trouble still counts toward the breaker.
        if isinstance(exc, g_errors.ConnectionRetriesExhausted):
            return _RAISE_BREAKER_V  # connect() already made its connection_retries attempts
        if isinstance(exc, g_errors.GuardConnectionError):
            # The client turns a request future cancelled by Telethon's disconnect into this.
            return _DISCONNECT_V
        if isinstance(exc, (g_errors.TransportFloodError, g_errors.AttemptTimeoutError)):
            return _RAISE_BREAKER_V
        return _RAISE_V
    if isinstance(exc, tl_errors.InvalidBufferError):
        if exc.code == 404:
            return _RAISE_V
        return _DISCONNECT_V
    if isinstance(exc, asyncio.CancelledError):
        return _DISCONNECT_V if disconnect_cancel else _RAISE_V
    if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError)):
        return _DISCONNECT_V
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return _TRANSIENT_V
    if isinstance(exc, OSError):
        return _DISCONNECT_V
    return _RAISE_V


__all__ = [
    "MIN_FLOOD_WAIT",
    "Action",
    "FloodScope",
    "Verdict",
    "clamp_flood_seconds",
    "classify",
]
