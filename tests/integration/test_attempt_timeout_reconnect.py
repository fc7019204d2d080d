"""``attempt_timeout`` against a paced reconnect, through the full stack (``GuardedTelegramClient``
against the test server): the attempt timer counts from the send on a live connection, so calls
queued behind a reconnect (nothing written to the network) do not time out against the circuit
breaker; sends that time out for real are retried with their ``random_id`` and every message is
stored exactly once; a retry the breaker refuses raises ``CircuitOpenError`` from the last
attempt's error.

Found by a new-user trial: 60 sends through a 1.5 s transport -429 storm with
``deadline=20, attempt_timeout=2`` delivered 24 (36 callers got ``AttemptTimeoutError`` 2 s after
their call, the breaker open); 10 % resets + 5 % dropped replies delivered 34-41 of 60.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from telethon.tl import functions

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import AlreadyDelivered, AttemptTimeoutError, CircuitOpenError
from telethon_guard.events import BreakerStateChanged, GuardEvent, TransportErrorEvent
from telethon_guard.health import deadline_scope
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import DropReplies, ResetOn, Transport429Storm

BOUND = 30.0


def plan_now(plan: FaultPlan) -> float:
    assert plan.started_at is not None
    return time.monotonic() - plan.started_at


async def send_many(client: GuardedTelegramClient, n: int, spacing: float) -> dict[int, str]:
    """``n`` sends of ``m<i>`` to alice, ``spacing`` s apart; each caller's outcome ("ok" or the
    error's type name), every wait bounded."""
    out: dict[int, str] = {}

    async def one(i: int) -> None:
        await asyncio.sleep(i * spacing)
        try:
            await asyncio.wait_for(client.send_message("alice", f"m{i}"), BOUND)
            out[i] = "ok"
        except Exception as e:  # the test's assertion names it
            out[i] = type(e).__name__

    await asyncio.gather(*(one(i) for i in range(n)))
    return out


def stored(server: TelegramTestServer) -> Counter[str]:
    alice = server.world.user_id("alice")
    return Counter(m.text for m in server.world.sent_messages(peer=alice))


@pytest.mark.parametrize("path", ["lane", "pipeline"])
async def test_sends_queued_behind_a_429_storm_do_not_time_out_against_the_breaker(
        path: str) -> None:
    """A 1.5 s -429 storm, sends every 50 ms, attempt_timeout 1 s: the calls waiting for the
    paced reconnect are sent after it and answered; none times out, the breaker never opens,
    every message is stored once. Before: attempts queued for 1 s timed out, 5 of them opened
    the breaker and the retries were refused (most callers failed). ``lane``: the straight
    lane's attempt timers (FifoDeadlines); ``pipeline``: every call through the layers (a
    ``deadline_scope`` keeps calls off the lane), the Attempt's timer."""
    events: list[GuardEvent] = []
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        client: GuardedTelegramClient = server.client(
            cls=GuardedTelegramClient, deadline=20, attempt_timeout=1.0,
            on_event=[events.append])
        async with client:
            await asyncio.wait_for(client.get_input_entity("alice"), BOUND)
            plan.add(Transport429Storm(start=plan_now(plan) + 0.2, duration=1.5))
            if path == "lane":
                out = await send_many(client, 30, 0.05)
            else:
                with deadline_scope(20):
                    out = await send_many(client, 30, 0.05)
        texts = stored(server)
    assert Counter(out.values()) == {"ok": 30}, out
    assert any(isinstance(e, TransportErrorEvent) for e in events)  # the storm hit
    assert texts == {f"m{i}": 1 for i in range(30)}
    assert [e for e in events if isinstance(e, BreakerStateChanged)] == []


async def test_sends_through_resets_and_dropped_replies_are_stored_exactly_once() -> None:
    """Resets after the server stored the message and replies dropped on a live connection,
    attempt_timeout 1 s: every send is stored exactly once and every caller is told "ok" or
    ``AlreadyDelivered`` (an earlier attempt was stored; the retry kept its random_id).
    Before: calls queued behind the reconnects timed out, opened the breaker, and callers
    were told ``AttemptTimeoutError`` for messages that were stored."""
    plan = FaultPlan(
        ResetOn("messages.sendMessage", {3, 8, 14, 19}, after_execute=True),
        DropReplies("messages.sendMessage", {5, 11, 23}),
    )
    async with TelegramTestServer(faults=plan) as server:
        client: GuardedTelegramClient = server.client(
            cls=GuardedTelegramClient, deadline=20, attempt_timeout=1.0)
        async with client:
            await asyncio.wait_for(client.get_input_entity("alice"), BOUND)
            out = await send_many(client, 24, 0.05)
        texts = stored(server)
    assert texts == {f"m{i}": 1 for i in range(24)}
    assert set(out.values()) <= {"ok", "AlreadyDelivered"}, out
    assert "AlreadyDelivered" in out.values()  # a reply was lost, the re-send was de-duplicated


async def test_a_retry_refused_by_the_breaker_raises_circuit_open_from_the_timeout() -> None:
    """The breaker opens on a real timeout (the reply dropped on a live connection,
    breaker_failure_threshold=1): the caller is told ``CircuitOpenError`` (with
    ``retry_after``, ``may_have_run``) from the ``AttemptTimeoutError``, not the bare timeout;
    the message was stored once, and re-sending the same request is de-duplicated."""
    plan = FaultPlan(DropReplies("messages.sendMessage", {1}))
    async with TelegramTestServer(faults=plan) as server:
        client: GuardedTelegramClient = server.client(
            cls=GuardedTelegramClient, deadline=20, attempt_timeout=0.5,
            breaker_failure_threshold=1, breaker_open_seconds=0.5)
        async with client:
            peer = await asyncio.wait_for(client.get_input_entity("alice"), BOUND)
            request = functions.messages.SendMessageRequest(peer, "once", random_id=12345)
            err: Any = None
            try:
                await asyncio.wait_for(client(request), BOUND)
            except CircuitOpenError as e:
                err = e
            assert isinstance(err, CircuitOpenError), err
            assert isinstance(err.__cause__, AttemptTimeoutError)
            assert err.may_have_run and 0 < err.retry_after <= 0.5
            await asyncio.sleep(err.retry_after + 0.05)
            again: Any = None
            try:
                await asyncio.wait_for(client(request), BOUND)
            except AlreadyDelivered as e:
                again = e
            assert isinstance(again, AlreadyDelivered)
        texts = stored(server)
    assert texts == {"once": 1}
