"""ONE network attempt of a guarded client: a sender's ``send`` and the await of its
future, with Telethon's cancellations and a client disconnected on purpose told apart."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from telethon.tl.tlobject import TLRequest

from . import _tl
from ._link import offline
from .errors import ClientDisconnectedError, GuardConnectionError, GuardError
from .loop import retrieve_exception

__all__ = ["attempt_failed", "attempt_once", "await_request", "send_of"]

T = TypeVar("T")

_AWAITS_INLINE = sys.version_info >= (3, 11)


async def await_request(fut: asyncio.Future[T]) -> T:
    """Await a future returned by ``MTProtoSender.send``.

    The caller's own cancellation propagates unchanged (and cancels ``fut``, as awaiting it
    directly would). A future cancelled *by Telethon* (its ``disconnect()`` cancels every
    in-flight request, also during a DC switch) becomes
    :class:`~telethon_guard.errors.GuardConnectionError`, since the caller's task was not
    cancelled (:func:`attempt_once` makes it ``ClientDisconnectedError`` when the client was
    disconnected on purpose).

    Python 3.11+: ``fut`` is awaited directly and a ``CancelledError`` is told apart with
    ``Task.cancelling()`` (the caller's task was cancelled: propagate). Python 3.10 waits with
    ``asyncio.wait`` (no ``cancelling()``) and retrieves ``fut``'s exception in a callback.
    """
    if sys.version_info >= (3, 11):
        try:
            return await fut
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                fut.cancel()
                raise
            if not fut.cancelled():
                raise  # not Telethon's cancel of the request: propagate unchanged
        raise GuardConnectionError("the request was cancelled by a disconnect of the client")
    fut.add_done_callback(retrieve_exception)
    if not fut.done():
        try:
            await asyncio.wait((fut,))
        except asyncio.CancelledError:
            fut.cancel()
            raise
    if fut.cancelled():
        raise GuardConnectionError("the request was cancelled by a disconnect of the client")
    return fut.result()


async def attempt_once(
    client: Any,
    send: Callable[..., Any],
    request: TLRequest,
    ordered: bool = False,
) -> Any:
    """ONE network attempt: ``send(request)`` (a sender's ``send``) and await its future.

    Connection errors while the client is disconnected on purpose become
    :class:`~telethon_guard.errors.ClientDisconnectedError` (final: never retried, not a
    breaker failure); otherwise they reach the pipeline, which retries them.
    """
    if not _AWAITS_INLINE:
        try:
            return await await_request(send(request, ordered=ordered))
        except ConnectionError as e:
            _disconnected(client, request, e)
            raise
    fut = None
    try:
        fut = send(request, ordered=ordered)
        return await fut  # await_request's path, inline (one frame less)
    except BaseException as exc:
        attempt_failed(client, request, fut, exc)


def attempt_failed(client: Any, request: TLRequest, fut: asyncio.Future[Any] | None,
                   exc: BaseException) -> NoReturn:
    """Raise what :func:`attempt_once` raises once ``send`` raised ``exc`` (``fut`` ``None``)
    or the await of its future ``fut`` did (Python 3.11+): a ``CancelledError`` of Telethon's
    own cancel of the request (the caller's task not cancelled) becomes
    :class:`~telethon_guard.errors.GuardConnectionError`, a connection error while the client
    is disconnected on purpose :class:`~telethon_guard.errors.ClientDisconnectedError`;
    anything else is raised unchanged. The straight lane (:mod:`telethon_guard.lane`) ends its
    attempt's errors here too."""
    try:
        if (sys.version_info >= (3, 11) and fut is not None
                and isinstance(exc, asyncio.CancelledError)):
            if fut.done() and not fut.cancelled():
                # Cancelled after the answer came (e.g. the attempt timer in the same loop
                # turn): retrieve its exception (send_awaited added no callback for it).
                fut.exception()
            task = asyncio.current_task()
            if task is None or task.cancelling():
                fut.cancel()
                raise exc
            if not fut.cancelled():
                raise exc
            raise GuardConnectionError(
                "the request was cancelled by a disconnect of the client") from None
        raise exc
    except ConnectionError as e:
        _disconnected(client, request, e)
        raise


def _disconnected(client: Any, request: TLRequest, e: ConnectionError) -> None:
    if offline(client) and (
        not isinstance(e, GuardError) or isinstance(e, GuardConnectionError)
    ):
        raise ClientDisconnectedError(
            f"{_tl.method_name(request)}: the client is disconnected "
            "(client.disconnect() was called, or connect() was not)") from e


def send_of(sender: Any) -> Callable[..., Any]:
    """The send function :func:`attempt_once` uses: the guarded sender's ``send_awaited`` on
    Python 3.11+ (attempt_once awaits the future and retrieves or cancels it, so the sender
    adds no retrieving callback), else ``send``."""
    if _AWAITS_INLINE:
        awaited = getattr(sender, "send_awaited", None)
        if awaited is not None:
            return awaited
    return sender.send
