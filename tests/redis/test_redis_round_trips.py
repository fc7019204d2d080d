"""Round trips to Redis per guarded call, counted on the redis client (every command its
connections write from the call's own task), through a real Telethon client and the test
server: an admitted call costs ONE round trip (breaker, flood ledger and limiter decided by one
script, no success write while the breaker is CLOSED without failures); a call that must wait
for its limiter slot, a failure and the first success after it cost more, and only they do.

Commands the storage writes from other tasks are not the measured call's: the move-up rounds
(one task per process, shared by every waiter), a stats-view refresh that ``stats()`` starts in
the background, give-backs released in the background, requests Telethon's own tasks make
through the guard (its update loop's ``getDifference``). They are counted apart
(``take.background``); under load their timing is the machine's, and counting them as the
call's made this test flaky."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import telethon.errors as te
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.storage.redis import RedisStorage
from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

ME = functions.users.GetUsersRequest([types.InputUserSelf()])
STATE = functions.updates.GetStateRequest()


SETUP = {b"HELLO", b"CLIENT", b"AUTH", b"SELECT", b"READONLY"}
"""Commands redis-py sends once when a socket connects (not counted)."""


def count_round_trips(storage: RedisStorage, by_task: bool = False) -> Callable[[], int]:
    """Counts the round trips of guarded calls: every command written on a socket of this
    storage (``send_packed_command`` of each connection of its client's pool and of the
    admission's own connections, ``redis_wire``, the ones made later too; a new socket's
    handshake, ``SETUP``, is not counted); the move-up rounds (one per account per
    ``MOVE_UP_INTERVAL`` while the process has waiters, shared by all of them: see
    ``limiter_moveup``) are not per call and are counted apart, in ``take.move_ups``.
    ``by_task``: only commands written by a task in ``take.tasks`` (:func:`measured` adds the
    measured calls' tasks) count; any other task's go to ``take.background`` (see the module
    docstring)."""
    pool = storage.client.connection_pool
    seen: list[Any] = []
    tasks: set[Any] = set()
    move_up_sha = storage._move_up.sha

    def instrument(conn: Any) -> Any:
        real = conn.send_packed_command

        async def counted(command: Any, *args: Any, **kwargs: Any) -> Any:
            packed = command if isinstance(command, bytes) else b"".join(command)
            name = packed.split(b"\r\n", 3)[2].upper()
            if name in SETUP:
                pass  # a new socket's handshake, not a decision
            elif move_up_sha in packed:
                take.move_ups += 1  # type: ignore[attr-defined]
            elif not by_task or asyncio.current_task() in tasks:
                seen.append(packed)
            else:
                take.background.append(name)  # type: ignore[attr-defined]
            return await real(command, *args, **kwargs)

        conn.send_packed_command = counted
        return conn

    wire = storage._wire
    for conn in [*pool._available_connections, *pool._in_use_connections,
                 *(wire._conns if wire is not None else ())]:
        instrument(conn)
    make = pool.make_connection
    pool.make_connection = lambda: instrument(make())  # the pool's and the wire's new ones

    def take() -> int:
        n = len(seen)
        seen.clear()
        return n

    take.move_ups = 0  # type: ignore[attr-defined]
    take.background = []  # type: ignore[attr-defined]
    take.tasks = tasks  # type: ignore[attr-defined]

    return take


async def measured(tasks: set[Any], aw: Any, timeout: float = 5.0) -> Any:
    """Await the guarded call ``aw`` in its own task, counted as measured (``tasks``)."""
    task = asyncio.ensure_future(aw)
    tasks.add(task)
    try:
        return await asyncio.wait_for(task, timeout)
    finally:
        tasks.discard(task)


async def test_one_round_trip_per_admitted_call(redis_url: str, prefix: str) -> None:
    storage = RedisStorage(url=redis_url, prefix=prefix, storage_fallback="fail", timeout=2.0)
    async with TelegramTestServer() as server:
        client = server.client(
            cls=GuardedTelegramClient, storage=storage, account="acct-rt",
            rate_limits=((1000, 1.0),), method_limits={"updates.getState": ((2, 1.0),)},
            breaker_failure_threshold=3, retry_max_attempts=1, deadline=10.0,
            adaptive_pacing=False)
        async with client:
            await asyncio.wait_for(client(ME), 5)  # scripts loaded, connection pooled
            take = count_round_trips(storage, by_task=True)
            tasks = take.tasks  # type: ignore[attr-defined]
            for _ in range(20):
                await measured(tasks, client(ME))
            assert take() == 20
            # Background work on the same storage is not a call's: a stats-view refresh,
            # started by stats() while a call runs, is counted apart.
            storage.view_refresher.at = float("-inf")  # stale: stats() starts a refresh
            call = asyncio.ensure_future(measured(tasks, client(ME)))
            client.guard.stats()
            refresh = storage.view_refresher.poke()  # the refresh stats() started
            assert refresh is not None
            await asyncio.wait_for(asyncio.gather(call, refresh), 5)
            assert take() == 1 and take.background, take.background  # type: ignore

            # must wait for its slot (2 per second on updates.getState): one more round trip
            # after the wait (was a FLOOD_WAIT recorded meanwhile?)
            await asyncio.sleep(1.2)  # the window forgets Telethon's own getState at connect
            for _ in range(2):
                await measured(tasks, client(STATE))  # 1st, 2nd in the window: at once
                assert take() == 1
            t0 = asyncio.get_running_loop().time()
            await measured(tasks, client(STATE))  # 3rd: waits
            waited = asyncio.get_running_loop().time() - t0
            assert take() == 2
            # while it waited: one move-up round per 0.1 s (they would serve any number of
            # waiters of this process)
            assert take.move_ups <= waited / 0.1 + 2, (take.move_ups, waited)  # type: ignore

            # a failure changes the breaker's state: admission + the failure write
            server.faults.add(ErrorOnCalls("users.getUsers", 500, "INTERNAL", times=1))
            with pytest.raises(te.ServerError):
                await measured(tasks, client(ME))
            assert take() == 2
            await measured(tasks, client(ME))  # success after a failure: reset written
            assert take() == 2
            await measured(tasks, client(ME))  # CLOSED without failures again
            assert take() == 1
        await storage.aclose()
