"""The guarded sender's send queue: Telethon's ``MessagePacker`` with a retrieving
done-callback on every queued request's future, and requests whose callers gave up before
they were sent dropped instead of sent."""

from __future__ import annotations

import asyncio
from typing import Any

from telethon.extensions.messagepacker import MessagePacker
from telethon.network.requeststate import RequestState

from ._telethon import queued_states

__all__ = ["GuardedPacker", "requests_of", "retrieve"]


def retrieve(fut: asyncio.Future[Any]) -> None:
    """Done-callback: mark the future's exception as retrieved (no "never retrieved" log)."""
    if not fut.cancelled():
        fut.exception()


class GuardedPacker(MessagePacker):
    """Telethon's send queue; every queued state's future gets a retrieving done-callback
    (except while :attr:`awaited` is set: the one request being queued by
    :meth:`GuardedMTProtoSender.send_awaited`, whose caller retrieves it), and requests
    cancelled before they were sent are dropped."""

    awaited = False

    def append(self, state: RequestState) -> None:
        if self.awaited:
            self.awaited = False
        else:
            state.future.add_done_callback(retrieve)
        super().append(state)

    def append_awaited(self, state: RequestState) -> None:
        """Queue ``state`` without the retrieving done-callback: its caller awaits the future
        and retrieves or cancels it (:meth:`GuardedMTProtoSender.send_awaited`)."""
        super().append(state)

    def extend(self, states: Any) -> None:
        states = list(states)
        for s in states:
            s.future.add_done_callback(retrieve)
        super().extend(states)

    def get(self) -> Any:
        # A request whose caller gave up (cancelled, timed out) before it was ever sent is not
        # sent at all; Telethon would still send it, e.g. after a reconnect. Not a coroutine
        # itself: the send loop awaits Telethon's get() directly (the same steps in the same
        # order, without a coroutine frame of ours held while the queue is empty: ~0.3 KiB
        # per connected client).
        queued = queued_states(self)
        if any(s.future.cancelled() for s in queued):
            kept = [s for s in queued if not s.future.cancelled()]
            queued.clear()
            queued.extend(kept)
        return super().get()

    def drain_states(self) -> list[RequestState]:
        """Remove and return every state still waiting to be sent."""
        queued = queued_states(self)
        states = list(queued)
        queued.clear()
        return states


def requests_of(states: Any) -> list[RequestState]:
    out: list[RequestState] = []
    for s in states:
        if isinstance(s, list):
            out.extend(s)
        else:
            out.append(s)
    return out
