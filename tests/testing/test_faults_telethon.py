"""Plain ``telethon.TelegramClient`` against the fault plan: Telethon's own failures, pinned.

These are regression fixtures of what *unmodified* Telethon 1.45 does under Telegram's
pushback (design-notes §2), produced by the fault rules over real TCP. If Telethon changes its
behaviour, these tests say so. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from telethon import TelegramClient, errors, utils
from telethon.network import (
    ConnectionTcpAbridged,
    ConnectionTcpFull,
    ConnectionTcpIntermediate,
)
from telethon.network.connection.connection import Connection
from telethon.tl import functions, types

from telethon_guard.testing import FaultPlan, TransportError
from telethon_guard.testing.faults import (
    AlwaysTransportError,
    DropReplies,
    ErrorOnCalls,
    FloodWindow,
    Latency,
    OnCalls,
    PeerFlood,
    ResetOn,
    SlowMode,
    StallOn,
    Transport429Storm,
)
from telethon_guard.testing.server import TelegramTestServer

T = 15.0  # bound for every single wait, seconds
HISTORY = "messages.getHistory"


def history(peer: Any) -> functions.messages.GetHistoryRequest:
    return functions.messages.GetHistoryRequest(
        peer=peer, offset_id=0, offset_date=None, add_offset=0, limit=1, max_id=0, min_id=0, hash=0
    )


@contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """Collect what reaches the running loop's exception handler."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    caught: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: caught.append(context))
    try:
        yield caught
    finally:
        loop.set_exception_handler(previous)


def never_retrieved(caught: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in caught if "exception was never retrieved" in str(c.get("message", ""))]


async def test_flood_wait_surfaces_as_flood_wait_error_with_the_true_seconds() -> None:
    window = FloodWindow(HISTORY, limit=2, window=30)
    async with TelegramTestServer(faults=FaultPlan(window)) as server:
        client: TelegramClient = server.client(flood_sleep_threshold=0)
        async with client:
            news = await asyncio.wait_for(client.get_input_entity("news"), T)
            t_first = time.monotonic()
            await asyncio.wait_for(client(history(news)), T)
            await asyncio.wait_for(client(history(news)), T)
            with pytest.raises(errors.FloodWaitError) as info:
                await asyncio.wait_for(client(history(news)), T)
            elapsed = time.monotonic() - t_first
            # The window admits a call 30 s after the first one: X = ceil(seconds left).
            assert 30 - elapsed - 1 <= info.value.seconds <= 30
            assert server.log.count(HISTORY, outcome="ok") == 2
            assert [e.error_message for e in server.log.requests(HISTORY, "rpc_error")] == [
                f"FLOOD_WAIT_{info.value.seconds}"
            ]
            # Telethon's own flood memo answers the next call locally: the server never sees it.
            with pytest.raises(errors.FloodWaitError):
                await asyncio.wait_for(client(history(news)), T)
            assert server.log.count(HISTORY) == 3
            assert window.fired == 1


async def test_fixed_flood_wait_seconds_and_other_methods_flowing() -> None:
    plan = FaultPlan(FloodWindow("contacts.resolveUsername", 1, 86400, seconds=48038))
    async with TelegramTestServer(faults=plan) as server:
        client: TelegramClient = server.client(flood_sleep_threshold=0)
        async with client:
            await asyncio.wait_for(client.get_input_entity("news"), T)
            with pytest.raises(errors.FloodWaitError) as info:
                await asyncio.wait_for(
                    client(functions.contacts.ResolveUsernameRequest("chat_a")), T
                )
            assert info.value.seconds == 48038
            news = await asyncio.wait_for(client.get_input_entity("news"), T)  # cached
            await asyncio.wait_for(client(history(news)), T)
        assert server.log.count("contacts.resolveUsername") == 2


async def test_small_flood_wait_is_slept_silently_by_telethon() -> None:
    # Telethon sleeps FLOOD_WAITs up to flood_sleep_threshold (default 60 s) and re-sends:
    # the caller only sees a slow success (design-notes §2).
    plan = FaultPlan(ErrorOnCalls(HISTORY, 420, "FLOOD_WAIT_1", calls={1}))
    async with TelegramTestServer(faults=plan) as server:
        client: TelegramClient = server.client()
        assert client.flood_sleep_threshold == 60
        async with client:
            news = await asyncio.wait_for(client.get_input_entity("news"), T)
            started = time.monotonic()
            result = await asyncio.wait_for(client(history(news)), T)
            assert time.monotonic() - started >= 0.9
        assert isinstance(result, types.messages.ChannelMessages)
        outcomes = [e.outcome for e in server.log.requests(HISTORY)]
        assert outcomes == ["rpc_error", "ok"]


async def test_server_error_ends_in_telethons_value_error() -> None:
    # Telethon retries 500s with a flat 2 s sleep request_retries times, then raises
    # ValueError('Request was unsuccessful N time(s)'), losing the real error (design-notes §2).
    plan = FaultPlan(ErrorOnCalls(HISTORY, 500, "RPC_CALL_FAIL", times=7))
    async with TelegramTestServer(faults=plan) as server:
        client: TelegramClient = server.client(request_retries=0)  # still one attempt (force_retry)
        async with client:
            news = await asyncio.wait_for(client.get_input_entity("news"), T)
            with pytest.raises(ValueError, match="Request was unsuccessful 1 time"):
                await asyncio.wait_for(client(history(news)), T)
        assert server.log.count(HISTORY, outcome="rpc_error") == 1


async def test_minus_429_on_tcp_full_leaves_the_plain_client_dead() -> None:
    plan = FaultPlan(
        Latency("channels.getFullChannel", 0.5),  # still in flight when the -429 arrives
        OnCalls(HISTORY, 1, TransportError(429, "framed")),
    )
    with loop_errors() as caught:
        async with TelegramTestServer(faults=plan) as server:
            client: TelegramClient = server.client(connection=ConnectionTcpFull)
            await asyncio.wait_for(client.connect(), T)
            news = await asyncio.wait_for(client.get_input_entity("news"), T)
            # A batch in flight: the caller gets Telethon's bare InvalidBufferError from the
            # first element; the second element's future holds the same error, never awaited.
            batch = [history(news), functions.channels.GetFullChannelRequest(news)]
            with pytest.raises(errors.InvalidBufferError) as info:
                await asyncio.wait_for(client(batch), T)
            code = info.value.code
            # The caller's error object is also held by pytest's captured log records; drop
            # its traceback (Telethon's _call frame, which holds the batch's futures) as an
            # application that handled the error would.
            info.value.__traceback__ = None
            del info
            assert code == 429
            # The client is dead for good: no reconnect, later calls get ConnectionError.
            assert not client.is_connected()
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(client(history(news)), T)
            await asyncio.sleep(0.3)
            assert server.log.connections_opened() == 1
            assert server.log.count(HISTORY, outcome="transport_error") == 1
            await asyncio.wait_for(client.disconnect(), T)
            del client
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
    lost = never_retrieved(caught)
    assert lost, caught
    assert all(isinstance(c.get("exception"), errors.InvalidBufferError) for c in lost)


@pytest.mark.parametrize("connection", [ConnectionTcpIntermediate, ConnectionTcpAbridged])
async def test_minus_429_in_other_framings_makes_a_reconnect_storm(
    connection: type[Connection],
) -> None:
    interval = 1.0
    plan = FaultPlan(OnCalls(HISTORY, None, TransportError(429, "framed")))
    async with TelegramTestServer(faults=plan) as server:
        client: TelegramClient = server.client(connection=connection)
        async with client:
            news = await asyncio.wait_for(client.get_input_entity("news"), T)
            opened = server.log.connections_opened()
            get_users = server.log.count("users.getUsers")
            call = asyncio.ensure_future(client(history(news)))
            await asyncio.sleep(interval)
            during = server.log.connections_opened() - opened
            errors_sent = server.log.count(HISTORY, outcome="transport_error")
            # Telethon reconnects at once, with no backoff (about 300 connections per second
            # on a dev box), re-sends the pending request on each new connection, and its
            # auto-reconnect handler adds a users.getUsers (get_me) per reconnect.
            assert during >= 10, during
            assert errors_sent >= during - 1
            assert server.log.count("users.getUsers") - get_users >= during // 2
            server.faults.clear()
            result = await asyncio.wait_for(call, T)
            assert isinstance(result, types.messages.ChannelMessages)
        # At least once: after the storm the request may even be executed twice.
        assert 1 <= server.log.count(HISTORY, outcome="ok") <= 3


async def test_slow_mode_is_per_chat() -> None:
    async with TelegramTestServer() as server:
        chat_a = utils.get_peer_id(types.PeerChannel(server.world.channel_id("chat_a")))
        server.faults.add(SlowMode(60, peers=[chat_a]))
        client: TelegramClient = server.client(flood_sleep_threshold=0)
        async with client:
            await asyncio.wait_for(client.send_message("chat_a", "first"), T)
            with pytest.raises(errors.SlowModeWaitError) as info:
                await asyncio.wait_for(client.send_message("chat_a", "second"), T)
            assert 59 <= info.value.seconds <= 60
            # Other chats are unaffected (and Telethon keeps no memo for slow mode).
            await asyncio.wait_for(client.send_message("chat_b", "to b"), T)
            await asyncio.wait_for(client.send_message("chat_c", "to c"), T)
            with pytest.raises(errors.SlowModeWaitError):
                await asyncio.wait_for(client.send_message("chat_a", "third"), T)
        sends = server.log.requests("messages.sendMessage")
        assert [e.outcome for e in sends] == ["ok", "rpc_error", "ok", "ok", "rpc_error"]


async def test_peer_flood_after_n_sends_is_not_retried() -> None:
    rule = PeerFlood(after=3)
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        client: TelegramClient = server.client(flood_sleep_threshold=0)
        async with client:
            for i in range(3):
                await asyncio.wait_for(client.send_message("chat_a", f"m{i}"), T)
            for _ in range(2):
                with pytest.raises(errors.PeerFloodError):
                    await asyncio.wait_for(client.send_message("chat_b", "spam"), T)
        assert server.log.count("messages.sendMessage") == 5  # one call per attempt
        assert server.log.count("messages.sendMessage", outcome="rpc_error") == 2
        assert rule.fired == 2


async def test_plain_client_is_telegram_client() -> None:
    # Guard against the fixtures silently testing a wrapped client.
    async with TelegramTestServer() as server:
        client: TelegramClient = server.client()
        assert isinstance(client, TelegramClient)
        assert type(client).__mro__[1] is TelegramClient


@pytest.mark.parametrize(
    ("connection", "mode"), [(ConnectionTcpFull, "raw"), (ConnectionTcpIntermediate, "framed")]
)
async def test_minus_404_ends_in_auth_key_not_found(
    connection: type[Connection], mode: str
) -> None:
    async with TelegramTestServer(faults=FaultPlan(AlwaysTransportError(404, mode))) as server:
        client: TelegramClient = server.client(connection=connection)
        try:
            with pytest.raises(errors.AuthKeyNotFound):
                await asyncio.wait_for(client.connect(), T)
                await asyncio.wait_for(client.get_me(), T)
            await asyncio.sleep(0.3)
            assert server.log.connections_refused() == 1  # one attempt, no reconnect loop
            assert server.log.connections_opened() == 0
        finally:
            await asyncio.wait_for(client.disconnect(), T)


@pytest.mark.parametrize(
    ("connection", "mode"), [(ConnectionTcpFull, "framed"), (ConnectionTcpIntermediate, "raw")]
)
async def test_minus_404_in_the_other_shape_makes_a_reconnect_storm(
    connection: type[Connection], mode: str
) -> None:
    # TcpFull reading a negative length with code 404, or Intermediate reading 4 raw bytes as
    # a negative length, is not recognised as "unknown auth key": Telethon reconnects at once.
    async with TelegramTestServer(faults=FaultPlan(AlwaysTransportError(404, mode))) as server:
        client: TelegramClient = server.client(connection=connection)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.connect(), 1.0)
            assert server.log.connections_refused() >= 10
        finally:
            await asyncio.wait_for(client.disconnect(), T)


async def test_timed_storm_kills_tcp_full_and_storms_intermediate_until_it_ends() -> None:
    storm = Transport429Storm(start=0.3, duration=1.0)
    async with TelegramTestServer(faults=FaultPlan(storm)) as server:
        full: TelegramClient = server.client(connection=ConnectionTcpFull)
        inter: TelegramClient = server.client(connection=ConnectionTcpIntermediate)
        async with full, inter:
            assert server.log.connections_opened() == 2
            await asyncio.sleep(0.6)  # the storm began at 0.3 s: both live connections hit
            assert not full.is_connected()
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(full.get_me(), T)
            refused_during = server.log.connections_refused()
            get_users_before = server.log.count("users.getUsers", outcome="ok")
            # Intermediate keeps reconnecting into the refusals, then recovers after 1.3 s...
            me = await asyncio.wait_for(inter.get_me(), T)
            assert me is not None
            assert refused_during >= 10
            assert server.log.connections_opened() >= 3
            # ...and flushes the get_me its auto-reconnect handler queued on every attempt.
            await asyncio.sleep(0.2)
            flushed = server.log.count("users.getUsers", outcome="ok") - get_users_before
            assert flushed >= 10, flushed
        assert storm.fired >= refused_during + 1


async def test_reply_lost_in_a_reset_after_execute_ends_in_value_error() -> None:
    # Telethon re-sends the message after reconnecting (same random_id); the server answers
    # RANDOM_ID_DUPLICATE ("already done"), which Telethon treats as a server error: flat 2 s
    # retry, then ValueError, although the message was stored exactly once.
    plan = FaultPlan(ResetOn("messages.sendMessage", calls=1, after_execute=True))
    async with TelegramTestServer(faults=plan) as server:
        client: TelegramClient = server.client(request_retries=0)
        async with client:
            with pytest.raises(ValueError, match="Request was unsuccessful"):
                await asyncio.wait_for(client.send_message("chat_a", "hello"), T)
        sends = server.log.requests("messages.sendMessage")
        assert [(e.outcome, e.executed) for e in sends] == [
            ("reset", True),
            ("rpc_error", False),
        ]
        assert sends[1].error_message == "RANDOM_ID_DUPLICATE"
        assert sends[0].random_id == sends[1].random_id
        assert server.log.connections_opened() == 2
        assert len(server.log.executed("messages.sendMessage")) == 1  # stored exactly once


@pytest.mark.parametrize(
    ("fault", "outcome", "executed"),
    [
        (DropReplies("users.getFullUser", calls=1), "dropped", True),
        (StallOn("users.getFullUser", calls=1), "stalled", False),
    ],
)
async def test_silence_leaves_plain_telethon_waiting(
    fault: OnCalls, outcome: str, executed: bool
) -> None:
    async with TelegramTestServer(faults=FaultPlan(fault)) as server:
        client: TelegramClient = server.client()
        async with client:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client(functions.users.GetFullUserRequest("me")), 1.0)
            assert client.is_connected()  # nothing noticed the silence
        entries = server.log.requests("users.getFullUser")
        assert [(e.outcome, e.executed) for e in entries] == [(outcome, executed)]
