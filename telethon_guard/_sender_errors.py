"""The guarded sender's typed errors: why a connection ended, as the guard's error types
(``AuthKeyInvalidError`` for -404, ``TransportFloodError`` for -429,
``GuardConnectionError`` otherwise), one exception object per future."""

from __future__ import annotations

from telethon.errors import AuthKeyNotFound, InvalidBufferError

from .errors import AuthKeyInvalidError, GuardConnectionError, GuardError, TransportFloodError

__all__ = ["copy_error", "typed_error"]


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
    else:
        new = GuardConnectionError(str(error))
        new.retry_after = error.retry_after
    new.__cause__ = error.__cause__
    return new
