"""The guarded sender's typed errors: why a connection ended, as the guard's error types
(``AuthKeyInvalidError`` for -404, ``TransportFloodError`` for -429,
``GuardConnectionError`` otherwise), one exception object per future."""

from __future__ import annotations

from telethon.errors import AuthKeyNotFound, InvalidBufferError

from .errors import (
    AuthKeyInvalidError,
    ConnectionRetriesExhausted,
    GuardConnectionError,
    GuardError,
    MayHaveRunError,
    TransportFloodError,
)

__all__ = ["ConnectionLostMayHaveRun", "copy_error", "typed_error"]


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


def typed_error(error: BaseException | None, dc_id: int | None) -> GuardError:
    """The guard's typed error for why the connection ended (``None``: user disconnect)."""
    if error is None:
        return GuardConnectionError("the sender was disconnected")
    if isinstance(error, GuardError):
        return error
    if isinstance(error, AuthKeyNotFound) or (
        isinstance(error, InvalidBufferError) and error.code == 404
    ):
        typed: GuardError = AuthKeyInvalidError(dc_id, -404)
    elif isinstance(error, InvalidBufferError) and error.code == 429:
        typed = TransportFloodError(-429, None)
    else:
        typed = GuardConnectionError(str(error) or type(error).__name__)
    typed.__cause__ = error
    return typed


def copy_error(error: GuardError) -> GuardError:
    """A new instance of ``error`` (one exception object per future / raise)."""
    if isinstance(error, AuthKeyInvalidError):
        new: GuardError = AuthKeyInvalidError(error.dc_id, error.code)
    elif isinstance(error, TransportFloodError):
        new = TransportFloodError(error.code, error.retry_after, str(error))
    elif isinstance(error, ConnectionRetriesExhausted):
        new = ConnectionRetriesExhausted(str(error))
    else:
        new = GuardConnectionError(str(error))
        new.retry_after = error.retry_after
    new.__cause__ = error.__cause__
    return new
