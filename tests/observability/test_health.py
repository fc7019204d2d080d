"""Availability and the fallback helper: fallback values come at once, never after a timeout.

Pure behaviour with fake calls first, then a real guarded client where the guard's knowledge
(breaker OPEN, a FLOOD_WAIT longer than the budget) must make the fallback immediate.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from telethon import errors as tl_errors
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import (
    CircuitOpenError,
    DeadlineExceeded,
    FloodWaitBlocked,
    GuardConnectionError,
    TransportFloodError,
)
from telethon_guard.health import (
    current_deadline,
    deadline_scope,
    fallback,
    wait_available,
    with_fallback,
)
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import ErrorOnCalls

BOUND = 20.0


def dialogs_request() -> Any:
    return functions.messages.GetDialogsRequest(
        offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(), limit=10, hash=0)


@pytest.mark.parametrize("error", [
    CircuitOpenError("acct:1/dc:2", 30.0),
    FloodWaitBlocked(None, 300.0, method="m", scope="s", from_server=True),
    DeadlineExceeded("m", 2.0),
    TransportFloodError(-429, 5.0),
    GuardConnectionError("down"),
])
async def test_fallback_errors_give_the_fallback(error: Exception) -> None:
    reasons: list[BaseException | None] = []

    async def call() -> str:
        raise error

    got = await with_fallback(call, "cached", timeout=1.0, on_fallback=reasons.append)
    assert got == "cached" and reasons == [error]


async def test_other_errors_propagate_and_live_values_pass() -> None:
    async def bad() -> str:
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        await with_fallback(bad, "cached", timeout=1.0)

    async def ok() -> str:
        return "live"

    loads: list[int] = []
    assert await with_fallback(ok, lambda: loads.append(1), timeout=1.0) == "live"
    assert loads == []  # the fallback callable runs only when needed


async def test_a_hanging_call_is_bounded_by_the_timeout() -> None:
    async def hang() -> str:
        await asyncio.sleep(30)
        return "never"

    async def load() -> str:
        return "cached"

    t = time.monotonic()
    got = await asyncio.wait_for(with_fallback(hang, load, timeout=0.1), BOUND)
    assert got == "cached" and time.monotonic() - t < 2.0


async def test_decorator_and_bad_timeouts() -> None:
    calls: list[int] = []

    @fallback(default=["cached"], timeout=0.5)
    async def fetch(n: int) -> list[str]:
        calls.append(n)
        raise CircuitOpenError("k", 1.0)

    assert await fetch(3) == ["cached"] and calls == [3]
    for bad in (0, -1, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError):
            await with_fallback(fetch, None, timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            fallback(None, timeout=bad)  # type: ignore[arg-type]


def test_deadline_scopes_only_shorten() -> None:
    assert current_deadline() is None
    with deadline_scope(10.0, now=100.0) as outer:
        assert outer == 110.0
        with deadline_scope(5.0, now=100.0) as inner:
            assert inner == 105.0 == current_deadline()
        with deadline_scope(50.0, now=100.0) as longer:
            assert longer == 110.0
    assert current_deadline() is None


async def test_open_breaker_gives_the_fallback_without_calling() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 500, "RPC_CALL_FAIL", times=2))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5, retry_max_attempts=1,
                               breaker_failure_threshold=2, breaker_open_seconds=30)
        async with client:
            for _ in range(2):
                with pytest.raises(tl_errors.RpcCallFailError):
                    await asyncio.wait_for(client(dialogs_request()), BOUND)
            called: list[int] = []

            async def live() -> str:
                called.append(1)
                await client.get_me()
                return "live"

            t = time.perf_counter()
            got = await with_fallback(live, "cached", timeout=2.0, guard=client)
            elapsed = time.perf_counter() - t
            assert got == "cached" and called == [] and elapsed < 0.05
            # the same through client.guard and a callable resolving the client later
            assert await with_fallback(live, "c2", timeout=2.0, guard=client.guard) == "c2"
            assert await with_fallback(live, "c3", timeout=2.0, guard=lambda: client) == "c3"
            assert called == []
            # waiting for availability is bounded (the breaker stays OPEN 30 s)
            t = time.monotonic()
            assert await client.guard.wait_available(0.2) is False
            assert 0.15 <= time.monotonic() - t < 2.0
            assert await wait_available(client.guard, 0.05) is False
            # without the guard hint, the guard itself fails fast (CircuitOpenError)
            t = time.perf_counter()
            assert await with_fallback(live, "c4", timeout=2.0) == "c4"
            assert called == [1] and time.perf_counter() - t < 0.05


async def test_flood_wait_longer_than_the_budget_falls_back_at_once() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_2", times=1))
    async with TelegramTestServer(faults=plan) as server:
        # the config would wait 2 s (max_flood_wait 60 s, deadline 60 s): the handler's budget
        # of 1 s must turn it into an immediate fallback
        client = server.client(cls=GuardedTelegramClient, deadline=60, max_flood_wait=60)
        async with client:
            async def live() -> str:
                await client(dialogs_request())
                return "live"

            t = time.monotonic()
            got = await asyncio.wait_for(
                with_fallback(live, "cached", timeout=1.0, guard=client), BOUND)
            first = time.monotonic() - t
            assert got == "cached" and first < 0.5, first
            t = time.monotonic()
            got = await with_fallback(live, "cached", timeout=1.0, guard=client)
            assert got == "cached" and time.monotonic() - t < 0.05  # the ledger answers
            assert server.log.count("messages.getDialogs") == 1
            # a budget that fits the rest of the wait waits it out and gets the live answer
            got = await asyncio.wait_for(
                with_fallback(live, "cached", timeout=10.0, guard=client), BOUND)
            assert got == "live" and server.log.count("messages.getDialogs") == 2


async def test_with_fallback_refuses_a_call_that_is_not_callable() -> None:
    # The usual slip: the coroutine itself instead of a function returning it. A clear
    # TypeError at once (the coroutine closed, no "never awaited" warning), not a raw
    # "'coroutine' object is not callable" from inside.
    async def get_me() -> str:
        return "me"

    coro = get_me()
    with pytest.raises(TypeError, match=r"lambda: client.get_me\(\)"):
        await with_fallback(coro, "cached", timeout=1.0)  # type: ignore[arg-type]
    assert coro.cr_frame is None  # closed
    with pytest.raises(TypeError, match="got int 42"):
        await with_fallback(42, 5, timeout=1.0)  # type: ignore[arg-type]
