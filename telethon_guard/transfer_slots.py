"""One concurrency bound for file parts per (account, method), across every sender.

Parallel download / upload code (FastTelethon-style: several exported senders, each with
several ``upload.getFile`` / ``upload.saveFilePart`` in flight) sends its whole opening burst
before the first ``FLOOD_WAIT`` (or ``FLOOD_PREMIUM_WAIT``) is known: every part already in
flight when the server's limit is crossed comes back as one more flood. The guard's ledger then
holds everyone, but the burst has been drawn. Bounding the parts in flight per (account, method)
(whatever the sender or DC: the limits are the account's) caps the floods drawn at the bound.

:class:`TransferSlots` is a pipeline layer between the flood ledger and the rate limiter: a file
transfer call (:data:`~telethon_guard.keys.TRANSFER_METHODS`) takes one of
``GuardConfig.transfer_concurrency`` slots of its (account, method) for the rest of its way
(limiter wait, retries, network attempts) and gives it back when it ends (also on error or
cancellation). A call that had to queue for its slot while a flood wait was recorded on its
scopes raises ``LedgerBlockedWhileQueued`` (the ledger above waits the block out, or raises,
and sends the call through again): never sent into a block. Other calls pass straight through
(no coroutine of this layer).

Default: 16 parts in flight, Telegram Desktop's ``kMaxFileQueries`` ("max 16 file parts
downloaded at the same time", ``Telegram/SourceFiles/storage/file_download.cpp``), the rate the
official client keeps without floods. ``None`` switches the bound off.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .call import CallInfo
from .config import GuardConfig
from .limiter import LedgerBlockedWhileQueued

Next = Callable[[CallInfo], Awaitable[Any]]

__all__ = ["TransferSlots"]


class _Ledger(Protocol):
    async def blocked_for(self, call: CallInfo) -> Any: ...


class _Slots:
    """Free slots of one (account, method) and the calls queued for one, oldest first."""

    __slots__ = ("free", "waiters")

    def __init__(self, free: int) -> None:
        self.free = free
        self.waiters: deque[asyncio.Future[None]] = deque()


class TransferSlots:
    """Pipeline layer bounding file-transfer calls in flight per (account, method).

    ``config.transfer_concurrency``: slots per (account, method) (``None``: unbounded, the
    layer passes every call through). ``ledger``: the flood ledger, asked after a queued wait
    whether the call's scopes were blocked meanwhile. Local state (one process).
    """

    __slots__ = ("_ledger", "_slots", "limit")

    def __init__(self, config: GuardConfig, ledger: _Ledger) -> None:
        self.limit: int | None = config.transfer_concurrency
        self._ledger = ledger
        self._slots: dict[tuple[str, str], _Slots] = {}

    def in_flight(self, account: str, method: str) -> int:
        """Slots of (``account``, ``method``) taken now."""
        s = self._slots.get((account, method))
        return 0 if s is None or self.limit is None else self.limit - s.free

    def enter(self, call: CallInfo, call_next: Next) -> Awaitable[Any] | None:
        """``None`` when ``call`` needs no slot (not a transfer; :meth:`Pipeline.invoke
        <telethon_guard.pipeline.Pipeline.invoke>`'s fast path goes on); else :meth:`handle`."""
        if not call.transfer or self.limit is None:
            return None
        return self._bounded(call, call_next)

    def handle(self, call: CallInfo, call_next: Next) -> Awaitable[Any]:
        """Run ``call_next`` holding a slot when ``call`` is a file transfer; else pass it on."""
        if not call.transfer or self.limit is None:
            return call_next(call)
        return self._bounded(call, call_next)

    async def _bounded(self, call: CallInfo, call_next: Next) -> Any:
        key = (call.account, call.method)
        slots = self._slots.get(key)
        if slots is None:
            assert self.limit is not None
            slots = self._slots[key] = _Slots(self.limit)
        if slots.free > 0 and not slots.waiters:
            slots.free -= 1
        else:
            await self._queue(slots, key)
            try:
                if await self._ledger.blocked_for(call) is not None:
                    raise LedgerBlockedWhileQueued(call.method)
            except BaseException:
                self._release(key)
                raise
        try:
            return await call_next(call)
        finally:
            self._release(key)

    async def _queue(self, slots: _Slots, key: tuple[str, str]) -> None:
        """Wait until a slot is handed over (FIFO)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slots.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(key)  # handed a slot just as we were cancelled: pass it on
            else:
                try:
                    slots.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def _release(self, key: tuple[str, str]) -> None:
        """Hand the slot to the oldest waiter, or free it (forgetting an idle key)."""
        slots = self._slots[key]
        while slots.waiters:
            fut = slots.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        slots.free += 1
        if slots.free == self.limit:
            del self._slots[key]
