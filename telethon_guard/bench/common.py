"""Helpers shared by the workloads: bounded connect / disconnect, client construction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, TypeVar

from telethon import TelegramClient, functions, types
from telethon.tl.tlobject import TLRequest

from telethon_guard.bench.serverproc import ServerProcess

T = TypeVar("T")

CONNECT_TIMEOUT = 20.0
DISCONNECT_TIMEOUT = 10.0


def guarded_class() -> type[TelegramClient]:
    from telethon_guard.client import GuardedTelegramClient

    return GuardedTelegramClient


async def connect(client: Any, timeout: float = CONNECT_TIMEOUT) -> None:
    """``client.connect()`` bounded by ``timeout`` seconds (``asyncio.TimeoutError``)."""
    await asyncio.wait_for(client.connect(), timeout)


async def disconnect(client: Any, timeout: float = DISCONNECT_TIMEOUT) -> None:
    """``client.disconnect()`` bounded by ``timeout`` seconds; errors are swallowed (the
    workload is over, a dead client may fail to disconnect cleanly)."""
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(client.disconnect(), timeout)


async def disconnect_all(clients: list[Any], timeout: float = DISCONNECT_TIMEOUT) -> None:
    await asyncio.gather(*(disconnect(c, timeout) for c in clients))


async def make_clients(
    srv: ServerProcess, cls: type[TelegramClient], n: int, **kwargs: Any
) -> tuple[list[Any], list[int]]:
    """``n`` not-yet-connected clients of ``cls``, each on its own new account."""
    sessions = await srv.sessions(n)
    return [srv.client(cls, s, **kwargs) for s, _ in sessions], [a for _, a in sessions]


ClientSpec = tuple[str, type[TelegramClient], dict[str, Any]]
"""A named client of one workload: (name, client class, extra constructor keywords)."""


async def make_named_clients(
    srv: ServerProcess, specs: Sequence[ClientSpec]
) -> tuple[dict[str, Any], dict[str, int]]:
    """One not-yet-connected client per spec, each on its own new account: the clients and
    their account ids, both keyed by the spec's name (in the specs' order)."""
    clients: dict[str, Any] = {}
    accounts: dict[str, int] = {}
    for name, cls, kwargs in specs:
        (client,), (account,) = await make_clients(srv, cls, 1, **kwargs)
        clients[name], accounts[name] = client, account
    return clients, accounts


@contextlib.asynccontextmanager
async def connected_clients(
    srv: ServerProcess, specs: Sequence[ClientSpec]
) -> AsyncIterator[tuple[dict[str, Any], dict[str, int]]]:
    """:func:`make_named_clients`, all connected (each bounded by ``CONNECT_TIMEOUT``): yields
    ``(clients, accounts)`` keyed by name; every client is disconnected on exit, also when
    connecting failed (the workloads' shared setup)."""
    clients, accounts = await make_named_clients(srv, specs)
    try:
        await asyncio.gather(*(connect(c) for c in clients.values()))
        yield clients, accounts
    finally:
        await disconnect_all(list(clients.values()))


def history_request() -> TLRequest:
    """``messages.getHistory`` of the account's own chat, one message: the call every test
    account can make (the workloads' and the demo's usual request)."""
    return functions.messages.GetHistoryRequest(
        peer=types.InputPeerSelf(), offset_id=0, offset_date=None, add_offset=0, limit=1,
        max_id=0, min_id=0, hash=0,
    )


async def cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait for them to end (their results and errors are dropped)."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def bounded(aw: Awaitable[T], seconds: float) -> T:
    """Await ``aw`` for at most ``seconds``; on expiry raise :class:`BenchTimeout`.

    Not ``asyncio.wait_for``'s ``TimeoutError``: the guard's own
    :class:`~telethon_guard.errors.DeadlineExceeded` is a ``TimeoutError`` too, and the bench
    must tell "the guard gave up at its deadline" from "the bench's time box cut the call".
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait((task,), timeout=seconds)
    except BaseException:  # cancelled (Ctrl-C): the call goes too, its outcome retrieved
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    if not done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise BenchTimeout(seconds)
    return task.result()


class BenchTimeout(Exception):
    """A call outlived the bench's time box (``seconds``)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer in {seconds:g} s")
        self.seconds = seconds


def error_name(exc: BaseException) -> str:
    """Short name of an error for tables: ``FloodWaitError``, ``ConnectionError``...; a
    :class:`BenchTimeout` reads "no answer in N s"."""
    if isinstance(exc, BenchTimeout):
        return str(exc)
    return type(exc).__name__
