"""Exception retrieval for what Telethon runs in the background of a guarded client: the
update and keepalive tasks, update-handler tasks, the sender's ``disconnected`` future, and
this client's reference on the loop's exception handler (:mod:`telethon_guard.loop`)."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from . import _telethon as tl
from ._link import ClientLink, account_key
from .events import StrayFutureRetrieved
from .loop import (
    RetrievingTaskSet,
    StraySink,
    acquire_exception_handler,
    release_exception_handler,
    retrieve_exception,
    retrieving,
)

if TYPE_CHECKING:
    from ._client_guard import ClientGuard

__all__ = ["acquire_loop", "hook_tasks", "release_loop", "retrieve_handler_tasks", "stray_sink"]


def stray_sink(client: Any, link: ClientLink) -> StraySink:
    """This client's sink for stray exceptions: emits ``StrayFutureRetrieved`` on the guard's
    event bus (one object per client, so it can be unregistered)."""
    sink = link.sink
    if sink is None:
        guard: ClientGuard = link.guard

        def emit(source: str, exc: BaseException | None) -> None:
            if guard.events is not None:
                guard.events.emit(StrayFutureRetrieved(
                    source=source, error=type(exc).__name__ if exc is not None else "unknown",
                    account=account_key(client, guard)))

        sink = link.sink = emit
    return sink


def retrieve_handler_tasks(client: Any, link: ClientLink) -> None:
    """Telethon's set of update-handler tasks becomes a :class:`RetrievingTaskSet` reporting
    to this client's sink (tasks already in it get their retrieving callback too)."""
    tasks = tl.event_handler_tasks(client)
    if not isinstance(tasks, RetrievingTaskSet):
        retrieving_tasks = RetrievingTaskSet()
        for t in tasks:
            retrieving_tasks.add(t)
        tasks = retrieving_tasks
        tl.set_event_handler_tasks(client, tasks)
    tasks.sink = stray_sink(client, link)


def hook_tasks(client: Any, link: ClientLink) -> None:
    """Retrieve exceptions of the tasks and futures Telethon creates on connect (and report
    them as ``StrayFutureRetrieved`` events)."""
    sink = stray_sink(client, link)
    for name, task in tl.background_tasks(client).items():
        if isinstance(task, asyncio.Future):
            # the name interned: one string per task name, not one per client
            task.add_done_callback(retrieving(sys.intern(f"{name}_handle"), sink))
    try:  # the future itself, not a shield of it (a shield costs ~0.9 KiB until disconnect)
        disconnected = tl.SenderSurface.disconnected_future(tl.main_sender(client))
    except Exception:
        disconnected = None
    if isinstance(disconnected, asyncio.Future):
        disconnected.add_done_callback(retrieve_exception)
    retrieve_handler_tasks(client, link)


def acquire_loop(client: Any, link: ClientLink, loop: asyncio.AbstractEventLoop) -> None:
    """Take this client's reference on ``loop``'s exception handler (once per connect)."""
    if link.loop is None:
        acquire_exception_handler(loop, stray_sink(client, link))
        link.loop = loop


def release_loop(client: Any, link: ClientLink) -> None:
    """Drop this client's reference on the loop's exception handler (after disconnect)."""
    loop = link.loop
    if loop is not None:
        link.loop = None
        release_exception_handler(loop, link.sink)
