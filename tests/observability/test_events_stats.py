"""Events, logs and ``client.guard.stats()`` of a real guarded client against the test server.

The ground truth is what the server did (``server.log``, the fault plan); the events and stats
must tell the same story.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from telethon import errors as tl_errors
from telethon import utils
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import (
    CircuitOpenError,
    DeadlineExceeded,
    FloodWaitBlocked,
    SlowModeBlocked,
)
from telethon_guard.events import (
    BreakerStateChanged,
    DeadlineExceededEvent,
    FloodBlocked,
    FloodWaitEnded,
    FloodWaitStarted,
    GuardEvent,
    ReconnectAttempt,
    ReconnectSucceeded,
    RequestFinished,
    RequestLimited,
    TransportErrorEvent,
)
from telethon_guard.health import deadline_scope
from telethon_guard.stats import GuardStats
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import ErrorOnCalls, SlowMode, Transport429Storm

T = TypeVar("T")
BOUND = 20.0


async def bounded(aw: Awaitable[T], seconds: float = BOUND) -> T:
    return await asyncio.wait_for(aw, seconds)


def of(events: list[GuardEvent], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def dialogs_request() -> Any:
    return functions.messages.GetDialogsRequest(
        offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(), limit=10, hash=0)


async def test_flood_wait_started_ended_request_finished_and_stats() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_1", times=1))
    async with TelegramTestServer(faults=plan) as server:
        seen: list[GuardEvent] = []
        async_seen: list[GuardEvent] = []

        async def async_cb(ev: GuardEvent) -> None:
            await asyncio.sleep(0)
            async_seen.append(ev)

        client = server.client(cls=GuardedTelegramClient, deadline=10,
                               on_event=(seen.append, async_cb))
        async with client:
            await bounded(client(dialogs_request()))
            await bounded(client.guard.events.drain())
            stats = client.guard.stats()
        assert server.log.count("messages.getDialogs") == 2  # the FLOOD_WAIT, then the call

    started = of(seen, FloodWaitStarted)
    ended = of(seen, FloodWaitEnded)
    assert [(e.method, e.seconds, e.from_server) for e in started] == [
        ("messages.getDialogs", 1.0, True)]
    assert "messages.getDialogs" in started[0].scope
    assert len(ended) == 1 and ended[0].scope == started[0].scope
    assert 0.9 <= ended[0].seconds < 5.0
    finished = [e for e in of(seen, RequestFinished) if e.method == "messages.getDialogs"]
    assert [(e.outcome, e.error, e.attempts) for e in finished] == [("ok", "", 2)]
    assert finished[0].duration >= 0.9
    assert {type(e) for e in async_seen} == {type(e) for e in seen}  # async callbacks too

    assert isinstance(stats, GuardStats)
    assert stats.flood_waits == {"messages.getDialogs": 1}
    assert stats.flood_wait_seconds == pytest.approx(1.0)
    assert stats.calls["messages.getDialogs"] == {"ok": 1}
    assert stats["calls"]["users.getUsers"]["ok"] >= 1
    assert stats.available is True
    assert all(s == "CLOSED" for s in stats.breakers.values())  # listed once one failed
    assert stats.as_dict()["flood_waits"] == {"messages.getDialogs": 1}


async def test_breaker_open_is_an_event_a_stat_and_unavailability() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 500, "RPC_CALL_FAIL", times=2))
    async with TelegramTestServer(faults=plan) as server:
        seen: list[GuardEvent] = []

        def broken(ev: GuardEvent) -> None:
            raise RuntimeError("a broken on_event callback")

        async def broken_async(ev: GuardEvent) -> None:
            raise RuntimeError("a broken async on_event callback")

        client = server.client(cls=GuardedTelegramClient, deadline=5, retry_max_attempts=1,
                               breaker_failure_threshold=2, breaker_open_seconds=0.5,
                               on_event=(broken, broken_async, seen.append))
        async with client:
            assert client.guard.available and client.guard.unavailable_reason is None
            for _ in range(2):
                with pytest.raises(tl_errors.RpcCallFailError):
                    await bounded(client(dialogs_request()))
            assert not client.guard.available
            assert client.guard.unavailable_reason == "breaker OPEN"
            stats = client.guard.stats()
            with pytest.raises(CircuitOpenError):
                await bounded(client.get_me())
            sent = server.log.count("users.getUsers")
            assert await bounded(client.guard.wait_available(5.0))
            me = await bounded(client.get_me())  # the probe closes it again
            assert me.id > 0 and server.log.count("users.getUsers") == sent + 1
            assert client.guard.available
            await bounded(client.guard.events.drain())

    changes = [(e.old, e.new) for e in of(seen, BreakerStateChanged)]
    assert changes == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]
    opened = of(seen, BreakerStateChanged)[0]
    assert opened.key.endswith("/dc:1") and opened.retry_after == pytest.approx(0.5, abs=0.1)
    assert list(stats.breakers.values()) == ["OPEN"] and stats.available is False
    assert stats.calls["messages.getDialogs"] == {"server_error": 2}
    outcomes = [e.outcome for e in of(seen, RequestFinished)
                if e.method in ("messages.getDialogs", "users.getUsers")]
    assert outcomes.count("server_error") == 2 and "circuit_open" in outcomes


async def test_transport_error_and_reconnect_events_and_stats() -> None:
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        seen: list[GuardEvent] = []
        client = server.client(cls=GuardedTelegramClient, deadline=10, on_event=(seen.append,))
        async with client:
            assert plan.started_at is not None
            loop = asyncio.get_running_loop()
            plan.add(Transport429Storm(start=loop.time() - plan.started_at, duration=0.3))
            unavailable: set[str | None] = set()
            for _ in range(200):
                unavailable.add(client.guard.unavailable_reason)
                if of(seen, TransportErrorEvent):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            unavailable.add(client.guard.unavailable_reason)
            me = await bounded(client.get_me())  # waits for the paced reconnect
            assert me.id > 0
            await asyncio.sleep(0.05)
            stats = client.guard.stats()

    errors = of(seen, TransportErrorEvent)
    assert errors and errors[0].code == -429 and errors[0].framing == "full"
    assert errors[0].dc_id == 1
    assert of(seen, ReconnectAttempt) and of(seen, ReconnectSucceeded)
    assert "reconnecting" in unavailable
    assert stats.transport_errors.get(-429, 0) == len(errors)
    assert stats.reconnects == len(of(seen, ReconnectSucceeded)) >= 1
    assert stats.reconnect_attempts >= stats.reconnects
    assert stats.available


async def test_logs_never_carry_session_auth_key_phone_or_peer_ids(
        caplog: pytest.LogCaptureFixture) -> None:
    async with TelegramTestServer() as server:
        cid = server.world.channel_id("chat_a")
        marked = utils.get_peer_id(types.PeerChannel(cid))
        server.faults.add(SlowMode(60, peers=[marked]))
        for log_peer_ids in (False, True):
            server.faults.add(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_1", times=1))
            caplog.clear()
            seen: list[GuardEvent] = []
            session = server.session()
            session_string = session.save()
            key = session.auth_key.key
            assert key is not None
            client = server.client(cls=GuardedTelegramClient, session=session, deadline=10,
                                   max_flood_wait=5, log_peer_ids=log_peer_ids,
                                   on_event=(seen.append,))
            with caplog.at_level(logging.DEBUG, logger="telethon_guard"):
                async with client:
                    me = await bounded(client.get_me())
                    await bounded(client(dialogs_request()))
                    await bounded(client.send_message("chat_a", "one"))
                    with pytest.raises(SlowModeBlocked):
                        await bounded(client.send_message("chat_a", "two"))
            text = "\n".join(r.getMessage() for r in caplog.records
                             if r.name.startswith("telethon_guard"))
            assert "FloodWaitStarted" in text and "FloodBlocked" in text  # the log is not empty
            assert len([r for r in caplog.records if "FloodBlocked" in r.getMessage()]) == 1
            assert session_string not in text and session_string[:40] not in text
            assert key.hex() not in text and key.hex()[:32] not in text
            assert repr(key)[:40] not in text
            assert me.phone and me.phone not in text
            blocked = of(seen, FloodBlocked)
            assert len(blocked) == 1 and "slowmode" in blocked[0].scope
            if log_peer_ids:
                assert str(cid) in blocked[0].scope and str(cid) in text
            else:
                assert str(cid) not in blocked[0].scope and str(cid) not in text
                assert "peer#" in blocked[0].scope


async def test_limiter_deadline_and_blocked_methods_in_events_and_stats() -> None:
    plan = FaultPlan(ErrorOnCalls("help.getNearestDc", 420, "FLOOD_WAIT_30", times=1))
    async with TelegramTestServer(faults=plan) as server:
        seen: list[GuardEvent] = []
        client = server.client(cls=GuardedTelegramClient, deadline=10, max_flood_wait=5,
                               method_limits={"messages.getDialogs": ((1, 0.3),)},
                               on_event=(seen.append,))
        async with client:
            await bounded(client(dialogs_request()))
            await bounded(client(dialogs_request()))  # waits ~0.3 s for its slot
            with deadline_scope(0.05):  # the next slot is ~0.3 s away: fails at once
                t = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    await bounded(client(dialogs_request()))
                assert time.monotonic() - t < 0.05
            with pytest.raises(FloodWaitBlocked):
                await bounded(client(functions.help.GetNearestDcRequest()))
            stats = client.guard.stats()
        assert server.log.count("messages.getDialogs") == 2

    limited = [e for e in of(seen, RequestLimited) if e.method == "messages.getDialogs"]
    assert len(limited) == 1 and 0.15 <= limited[0].waited <= 0.5
    assert "messages.getDialogs" in limited[0].key
    deadline = of(seen, DeadlineExceededEvent)
    assert [(e.method, e.stage) for e in deadline] == [("messages.getDialogs", "limiter")]
    assert stats.limited >= 1 and stats.limited_seconds >= 0.15
    assert stats.deadline_exceeded == 1
    assert stats.calls["messages.getDialogs"] == {"ok": 2, "deadline": 1}
    blocked = {k: v for k, v in stats.blocked.items() if "help.getNearestDc" in k}
    assert len(blocked) == 1 and 25 < next(iter(blocked.values())) <= 30
    assert stats.flood_blocked == {"help.getNearestDc": 1}
    assert stats.limiter_queue == 0
