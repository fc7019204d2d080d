"""Transport recovery through the full stack: ``GuardedTelegramClient`` (pipeline + guarded
sender) against the test server's -429 / -404 faults.

The client's main sender is a ``GuardedMTProtoSender``; its pacer is replaced by
``ReconnectPacer.scaled(F)`` (TDLib's windows and backoff shrunk by ``F``) so the issue's
"refused for 10 s, back within 15 s" runs as "refused for 10*F s, back within 15*F s".
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import errors, types

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import (
    AuthKeyInvalidError,
    CircuitOpenError,
    DeadlineExceeded,
    GuardError,
    TransportFloodError,
)
from telethon_guard.events import GuardEvent, ReconnectAttempt, ReconnectGaveUp
from telethon_guard.reconnect import ReconnectPacer
from telethon_guard.sender import GuardedMTProtoSender
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import AlwaysTransportError, Latency, Transport429Storm

F = 0.3
BOUND = 30.0


async def without_strays(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario``; once its frame (clients, futures) is gone, ``gc.collect()`` and fail
    on any "exception was never retrieved" that reached the loop."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    caught: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: caught.append(context))
    try:
        await scenario()
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    strays = [c for c in caught if "never retrieved" in str(c.get("message", ""))]
    assert not strays, [f"{c.get('message')}: {c.get('exception')!r}" for c in strays]


def guarded_client(server: TelegramTestServer, **kwargs: Any) -> GuardedTelegramClient:
    client: GuardedTelegramClient = server.client(cls=GuardedTelegramClient, **kwargs)
    sender = client._sender
    assert isinstance(sender, GuardedMTProtoSender)
    sender.pacer = ReconnectPacer.scaled(F)
    return client


def plan_now(plan: FaultPlan) -> float:
    assert plan.started_at is not None
    return time.monotonic() - plan.started_at


async def test_in_flight_calls_complete_after_429_and_refusals_full_stack() -> None:
    async def scenario() -> None:
        refuse = 10 * F
        plan = FaultPlan()
        async with TelegramTestServer(faults=plan) as server:
            client = guarded_client(server, deadline=BOUND)
            async with client:
                await asyncio.wait_for(client.get_me(), BOUND)
                plan.add(Latency("users.getUsers", 0.5))
                calls = [asyncio.ensure_future(client.get_me()) for _ in range(5)]
                await asyncio.sleep(0.2)
                storm = Transport429Storm(start=plan_now(plan), duration=refuse)
                plan.add(storm)
                results = await asyncio.wait_for(
                    asyncio.gather(*calls, return_exceptions=True), BOUND)
                assert all(isinstance(r, types.User) for r in results), results
                assert storm.begin is not None
                end = storm.begin + refuse
                during = [e for e in server.log.entries if e.kind in ("opened", "refused")
                          and storm.begin <= e.time < end]
                back = [e.time for e in server.log.entries
                        if e.kind == "opened" and e.time >= end]
                assert len(during) <= 5, during
                assert back and back[0] - end <= 15 * F
                assert client.is_connected()

    await without_strays(scenario)


async def test_a_call_whose_deadline_ends_during_the_refusals_gets_a_typed_timeout() -> None:
    async def scenario() -> None:
        refuse = 10 * F
        deadline = 1.0
        plan = FaultPlan()
        async with TelegramTestServer(faults=plan) as server:
            client = guarded_client(server, deadline=deadline)
            async with client:
                await asyncio.wait_for(client.get_me(), BOUND)
                plan.add(Transport429Storm(start=plan_now(plan), duration=refuse))
                await asyncio.sleep(0.1)  # the live connection got -429; reconnecting
                t0 = time.monotonic()
                try:
                    await asyncio.wait_for(client.get_me(), BOUND)
                    raise AssertionError("the call succeeded during the refusals")
                except DeadlineExceeded:
                    pass
                took = time.monotonic() - t0
                assert deadline * 0.9 <= took <= deadline + 0.5, took
                # the client carries on after the refusals
                await asyncio.sleep(refuse)
                me = await asyncio.wait_for(client.get_me(), BOUND)
                assert me is not None

    await without_strays(scenario)


async def test_404_full_stack_is_a_typed_auth_error_after_one_attempt() -> None:
    async def scenario() -> None:
        plan = FaultPlan(AlwaysTransportError(404, "raw"))
        async with TelegramTestServer(faults=plan) as server:
            client = guarded_client(server, deadline=10)
            try:
                await asyncio.wait_for(client.connect(), BOUND)
                raise AssertionError("connect() succeeded against -404")
            except AuthKeyInvalidError as e:
                assert isinstance(e, errors.AuthKeyNotFound)
                assert isinstance(e, GuardError)
            await asyncio.sleep(0.5)
            assert server.log.connections_refused() == 1
            assert server.log.connections_opened() == 0
            assert not client.is_connected()
            await asyncio.wait_for(client.disconnect(), BOUND)

    await without_strays(scenario)


async def test_reconnect_settings_from_guard_config_and_the_gave_up_event() -> None:
    """The reconnect settings given as client keywords (TDLib's schedule scaled by ``F``, no
    pacer swapped in) pace the real reconnects; when the refusals outlast
    ``max_reconnect_seconds`` the pending calls fail typed and one ``ReconnectGaveUp`` says so."""

    async def scenario() -> None:
        refuse = 12 * F
        limit = 4 * F
        seen: list[GuardEvent] = []
        plan = FaultPlan()
        async with TelegramTestServer(faults=plan) as server:
            client: GuardedTelegramClient = server.client(
                cls=GuardedTelegramClient, deadline=BOUND, retry_max_attempts=1,
                on_event=seen.append, max_reconnect_seconds=limit,
                reconnect_pacing=tuple((c, s * F) for c, s in ((1, 1.0), (2, 4.0), (3, 8.0))),
                reconnect_backoff_base=1.0 * F, reconnect_backoff_cap=16.0 * F,
                reconnect_jitter=0.25)
            sender = client._sender
            assert isinstance(sender, GuardedMTProtoSender)
            async with client:
                await asyncio.wait_for(client.get_me(), BOUND)
                plan.add(Latency("users.getUsers", 0.3))
                calls = [asyncio.ensure_future(client.get_me()) for _ in range(3)]
                await asyncio.sleep(0.1)
                storm = Transport429Storm(start=plan_now(plan), duration=refuse)
                plan.add(storm)
                results = await asyncio.wait_for(
                    asyncio.gather(*calls, return_exceptions=True), BOUND)
                assert all(isinstance(r, TransportFloodError) for r in results), results
                gave_up = [e for e in seen if isinstance(e, ReconnectGaveUp)]
                assert len(gave_up) == 1, gave_up
                ev = gave_up[0]
                assert ev.seconds == limit
                assert ev.code == -429
                # our 3 calls, plus Telethon's own catch-up request after a reconnect if queued
                assert 3 <= ev.failed_calls <= 4, ev
                assert ev.dc_id == sender.dc_id
                assert sender.given_up
                # the scaled TDLib windows paced the attempts (1 per F s, 2 per 4F s, 3 per 8F)
                assert storm.begin is not None
                tries = sorted(e.time for e in server.log.entries
                               if e.kind in ("opened", "refused") and e.time >= storm.begin)
                for count, seconds in ((1, 1.0 * F), (2, 4.0 * F), (3, 8.0 * F)):
                    for i in range(len(tries) - count):
                        assert tries[i + count] - tries[i] >= seconds * 0.95, (count, tries)
                assert any(isinstance(e, ReconnectAttempt) for e in seen)
                # the client recovers by itself once the DC lets it in again
                await asyncio.sleep(max(0.0, storm.begin + refuse - time.monotonic()))
                me = None
                stop = time.monotonic() + BOUND
                while me is None and time.monotonic() < stop:
                    try:
                        me = await asyncio.wait_for(client.get_me(), BOUND)
                    except (TransportFloodError, CircuitOpenError) as e:
                        # the breaker opened on the transport errors too: both say when to retry
                        await asyncio.sleep(min(1.0, (e.retry_after or 0.1) + 0.05))
                assert me is not None
                assert not sender.given_up

    await without_strays(scenario)
