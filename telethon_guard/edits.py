"""Coalesced message edits (opt-in): a progress message edited faster than its chat allows.

A status / progress message edited on every step of a job floods the chat (bots: about one
message per second per chat, core.telegram.org/bots/faq; edits count too, and community
reports show edit floods growing to hours when edits keep coming during the wait). Only the
latest text matters, so :class:`EditCoalescer` sends at most one edit per chat every
``interval`` seconds, each carrying the latest text of its message:

* ``await coalescer.edit(entity, message_id, text)`` returns once an edit carrying this text,
  or a later one for the same message, was applied (the latest text wins: the texts in
  between are never sent);
* edits of several messages of one chat go out one after the other, ``interval`` apart (the
  chat's limit, not each message's);
* ``MESSAGE_NOT_MODIFIED`` (the message already shows that text, e.g. after an edit that was
  re-sent) counts as success;
* any other error of an edit (``MESSAGE_ID_INVALID`` for a deleted message, a
  ``FloodWaitBlocked`` that does not fit...) is raised once, to every caller whose text that
  edit carried: the pending edits merged into it are not sent one by one to fail again. A
  400 error (the message is gone, the text is invalid) also fails the texts of that message
  that came in while the edit was in flight, without sending them.

Times are seconds on the ``clock`` (monotonic). One coalescer per client; state is local.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from telethon import errors as tl_errors
from telethon import utils

from .clock import Clock, MonotonicClock

__all__ = ["DEFAULT_EDIT_INTERVAL", "EditCoalescer"]

log = logging.getLogger("telethon_guard")

DEFAULT_EDIT_INTERVAL = 1.0
"""Seconds between two edits into one chat: Telegram's bots FAQ, "avoid sending more than one
message per second" in a single chat (edits are limited too; no number is published)."""

EditFn = Callable[..., Awaitable[Any]]


class _Pending:
    """The latest text of one message and every caller waiting for it."""

    __slots__ = ("kwargs", "text", "waiters")

    def __init__(self, text: str, kwargs: dict[str, Any]) -> None:
        self.text = text
        self.kwargs = kwargs
        self.waiters: list[asyncio.Future[Any]] = []


class _Chat:
    __slots__ = ("entity", "last", "pending", "worker")

    def __init__(self, entity: Any) -> None:
        self.entity = entity
        self.pending: OrderedDict[int, _Pending] = OrderedDict()
        self.last: float | None = None
        self.worker: asyncio.Task[None] | None = None


class EditCoalescer:
    """Coalesces edits of messages (see the module docstring).

    ``client``: a Telethon client (guarded or not); edits go through
    ``client.edit_message(entity, message_id, text, **kwargs)`` unless ``edit`` is given (an
    ``async`` callable with that signature). ``interval``: seconds between two edits into one
    chat (> 0, :data:`DEFAULT_EDIT_INTERVAL`). ``clock``: monotonic clock (tests pass a fake).

    Raises ``ValueError`` for an ``interval`` that is not a finite number > 0, and
    ``TypeError`` without ``client`` and ``edit``.
    """

    def __init__(self, client: Any = None, *, interval: float = DEFAULT_EDIT_INTERVAL,
                 clock: Clock | None = None, edit: EditFn | None = None) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not (
                0 < interval < float("inf")):
            raise ValueError(f"interval must be a finite number of seconds > 0, got {interval!r}")
        if edit is None:
            if client is None:
                raise TypeError("EditCoalescer needs a client or an edit function")
            edit = client.edit_message
        self._edit: EditFn = edit
        self.interval = float(interval)
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._chats: dict[Hashable, _Chat] = {}
        self._closed = False
        self.sent = 0
        """Edits sent (one per merged group of texts)."""

    @staticmethod
    def _chat_key(entity: Any) -> Hashable:
        try:
            return utils.get_peer_id(entity)
        except (TypeError, ValueError):
            return entity if isinstance(entity, Hashable) else id(entity)

    async def edit(self, entity: Any, message_id: int, text: str, **kwargs: Any) -> Any:
        """Make message ``message_id`` of ``entity`` show ``text`` (a later call's text wins).

        Returns what the edit that carried the latest text returned (``None`` after
        ``MESSAGE_NOT_MODIFIED``). Raises that edit's error (once for all the texts merged
        into it), and ``RuntimeError`` after :meth:`aclose` (nothing is sent)."""
        if self._closed:
            raise RuntimeError("EditCoalescer.edit() after aclose(): this coalescer is closed "
                               "and sends nothing more; make a new one")
        key = self._chat_key(entity)
        chat = self._chats.get(key)
        if chat is None:
            chat = self._chats[key] = _Chat(entity)
        p = chat.pending.get(message_id)
        if p is None:
            p = chat.pending[message_id] = _Pending(text, kwargs)
        else:
            p.text, p.kwargs = text, kwargs  # the latest text wins
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        p.waiters.append(fut)
        if chat.worker is None:
            chat.worker = asyncio.get_running_loop().create_task(self._drain(key, chat))
        return await fut

    async def _drain(self, key: Hashable, chat: _Chat) -> None:
        """Send the chat's pending edits, oldest message first, ``interval`` apart."""
        try:
            while True:
                if chat.last is not None:
                    # Hold the chat until its interval has passed, pending edits or not: an
                    # edit arriving meanwhile waits here instead of going out at once.
                    due = chat.last + self.interval - self._clock.now()
                    if due > 0:
                        await self._clock.sleep(due)
                if not chat.pending:
                    return
                message_id, p = chat.pending.popitem(last=False)
                chat.last = self._clock.now()
                await self._send(chat, message_id, p)
        finally:
            chat.worker = None
            if not chat.pending and self._chats.get(key) is chat:
                del self._chats[key]

    async def _send(self, chat: _Chat, message_id: int, p: _Pending) -> None:
        self.sent += 1
        try:
            result = await self._edit(chat.entity, message_id, p.text, **p.kwargs)
        except tl_errors.MessageNotModifiedError:
            result = None  # it already shows this text
        except asyncio.CancelledError:
            for w in p.waiters:
                w.cancel()
            raise
        except Exception as e:
            waiters = p.waiters
            later = chat.pending.get(message_id)
            if later is not None and isinstance(e, tl_errors.BadRequestError):
                # A 400 (MESSAGE_ID_INVALID: deleted...) holds for the texts that came in
                # meanwhile too: they get this error, not one more failed edit each.
                del chat.pending[message_id]
                waiters = waiters + later.waiters
            log.info("edit of message %s failed for %d merged text(s): %r", message_id,
                     len(waiters), e)
            for w in waiters:
                if not w.done():
                    w.set_exception(e)
            return
        for w in p.waiters:
            if not w.done():
                w.set_result(result)

    async def aclose(self) -> None:
        """Cancel the pending edits (their callers get ``CancelledError``); a later
        :meth:`edit` raises ``RuntimeError``. Idempotent."""
        self._closed = True
        for chat in list(self._chats.values()):
            for p in chat.pending.values():
                for w in p.waiters:
                    w.cancel()
            chat.pending.clear()
            if chat.worker is not None:
                chat.worker.cancel()
                await asyncio.gather(chat.worker, return_exceptions=True)
        self._chats.clear()
