"""Plain, unmodified ``telethon.TelegramClient`` over real TCP against the connection
lifecycle faults (faults_lifecycle.py): what each fault does to a real client, pinned.

Each test shows the fault's effect (a connect that fails during the window and works after,
a call that gets no reply on a silenced connection while a new connection works...) with the
server log as ground truth. Every wait is bounded; windows are short (a few seconds).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import pytest
from telethon import TelegramClient, errors, events
from telethon.errors.common import InvalidBufferError

from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing._types import Stall
from telethon_guard.testing.faults import (
    ClockSkew,
    FaultPlan,
    LoginFlood,
    OnInit,
    OnLiveConnections,
    OnNewConnections,
    flood_wait,
)
from tests.testing.test_faults_telethon import loop_errors, never_retrieved

T = 10.0  # bound for a wait that should succeed, seconds
SILENT = 1.5  # how long we wait to conclude "no reply", seconds
BOT_TOKEN = "4242:lifecycle-token"


async def until(cond: Callable[[], bool]) -> None:
    """Poll ``cond`` every 20 ms; ``AssertionError`` if it is still false after ``T`` s."""
    for _ in range(int(T / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {T} s")


async def wait_until_plan_time(server: TelegramTestServer, seconds: float) -> None:
    """Sleep until the fault plan's clock reads ``seconds`` (bounded by the argument)."""
    await asyncio.sleep(max(0.0, seconds - server.faults.now()))


def port_down(server: TelegramTestServer, window: float) -> float:
    """Close the DC's port now for ``window`` s (``OnNewConnections("down")``, in effect
    when this returns); the plan-clock time at which it listens again."""
    rule = OnNewConnections("down", start=server.faults.now(), duration=window)
    server.faults.add(rule)
    assert rule.fired == 1
    return rule.window.start + window


async def connected(server: TelegramTestServer, **kwargs: Any) -> TelegramClient:
    client: TelegramClient = server.client(**kwargs)
    await asyncio.wait_for(client.connect(), T)
    return client


def last_opened(server: TelegramTestServer) -> int:
    return server.log.events("opened")[-1].conn_id


async def no_reply(awaitable: Any) -> None:
    """The call gets no answer within SILENT seconds."""
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(awaitable, SILENT)


# ---- new connections -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "after_packets", "detail"),
    [
        ("close", 1, "closed by fault plan after 1 packet(s)"),
        ("reset", 0, "closed by fault plan on connect"),
        ("refuse", 1, None),
        ("stall", 1, None),
    ],
)
async def test_connect_fails_while_new_connections_fail_and_works_after(
    how: str, after_packets: int, detail: str | None
) -> None:
    window = 2.5
    rule = OnNewConnections(how, duration=window, after_packets=after_packets)  # type: ignore[arg-type]
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        during: TelegramClient = server.client()
        with loop_errors() as caught:
            try:
                # Plain Telethon keeps reconnecting (close / reset / refuse) or waits for ever
                # (stall): connect() does not return while the fault lasts.
                with pytest.raises((asyncio.TimeoutError, ConnectionError)):
                    await asyncio.wait_for(during.connect(), 1.0)
                assert server.faults.now() < window, "the failed connect must be in the window"
            finally:
                await asyncio.wait_for(during.disconnect(), T)
            del during
            gc.collect()
            await asyncio.sleep(0)
        # Cancelled mid-reconnect, Telethon leaves its last connection error in a future
        # nobody awaits (collected here, so it cannot surface in a later test).
        strays = [c.get("exception") for c in never_retrieved(caught)]
        assert all(isinstance(e, (ConnectionError, InvalidBufferError)) for e in strays), caught
        assert rule.fired >= 1
        assert server.log.executed() == []  # nothing got through to the world
        if detail is not None:
            closed = {e.detail for e in server.log.events("closed")}
            # (a reconnect Telethon had just opened when disconnect() came: closed by client)
            assert detail in closed and closed <= {detail, "closed by client"}
        if how == "refuse":
            assert server.log.connections_refused() == rule.fired
        if how == "stall":
            assert server.log.connections_opened() == rule.fired == 1
            assert server.log.count() == 0  # never a byte read

        await wait_until_plan_time(server, window + 0.1)
        after = await connected(server)
        async with after:
            me = await asyncio.wait_for(after.get_me(), T)
        assert me is not None and server.log.count("help.getConfig", outcome="ok") == 1


async def test_plain_telethon_after_a_cancelled_connect_is_half_initialized() -> None:
    # Issue 10, case 1: connect() cancelled while new connections are closed after their
    # first packet. Telethon's sender keeps reconnecting on its own; once the fault is over
    # calls work, but connect() never got to start the update loop, so the account never
    # subscribed to updates (no updates.getState) and pushed messages reach nobody.
    window = 2.0
    plan = FaultPlan(OnNewConnections("close", duration=window))
    async with TelegramTestServer(faults=plan) as server:
        bob_id = server.world.user_id("bob")
        client: TelegramClient = server.client(session=server.session(bob_id))
        got: list[str] = []

        async def on_message(event: Any) -> None:
            got.append(event.raw_text)

        client.add_event_handler(on_message, events.NewMessage())
        with loop_errors() as caught:
            try:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(client.connect(), 1.0)
                assert client.is_connected()  # Telethon says connected
                await wait_until_plan_time(server, window + 0.2)
                me = await asyncio.wait_for(client.get_me(), T)  # calls work again
                assert me is not None and me.id == bob_id
                assert server.log.count("updates.getState") == 0
                assert server.push_message("carol", "bob", "lost").pushed == 0
                await asyncio.sleep(0.5)
                assert got == []
            finally:
                await asyncio.wait_for(client.disconnect(), T)
            del client
            gc.collect()
            await asyncio.sleep(0)
        strays = [c.get("exception") for c in never_retrieved(caught)]
        assert all(isinstance(e, ConnectionError) for e in strays), caught


async def test_port_down_refuses_tcp_until_the_window_ends_and_spares_open_connections() -> None:
    async with TelegramTestServer() as server:
        old = await connected(server)
        async with old:
            window = 2.0
            rule = OnNewConnections("down", start=server.faults.now(), duration=window)
            server.faults.add(rule)
            assert rule.fired == 1  # the port was closed before add() returned
            host, port = server.dcs[0].host, server.dcs[0].port
            with pytest.raises(ConnectionRefusedError):  # at once, no tick to wait for
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), T)
                writer.close()
            ends = rule.window.start + window
            refused: TelegramClient = server.client(connection_retries=1, retry_delay=0.1)
            try:
                with pytest.raises(ConnectionError, match="Connection to Telegram failed"):
                    await asyncio.wait_for(refused.connect(), T)
                assert server.faults.now() < ends, "the refused connect must be in the window"
            finally:
                await asyncio.wait_for(refused.disconnect(), T)
            assert server.log.connections_opened() == 1  # the OS refused: the server saw none
            # the open connection is untouched
            assert (await asyncio.wait_for(old.get_me(), T)) is not None

            await wait_until_plan_time(server, ends + 0.2)
            after = await connected(server)  # listening again, same port
            async with after:
                assert (await asyncio.wait_for(after.get_me(), T)) is not None
        assert server.log.connections_opened() == 2


async def test_port_down_from_the_start_holds_when_the_server_is_up() -> None:
    # A plan given at construction: the port is already closed when `async with` returns,
    # with no tick to wait for (a user's "unreachable DC" test must not depend on yielding).
    rule = OnNewConnections("down")
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        assert rule.fired == 1
        host, port = server.dcs[0].host, server.dcs[0].port
        with pytest.raises(ConnectionRefusedError):
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), T)
            writer.close()
        assert server.log.connections_opened() == 0


# ---- open connections ----------------------------------------------------------------------


async def test_silenced_connection_gets_no_reply_while_a_new_connection_works() -> None:
    async with TelegramTestServer() as server:
        old = await connected(server)
        async with old:
            await asyncio.wait_for(old.get_me(), T)
            old_conn = last_opened(server)
            rule = OnLiveConnections("silence", start=server.faults.now())  # for ever
            server.faults.add(rule)
            executed = len(server.log.executed())

            await no_reply(old.get_me())
            assert old.is_connected()  # Telethon sees an open connection
            assert server.log.packets_silenced(old_conn) >= 1
            assert len(server.log.executed()) == executed  # the call never reached the world

            new = await connected(server)
            async with new:
                assert (await asyncio.wait_for(new.get_me(), T)) is not None
            assert rule.hit == {old_conn}
            # still silent: no reconnect by Telethon, no answer
            await no_reply(old.get_me())
            assert server.log.connections_opened() == 2


async def listening_client(
    server: TelegramTestServer, user: str
) -> tuple[TelegramClient, list[Any]]:
    """A connected client of directory user ``user`` recording its NewMessage events."""
    client: TelegramClient = server.client(session=server.session(server.world.user_id(user)))
    got: list[Any] = []

    async def on_message(event: Any) -> None:
        got.append(event.raw_text)

    client.add_event_handler(on_message, events.NewMessage())
    await asyncio.wait_for(client.connect(), T)
    return client, got


async def test_silenced_connection_loses_pushed_updates_while_a_new_one_gets_them() -> None:
    async with TelegramTestServer() as server:
        old, old_got = await listening_client(server, "bob")
        try:
            assert server.push_message("carol", "bob", "before").pushed == 1
            await until(lambda: bool(old_got))
            assert old_got == ["before"]
            server.faults.add(OnLiveConnections("silence", start=server.faults.now()))
            assert server.push_message("carol", "bob", "lost").pushed == 0
            new, new_got = await listening_client(server, "bob")
            try:
                assert server.push_message("carol", "bob", "after").pushed == 1
                await until(lambda: bool(new_got))
                assert new_got == ["after"]
            finally:
                await asyncio.wait_for(new.disconnect(), T)
            await asyncio.sleep(0.3)
            assert old_got == ["before"]  # nothing more reached the silenced connection
        finally:
            await asyncio.wait_for(old.disconnect(), T)


async def test_silence_of_one_connection_for_a_while_then_it_answers_again() -> None:
    async with TelegramTestServer() as server:
        a = await connected(server)
        a_conn = last_opened(server)
        b = await connected(server)
        async with a, b:
            rule = OnLiveConnections(
                "silence", start=server.faults.now(), duration=2.0, conn_ids={a_conn}
            )
            server.faults.add(rule)
            await no_reply(a.get_me())
            assert (await asyncio.wait_for(b.get_me(), T)) is not None  # b's open connection
            await wait_until_plan_time(server, rule.window.start + 2.1)
            # the window is over: the same TCP connection answers new requests again
            assert (await asyncio.wait_for(a.get_me(), T)) is not None
        assert rule.hit == {a_conn}
        assert server.log.connections_opened() == 2  # nobody reconnected


async def test_silence_of_one_account_spares_the_other_clients() -> None:
    async with TelegramTestServer() as server:
        alice_id, bob_id = server.world.user_id("alice"), server.world.user_id("bob")
        alice = await connected(server, session=server.session(alice_id))
        bob = await connected(server, session=server.session(bob_id))
        async with alice, bob:
            server.faults.add(
                OnLiveConnections("silence", start=server.faults.now(), account=alice_id)
            )
            await no_reply(alice.get_me())
            me = await asyncio.wait_for(bob.get_me(), T)
            assert me is not None and me.id == bob_id


async def test_stalled_connection_delivers_late_when_the_stall_ends() -> None:
    async with TelegramTestServer() as server:
        client = await connected(server)
        async with client:
            await asyncio.wait_for(client.get_me(), T)
            stall = 1.5
            server.faults.add(
                OnLiveConnections("stall", start=server.faults.now(), duration=stall)
            )
            started = time.monotonic()
            me = await asyncio.wait_for(client.get_me(), T)
            late = time.monotonic() - started
        assert me is not None
        assert late >= stall - 0.3  # held until the stall ended, then answered
        assert server.log.connections_opened() == 1  # same connection


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_open_connections_dropped_and_telethon_reconnects(how: str) -> None:
    async with TelegramTestServer() as server:
        client = await connected(server)
        async with client:
            await asyncio.wait_for(client.get_me(), T)
            server.faults.add(OnLiveConnections(how, start=server.faults.now()))  # type: ignore[arg-type]
            await until(lambda: server.log.connections_closed() > 0)  # the server's tick
            assert [e.detail for e in server.log.events("closed")] == ["closed by fault plan"]
            # Telethon reconnects on its own; the next call works on a new connection
            assert (await asyncio.wait_for(client.get_me(), T)) is not None
        assert server.log.connections_opened() == 2


# ---- the init request ----------------------------------------------------------------------


async def test_stalled_init_request_blocks_connect_then_a_new_connect_works() -> None:
    async with TelegramTestServer(faults=FaultPlan(OnInit(Stall(), times=1))) as server:
        first: TelegramClient = server.client()
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(first.connect(), SILENT)
        finally:
            await asyncio.wait_for(first.disconnect(), T)
        assert [e.outcome for e in server.log.requests("help.getConfig")] == ["stalled"]
        second = await connected(server)
        async with second:
            assert (await asyncio.wait_for(second.get_me(), T)) is not None
        assert [e.outcome for e in server.log.requests("help.getConfig")] == ["stalled", "ok"]


async def test_init_request_answered_with_flood_wait() -> None:
    plan = FaultPlan(OnInit(flood_wait(30), times=1))
    async with TelegramTestServer(faults=plan) as server:
        first: TelegramClient = server.client()
        try:
            with pytest.raises(errors.FloodWaitError) as info:
                await asyncio.wait_for(first.connect(), T)
            assert info.value.seconds == 30
        finally:
            await asyncio.wait_for(first.disconnect(), T)
        second = await connected(server)
        async with second:
            assert (await asyncio.wait_for(second.get_me(), T)) is not None
        assert [e.error_message for e in server.log.requests("help.getConfig")] == [
            "FLOOD_WAIT_30",
            None,
        ]


# ---- login floods --------------------------------------------------------------------------


async def bot_login_attempt(server: TelegramTestServer) -> TelegramClient:
    """A freshly started process: a new client on a new auth key (full DH exchange), logging
    in as the bot. Returns the connected client; raises what sign_in raises."""
    client: TelegramClient = server.client(
        session=server.empty_session(), flood_sleep_threshold=0  # never sleep a FLOOD_WAIT
    )
    await asyncio.wait_for(client.connect(), T)
    try:
        await asyncio.wait_for(client.sign_in(bot_token=BOT_TOKEN), T)
    except BaseException:
        await asyncio.wait_for(client.disconnect(), T)
        raise
    return client


async def test_bot_login_flood_grows_with_every_restart() -> None:
    rule = LoginFlood(1658, factor=2)
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        waits = []
        for _ in range(3):  # a supervisor restarting a crashing bot
            with pytest.raises(errors.FloodWaitError) as info:
                await bot_login_attempt(server)
            waits.append(info.value.seconds)
        assert waits == [1658, 3316, 6632]
        logged = server.log.requests("auth.importBotAuthorization")
        assert [e.error_message for e in logged] == [
            "FLOOD_WAIT_1658", "FLOOD_WAIT_3316", "FLOOD_WAIT_6632"
        ]
        assert len({e.conn_id for e in logged}) == 3  # three processes, one attempt each
        assert [a.flood_wait for a in rule.attempts] == waits


async def test_bot_login_goes_through_after_waiting_the_flood_out() -> None:
    rule = LoginFlood(1, factor=2)
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        with pytest.raises(errors.FloodWaitError) as info:
            await bot_login_attempt(server)
        assert info.value.seconds == 1
        await asyncio.sleep(1.1)
        client = await bot_login_attempt(server)
        async with client:
            me = await asyncio.wait_for(client.get_me(), T)
        assert me is not None and me.bot
        assert [e.outcome for e in server.log.requests("auth.importBotAuthorization")] == [
            "rpc_error", "ok"
        ]


async def test_send_code_flood_for_a_phone_grows_across_processes() -> None:
    rule = LoginFlood(100, factor=3)
    async with TelegramTestServer(faults=FaultPlan(rule)) as server:
        waits = []
        for _ in range(2):  # two processes (Telethon remembers a flood within one client)
            client: TelegramClient = server.client(session=server.empty_session())
            await asyncio.wait_for(client.connect(), T)  # not logged in: no `async with`
            try:
                with pytest.raises(errors.FloodWaitError) as info:
                    await asyncio.wait_for(client.send_code_request("+1 555 0100"), T)
                waits.append(info.value.seconds)
            finally:
                await asyncio.wait_for(client.disconnect(), T)
        assert waits == [100, 300]
        assert [e.error_message for e in server.log.requests("auth.sendCode")] == [
            "FLOOD_WAIT_100", "FLOOD_WAIT_300"
        ]


# ---- server clock skew ---------------------------------------------------------------------


async def test_server_clock_ahead_makes_telethon_ignore_replies_as_very_new() -> None:
    async with TelegramTestServer() as server:
        client = await connected(server)
        async with client:
            await asyncio.wait_for(client.get_me(), T)
            server.faults.add(ClockSkew(60, start=server.faults.now()))
            ok_before = server.log.count("users.getUsers", outcome="ok")
            await no_reply(client.get_me())
            # the server executed and answered; Telethon dropped the answer as "very new"
            assert server.log.count("users.getUsers", outcome="ok") == ok_before + 1
            # a new client learns the server's time from its first bad_server_salt: it works
            fresh = await connected(server)
            async with fresh:
                assert (await asyncio.wait_for(fresh.get_me(), T)) is not None


async def test_replies_stamped_very_old_are_ignored() -> None:
    # judge_client=False: only what the server sends is 400 s old, as replies look to a
    # client whose event loop stalled for minutes.
    async with TelegramTestServer() as server:
        client = await connected(server)
        async with client:
            await asyncio.wait_for(client.get_me(), T)
            server.faults.add(ClockSkew(-400, start=server.faults.now(), judge_client=False))
            ok_before = server.log.count("users.getUsers", outcome="ok")
            await no_reply(client.get_me())
            assert server.log.count("users.getUsers", outcome="ok") == ok_before + 1


async def test_skewed_server_that_judges_the_client_makes_telethon_resync() -> None:
    # A consistent clock 400 s behind: the server answers the client's msg_ids with
    # bad_msg_notification 17 (too new); Telethon takes the offset from it and re-sends.
    async with TelegramTestServer() as server:
        client = await connected(server)
        async with client:
            await asyncio.wait_for(client.get_me(), T)
            server.faults.add(ClockSkew(-400, start=server.faults.now()))
            assert (await asyncio.wait_for(client.get_me(), T)) is not None
        assert server.stats["bad_msg_notification"] >= 1
