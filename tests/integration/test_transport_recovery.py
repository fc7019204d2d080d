"""Transport recovery: ``GuardedMTProtoSender`` against the test server's -429 / -404 faults.

Real Telethon (``TelegramClient``) over real sockets; the only change is the client's sender,
replaced right after construction with :meth:`GuardedMTProtoSender.for_client` (the public way
to protect a plain client; ``GuardedTelegramClient`` does the same). Telethon's stock sender
under the same faults is pinned by ``tests/testing/test_faults_telethon.py`` (TcpFull dead for
good with a never-retrieved future, Intermediate/Abridged reconnect storms, -404 storms).

Times are scaled by ``F`` (the pacer by ``ReconnectPacer.scaled(F)``: TDLib's windows and
backoff shrunk by the same factor), so "refused for 10 s, at most 5 attempts, back within
15 s" becomes "refused for 10*F s, at most 5 attempts, back within 15*F s": the counts keep
their meaning. The suite-wide checks of ``conftest.py`` (no never-retrieved futures after
``gc.collect()``) apply; every caller-visible error is checked to be typed here.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from telethon import TelegramClient, errors, types
from telethon.crypto import AuthKey
from telethon.network import (
    Connection,
    ConnectionTcpAbridged,
    ConnectionTcpFull,
    ConnectionTcpIntermediate,
    ConnectionTcpObfuscated,
)
from telethon.sessions import StringSession

from telethon_guard.errors import (
    AuthKeyInvalidError,
    GuardConnectionError,
    GuardError,
    TransportFloodError,
)
from telethon_guard.events import (
    EventBus,
    GuardEvent,
    ReconnectAttempt,
    ReconnectSucceeded,
    TransportErrorEvent,
)
from telethon_guard.reconnect import ReconnectPacer
from telethon_guard.sender import GuardedMTProtoSender
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import AlwaysTransportError, Latency, Transport429Storm
from telethon_guard.testing.log import ServerLog

F = 0.3  # time scale of the scenarios (1.0 = the real seconds)
BOUND = 30.0  # upper bound of any single wait, seconds

FRAMINGS: dict[str, type[Connection]] = {
    "full": ConnectionTcpFull,
    "intermediate": ConnectionTcpIntermediate,
    "abridged": ConnectionTcpAbridged,
}


def no_strays(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Run the test body, let it drop every reference (its frame ends), ``gc.collect()``, and
    fail on any "Future/Task exception was never retrieved" that reached the loop.

    Stricter than the suite-wide check in ``conftest.py``, which runs after pytest may still
    hold the test's frame (and so the client and its futures) through captured exceptions.
    """

    @functools.wraps(test)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        caught: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: caught.append(context))
        try:
            await test(*args, **kwargs)
            for _ in range(3):
                gc.collect()
                await asyncio.sleep(0)
        finally:
            loop.set_exception_handler(previous)
        strays = [c for c in caught if "never retrieved" in str(c.get("message", ""))]
        assert not strays, [f"{c.get('message')}: {c.get('exception')!r}" for c in strays]

    return wrapper


def report(name: str, **values: Any) -> None:
    """One JSON line per scenario with what it measured (visible with ``pytest -s``)."""
    if os.environ.get("TG_TRANSPORT_REPORT"):
        print(json.dumps({"scenario": name, **values}, default=str))


def guarded(
    server: TelegramTestServer,
    connection: type[Connection] = ConnectionTcpFull,
    *,
    scale: float = F,
    events: list[GuardEvent] | None = None,
    max_reconnect_seconds: float | None = 60.0 * F,
    session: Any = None,
) -> tuple[TelegramClient, GuardedMTProtoSender]:
    client: TelegramClient = server.client(session=session, connection=connection)
    bus = EventBus([events.append]) if events is not None else None
    sender = GuardedMTProtoSender.for_client(
        client, pacer=ReconnectPacer.scaled(scale), events=bus,
        max_reconnect_seconds=max_reconnect_seconds,
    )
    client._sender = sender
    return client, sender


def attempts_in(log: ServerLog, start: float, end: float) -> list[float]:
    """Times of connection attempts (served or refused) in ``[start, end)``, server clock."""
    return [e.time for e in log.entries
            if e.kind in ("opened", "refused") and start <= e.time < end]


def first_opened_after(log: ServerLog, t: float) -> float | None:
    times = [e.time for e in log.entries if e.kind == "opened" and e.time >= t]
    return min(times) if times else None


def plan_now(plan: FaultPlan) -> float:
    """Seconds since the plan started (what timed rules' ``start`` is relative to)."""
    assert plan.started_at is not None
    return time.monotonic() - plan.started_at


def assert_typed(results: list[Any]) -> None:
    for r in results:
        if isinstance(r, BaseException):
            assert isinstance(r, GuardError), f"untyped error reached the caller: {r!r}"


@no_strays
async def test_in_flight_calls_complete_after_429_and_10s_of_refusals() -> None:
    refuse = 10 * F
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        seen: list[GuardEvent] = []
        client, sender = guarded(server, ConnectionTcpFull, events=seen)
        async with client:
            me = await asyncio.wait_for(client.get_me(), BOUND)
            ok_before = server.log.count("users.getUsers", outcome="ok")
            plan.add(Latency("users.getUsers", 0.5))
            calls = [asyncio.ensure_future(client.get_me()) for _ in range(5)]
            await asyncio.sleep(0.2)  # the five requests are in flight at the server
            storm = Transport429Storm(start=plan_now(plan), duration=refuse)
            plan.add(storm)
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True),
                                             BOUND)
            assert storm.begin is not None
            end = storm.begin + refuse
            assert_typed(results)
            assert all(isinstance(r, types.User) and r.id == me.id for r in results), results
            back = first_opened_after(server.log, end)
            during = attempts_in(server.log, storm.begin, end)
            assert back is not None
            assert len(during) <= 5, during
            assert back - end <= 15 * F, back - end
            # the requests in flight were re-sent after the reconnect and executed
            assert server.log.count("users.getUsers", outcome="ok") - ok_before >= 5
            assert sender.transport_errors[-429] >= 1
            assert client.is_connected()
        kinds = [type(e) for e in seen]
        assert TransportErrorEvent(code=-429, framing="full", dc_id=1) in seen
        assert kinds.count(ReconnectAttempt) == sender.reconnect_attempts
        assert kinds.count(ReconnectSucceeded) == 1
        report("in_flight_429_refused", scale=F, refuse_s=refuse,
               attempts_during=len(during), attempts_total=sender.reconnect_attempts,
               recovered_after_end_s=round(back - end, 3),
               attempt_offsets_s=[round(t - storm.begin, 3) for t in during])


@pytest.mark.parametrize("framing", [*FRAMINGS, "obfuscated"])
@no_strays
async def test_429_in_each_framing_recovers_without_a_storm(framing: str) -> None:
    refuse = 4 * F
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        seen: list[GuardEvent] = []
        connection = ConnectionTcpObfuscated if framing == "obfuscated" else FRAMINGS[framing]
        client, sender = guarded(server, connection, events=seen)
        async with client:
            await asyncio.wait_for(client.get_me(), BOUND)
            plan.add(Latency("users.getUsers", 0.3))
            call = asyncio.ensure_future(client.get_me())
            await asyncio.sleep(0.1)
            storm = Transport429Storm(start=plan_now(plan), duration=refuse, mode="framed")
            plan.add(storm)
            result = await asyncio.wait_for(call, BOUND)
            assert isinstance(result, types.User)
            assert storm.begin is not None
            total = attempts_in(server.log, storm.begin, time.monotonic())
            # Telethon's stock sender opens hundreds of connections per second here (or none
            # ever again, on TcpFull); paced: TDLib's 1/1 s, 2/4 s, 3/8 s plus the backoff.
            assert 1 <= len(total) <= 4, total
            assert sender.transport_errors[-429] >= 1
            assert sender.reconnects == 1
        # obfuscated2 wraps Abridged framing
        expected = "abridged" if framing == "obfuscated" else framing
        assert TransportErrorEvent(code=-429, framing=expected, dc_id=1) in seen
        report("429_framing", framing=framing, refuse_s=refuse, attempts=len(total))


@pytest.mark.parametrize("framing", list(FRAMINGS))
@no_strays
async def test_raw_429_then_close_on_every_connection_for_30s(framing: str) -> None:
    scale = 0.1
    window = 30 * scale
    rule = AlwaysTransportError(429, "raw", start=0.0, duration=window)
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        client, sender = guarded(server, FRAMINGS[framing], scale=scale,
                                 max_reconnect_seconds=None)
        cpu0, wall0 = time.process_time(), time.monotonic()
        # connect() itself is refused: its init request waits for the paced reconnect
        await asyncio.wait_for(client.connect(), BOUND)
        try:
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            assert rule.begin is not None
            during = attempts_in(server.log, rule.begin, rule.begin + window)
            assert len(during) <= 6, during
            assert server.log.connections_refused() == len(during)
            assert sender.transport_errors[-429] == len(during)
            # no busy loop: the process slept through the refusals (a spinning reconnect loop
            # burns a whole core)
            assert cpu < 0.5 * wall, (cpu, wall)
            me = await asyncio.wait_for(client.get_me(), BOUND)
            assert me is not None
        finally:
            await asyncio.wait_for(client.disconnect(), BOUND)
        report("raw_429_every_connection", framing=framing, window_s=window,
               attempts=len(during), cpu_s=round(cpu, 3), wall_s=round(wall, 3),
               offsets_s=[round(t - rule.begin, 3) for t in during])


@pytest.mark.parametrize(
    ("framing", "mode"),
    [("full", "raw"), ("full", "framed"), ("intermediate", "raw"), ("abridged", "raw"),
     ("abridged", "framed")],
)
@no_strays
async def test_404_is_one_attempt_then_a_typed_auth_error(framing: str, mode: str) -> None:
    async with TelegramTestServer(faults=FaultPlan(AlwaysTransportError(404, mode))) as server:
        seen: list[GuardEvent] = []
        client, sender = guarded(server, FRAMINGS[framing], events=seen)
        try:
            with pytest.raises(AuthKeyInvalidError) as info:
                await asyncio.wait_for(client.connect(), BOUND)
            assert isinstance(info.value, errors.AuthKeyNotFound)  # what Telethon code catches
            assert info.value.dc_id == 1
            await asyncio.sleep(0.5)  # a reconnect loop would have tried again by now
            assert server.log.connections_refused() == 1
            assert server.log.connections_opened() == 0
            assert sender.transport_errors == {-404: 1}
            assert sender.reconnect_attempts == 0
            assert not client.is_connected()
            t0 = time.monotonic()
            with pytest.raises(AuthKeyInvalidError):
                await asyncio.wait_for(client.get_me(), BOUND)
            assert time.monotonic() - t0 < 0.1  # fails fast, no network
            assert server.log.connections_refused() == 1
        finally:
            await asyncio.wait_for(client.disconnect(), BOUND)
        assert [e for e in seen if isinstance(e, TransportErrorEvent)] == [
            TransportErrorEvent(code=-404, framing=framing, dc_id=1)
        ]


@no_strays
async def test_unknown_auth_key_is_a_typed_error_without_a_reconnect_loop() -> None:
    async with TelegramTestServer() as server:
        session = StringSession()
        addr = server.dc(1)
        session.set_dc(1, addr.host, addr.port)
        session.auth_key = AuthKey(os.urandom(256))  # never registered with the server
        client, sender = guarded(server, session=session)
        try:
            with pytest.raises(AuthKeyInvalidError) as info:
                await asyncio.wait_for(client.connect(), BOUND)
            # One line naming the DC (it was Telethon's multi-line class docstring).
            assert str(info.value) == ("transport error -404 on DC 1: the server does not know "
                                       "this auth key; the session must be recreated (log in "
                                       "again)")
            await asyncio.sleep(0.5)
            assert server.log.connections_opened() == 1
            assert sender.reconnect_attempts == 0
        finally:
            await asyncio.wait_for(client.disconnect(), BOUND)


@no_strays
async def test_calls_fail_typed_when_recovery_outlasts_max_reconnect_seconds() -> None:
    refuse = 12 * F
    limit = 4 * F
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        client, sender = guarded(server, max_reconnect_seconds=limit)
        async with client:
            await asyncio.wait_for(client.get_me(), BOUND)
            plan.add(Latency("users.getUsers", 0.3))
            calls = [asyncio.ensure_future(client.get_me()) for _ in range(3)]
            await asyncio.sleep(0.1)
            storm = Transport429Storm(start=plan_now(plan), duration=refuse)
            plan.add(storm)
            t0 = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True),
                                             BOUND)
            waited = time.monotonic() - t0
            assert all(isinstance(r, TransportFloodError) for r in results), results
            assert all(isinstance(r, ConnectionError) for r in results)  # Telethon-compatible
            assert all(r.code == -429 for r in results if isinstance(r, TransportFloodError))
            assert waited <= limit + 1.0
            assert sender.given_up
            # while given up, calls fail fast with the time until the next attempt
            t1 = time.monotonic()
            with pytest.raises(TransportFloodError) as info:
                await asyncio.wait_for(client.get_me(), BOUND)
            assert time.monotonic() - t1 < 0.05
            assert info.value.retry_after is not None and info.value.retry_after >= 0
            # ... and the sender recovers by itself once the DC lets it in again
            assert storm.begin is not None
            await asyncio.sleep(max(0.0, storm.begin + refuse - time.monotonic()))
            deadline = time.monotonic() + BOUND
            me = None
            while me is None and time.monotonic() < deadline:
                try:
                    me = await asyncio.wait_for(client.get_me(), BOUND)
                except TransportFloodError as e:
                    await asyncio.sleep(min(1.0, (e.retry_after or 0.1) + 0.05))
            assert me is not None
            assert not sender.given_up
            assert client.is_connected()


@no_strays
async def test_user_disconnect_fails_in_flight_calls_with_a_typed_error() -> None:
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        client, _ = guarded(server)
        await asyncio.wait_for(client.connect(), BOUND)
        plan.add(Latency("users.getUsers", 5.0))
        call = asyncio.ensure_future(client.get_me())
        await asyncio.sleep(0.2)
        await asyncio.wait_for(client.disconnect(), BOUND)
        with pytest.raises(GuardConnectionError):
            await asyncio.wait_for(call, BOUND)
        assert not call.cancelled()  # Telethon would cancel a caller that was never cancelled
        with pytest.raises(GuardConnectionError):
            await asyncio.wait_for(client.get_me(), BOUND)
        result = await asyncio.wait_for(client.disconnected, BOUND)
        assert result is None


@no_strays
async def test_a_lost_connection_is_paced_and_recovered() -> None:
    async with TelegramTestServer() as server:
        client, sender = guarded(server, ConnectionTcpIntermediate)
        async with client:
            await asyncio.wait_for(client.get_me(), BOUND)
            for conn in list(server._conns.values()):
                conn.close("test: reset", abort=True)
            me = await asyncio.wait_for(client.get_me(), BOUND)
            assert me is not None
            assert sender.connection_losses == 1
            assert sender.reconnects == 1
            assert server.log.connections_opened() == 2


@no_strays
async def test_without_auto_reconnect_429_ends_the_connection_with_a_typed_error() -> None:
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        client: TelegramClient = server.client(auto_reconnect=False)
        sender = GuardedMTProtoSender.for_client(client, pacer=ReconnectPacer.scaled(F))
        client._sender = sender
        await asyncio.wait_for(client.connect(), BOUND)
        try:
            plan.add(Latency("users.getUsers", 0.3))
            call = asyncio.ensure_future(client.get_me())
            await asyncio.sleep(0.1)
            plan.add(Transport429Storm(start=plan_now(plan), duration=2.0))
            with pytest.raises(TransportFloodError):
                await asyncio.wait_for(call, BOUND)
            with pytest.raises(TransportFloodError):
                await asyncio.wait_for(client.disconnected, BOUND)
            assert not client.is_connected()
            with pytest.raises(TransportFloodError):  # why it ended, not a bare ConnectionError
                await asyncio.wait_for(client.get_me(), BOUND)
            assert sender.reconnect_attempts == 0
            assert server.log.connections_opened() == 1
        finally:
            await asyncio.wait_for(client.disconnect(), BOUND)


@no_strays
async def test_connecting_to_a_dead_port_is_retried_after_retry_delay_and_typed() -> None:
    async with TelegramTestServer() as server:
        session = server.session()
        dead = server.dc(2)
        session.set_dc(1, dead.host, dead.port)
        for srv in server._servers[1:]:
            srv.close()
            await srv.wait_closed()
        client, sender = guarded(server, session=session)
        with pytest.raises(GuardConnectionError) as info:
            await asyncio.wait_for(client.connect(), BOUND)
        assert isinstance(info.value.__cause__, ConnectionError)
        assert isinstance(info.value.__cause__.__cause__, ConnectionRefusedError)
        # Telethon's count, the first attempt and connection_retries=1; a refused port is a
        # definite answer: retried after Telethon's retry_delay, and the pacer, which backs
        # off after -429 and lost connections, records no failure (a trial: 29 s vs 6 s)
        assert sender.pacer.attempts_total == 2
        assert sender.pacer.failures == 0
        assert "failed 2 time(s)" in str(info.value), info.value
        await asyncio.wait_for(client.disconnect(), BOUND)


@no_strays
async def test_disconnect_while_reconnecting_is_prompt_and_typed() -> None:
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        client, sender = guarded(server, max_reconnect_seconds=None)
        await asyncio.wait_for(client.connect(), BOUND)
        plan.add(Latency("users.getUsers", 0.3))
        call = asyncio.ensure_future(client.get_me())
        await asyncio.sleep(0.1)
        plan.add(Transport429Storm(start=plan_now(plan), duration=60.0))
        await asyncio.sleep(1.0)
        assert sender.is_reconnecting
        t0 = time.monotonic()
        await asyncio.wait_for(client.disconnect(), BOUND)
        assert time.monotonic() - t0 < 1.0
        assert not sender.is_reconnecting
        with pytest.raises(GuardConnectionError):
            await asyncio.wait_for(call, BOUND)
        opened = len(attempts_in(server.log, 0, time.monotonic()))
        await asyncio.sleep(0.5)
        assert len(attempts_in(server.log, 0, time.monotonic())) == opened  # no more attempts
