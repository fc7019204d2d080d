"""Liveness (issue 10, item 2): a half-open connection is replaced, a loop stall recovered.

Real Telethon (guarded, and plain side by side) over real sockets against
``telethon_guard.testing``:

* the client's open connection goes silent for ever (``OnLiveConnections("silence")``, new
  connections work): with a call pending, the guard replaces the connection within
  ``LivenessPolicy.silent_bound`` of sending it, the call succeeds on the new connection and
  pushed updates arrive again, the ones lost in the silence exactly once (Telethon's gap
  recovery); plain Telethon gets no answer over the same time;
* the same on an idle connection: the watchdog's keepalive ping goes unanswered, the
  connection is replaced within ``idle_bound`` and updates resume without any call;
* a request that is not idempotent, in flight on the silenced connection, fails typed
  (``SilentConnectionMayHaveRun``, never sent again), while a read in flight with it succeeds;
* a ``messages.sendMessage`` in flight is re-sent with the same ``random_id``: stored once
  (silence: the re-sent copy; "very old": the first copy, the re-sent one refused as
  ``RANDOM_ID_DUPLICATE`` and raised as ``AlreadyDelivered``);
* replies stamped "very old" (``ClockSkew(-400, judge_client=False)``: what a client whose
  event loop stalled for minutes sees) are dropped by Telethon while other traffic flows:
  the guard replaces the connection within the bound and the call succeeds; plain Telethon's
  call never completes; with updates still flowing after the stall (so the connection is never
  silent), the "replies ignored" rule recovers the call within the same bound;
* a real blocking stall of the event loop (longer than the liveness timeout) with a reply
  waiting in the socket buffer: the call completes, no connection replaced.

Every wait is bounded. Measured detection / recovery times are printed (``-s``) and reported
in README "Lifecycle" and benchmarks/README.md (benchmarks/liveness_times.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from telethon import TelegramClient, events
from telethon.tl import functions

from telethon_guard import GuardedTelegramClient
from telethon_guard._telethon import main_sender
from telethon_guard.errors import AlreadyDelivered
from telethon_guard.liveness import LivenessPolicy, SilentConnectionMayHaveRun
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import ClockSkew, OnLiveConnections

T = 20.0  # bound of any wait that should succeed, seconds
TIMEOUT = 2.0  # liveness_timeout in these tests, seconds
KEEPALIVE = 1.0  # keepalive_interval in these tests, seconds
POLICY = LivenessPolicy(timeout=TIMEOUT, keepalive=KEEPALIVE)
LOOP_SLACK = 1.0  # event-loop latency on a loaded shared machine, on top of a bound (s)
RECONNECT = 3.0  # allowance (s) for the paced reconnect + one round trip on a busy machine


async def until(cond: Callable[[], bool], seconds: float = T) -> None:
    for _ in range(int(seconds / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


def guarded(server: TelegramTestServer, user: str = "bob", **kwargs: Any) -> Any:
    return server.client(GuardedTelegramClient,
                         session=server.session(server.world.user_id(user)),
                         liveness_timeout=TIMEOUT, keepalive_interval=KEEPALIVE, deadline=T,
                         **kwargs)


def listen(client: TelegramClient) -> list[str]:
    got: list[str] = []

    async def on_message(event: Any) -> None:
        got.append(event.raw_text)

    client.add_event_handler(on_message, events.NewMessage())
    return got


async def first_update_received(server: TelegramTestServer, client: TelegramClient,
                                got: list[str]) -> Any:
    """``get_me`` answered, then one pushed message ("before") received (bounded waits);
    returns the client's main sender."""
    sender = main_sender(client)
    await asyncio.wait_for(client.get_me(), T)
    assert server.push_message("carol", "bob", "before").pushed == 1
    await until(lambda: got == ["before"])
    return sender


def skew_replies(server: TelegramTestServer, seconds: float) -> None:
    """For ``seconds`` from now, what the server sends is 400 s old (Telethon drops such
    replies as "very old"); the client's messages are not judged."""
    server.faults.add(ClockSkew(-400, start=server.faults.now(), duration=seconds,
                                judge_client=False))


def last_conn(server: TelegramTestServer) -> int:
    return server.log.events("opened")[-1].conn_id


def silence(server: TelegramTestServer, conn_id: int) -> OnLiveConnections:
    rule = OnLiveConnections("silence", start=server.faults.now(), conn_ids={conn_id})
    server.faults.add(rule)
    return rule


async def test_silenced_connection_with_a_call_pending_is_replaced_and_updates_resume() -> None:
    async with TelegramTestServer() as server:
        client = guarded(server)
        got = listen(client)
        async with client:
            sender = await first_update_received(server, client, got)
            rule = silence(server, last_conn(server))
            assert server.push_message("carol", "bob", "lost 1").pushed == 0
            sent = time.monotonic()
            me = await asyncio.wait_for(client.get_me(), T)
            answered = time.monotonic()
            assert me is not None
            assert sender.liveness_replacements == 1
            detected = sender.liveness_replaced_at - sent
            assert detected <= POLICY.silent_bound + LOOP_SLACK
            assert detected >= TIMEOUT - 0.3  # not before the bound (the tick's slack)
            assert answered - sent <= POLICY.silent_bound + RECONNECT
            assert len(rule.hit) == 1 and server.log.connections_opened() == 2
            assert server.log.packets_silenced(next(iter(rule.hit))) >= 1
            # updates: the lost one arrives (gap recovery) when the next reveals the gap
            assert server.push_message("carol", "bob", "lost 2").pushed == 1
            await until(lambda: len(got) >= 3)
            await asyncio.sleep(0.3)
            assert sorted(got) == ["before", "lost 1", "lost 2"]  # each exactly once
            print(f"\nsilent+pending: detected {detected:.2f} s, call answered "
                  f"{answered - sent:.2f} s after it was sent")


async def test_plain_telethon_side_by_side_never_answers_on_the_silenced_connection() -> None:
    async with TelegramTestServer() as server:
        plain: TelegramClient = server.client()
        await asyncio.wait_for(plain.connect(), T)
        async with plain:
            await asyncio.wait_for(plain.get_me(), T)
            silence(server, last_conn(server))
            with pytest.raises(asyncio.TimeoutError):  # the guard answered within this
                await asyncio.wait_for(plain.get_me(), POLICY.silent_bound + RECONNECT)
            assert server.log.connections_opened() == 1  # Telethon never replaced it


async def test_idle_silenced_connection_is_replaced_by_the_keepalive_and_updates_resume() -> None:
    async with TelegramTestServer() as server:
        client = guarded(server)
        got = listen(client)
        async with client:
            sender = await first_update_received(server, client, got)
            last_message = time.monotonic()
            silence(server, last_conn(server))
            assert server.push_message("carol", "bob", "lost").pushed == 0
            assert POLICY.idle_bound is not None
            await until(lambda: sender.liveness_replacements == 1,
                        POLICY.idle_bound + RECONNECT)
            detected = sender.liveness_replaced_at - last_message
            assert detected <= POLICY.idle_bound + LOOP_SLACK
            # the new connection gets pushed updates without any call from us
            await until(lambda: server.log.connections_opened() == 2)
            pushed, tries = 0, 0
            for _ in range(int(T / 0.1)):  # until the new connection asked for updates
                tries += 1
                # a distinct text per try: one pushed before the new connection asked for
                # updates is a message too, which the client may fetch with the difference
                pushed = server.push_message("carol", "bob", f"after {tries}").pushed
                if pushed:
                    break
                await asyncio.sleep(0.1)
            assert pushed == 1
            await until(lambda: f"after {tries}" in got)
            await asyncio.sleep(0.3)
            assert len(got) == len(set(got)), got  # each exactly once
            assert {"before", "lost", f"after {tries}"} <= set(got), got
            assert set(got) <= {"before", "lost"} | {f"after {i}" for i in range(1, tries + 1)}
            print(f"\nidle silent: detected {detected:.2f} s after the last message")


async def test_non_idempotent_call_in_flight_fails_typed_and_a_read_is_resent() -> None:
    async with TelegramTestServer() as server:
        client = guarded(server)
        async with client:
            await asyncio.wait_for(client.get_me(), T)
            silence(server, last_conn(server))
            unsafe = asyncio.ensure_future(client(functions.account.UpdateStatusRequest(False)))
            read = asyncio.ensure_future(client.get_me())
            with pytest.raises(SilentConnectionMayHaveRun):
                await asyncio.wait_for(unsafe, T)
            assert (await asyncio.wait_for(read, T)) is not None
            assert server.log.count("account.updateStatus") == 0  # never sent again


@pytest.mark.parametrize("fault", ["silence", "very old"])
async def test_send_in_flight_is_resent_with_the_same_random_id_and_delivered_once(
    fault: str,
) -> None:
    # silence: the first copy never reached the world, the re-sent one is stored; very old:
    # the first copy was stored (its reply dropped), the re-sent one is refused as
    # RANDOM_ID_DUPLICATE, which the guard raises as AlreadyDelivered. Either way: once.
    async with TelegramTestServer() as server:
        client = guarded(server)
        async with client:
            await asyncio.wait_for(client.get_me(), T)
            carol = server.world.user_id("carol")
            peer = await asyncio.wait_for(client.get_input_entity("carol"), T)
            if fault == "silence":
                silence(server, last_conn(server))
            else:
                skew_replies(server, 1.0)
            request = functions.messages.SendMessageRequest(peer, "once", random_id=4242)
            try:
                await asyncio.wait_for(client(request), T)
                outcome = "sent"
            except AlreadyDelivered as e:
                assert e.random_id == 4242
                outcome = "already delivered"
            assert main_sender(client).liveness_replacements == 1
            stored = [m for m in server.world.sent_messages(peer=carol) if m.text == "once"]
            assert len(stored) == 1 and stored[0].random_id == 4242
            seen = server.log.requests("messages.sendMessage")
            assert {e.random_id for e in seen} == {4242}
            if fault == "very old":  # both copies reached the world: the second was refused
                assert [e.error_message for e in seen if e.error_message] == [
                    "RANDOM_ID_DUPLICATE"]
            assert outcome == ("sent" if fault == "silence" else "already delivered")


async def test_replies_dropped_as_very_old_are_recovered_within_the_bound() -> None:
    # judge_client=False: only what the server sends is 400 s old, as replies look to a
    # client whose event loop stalled for minutes; after 1.5 s the clock is right again.
    async with TelegramTestServer() as server:
        client = guarded(server)
        async with client:
            sender = main_sender(client)
            await asyncio.wait_for(client.get_me(), T)
            ok_before = server.log.count("users.getUsers", outcome="ok")
            skew_replies(server, 1.5)
            sent = time.monotonic()
            call = asyncio.ensure_future(client.get_me())
            # the server runs it and answers; Telethon drops the answer as "very old"
            await until(lambda: server.log.count("users.getUsers", outcome="ok") > ok_before)
            assert not call.done()
            me = await asyncio.wait_for(call, T)
            answered = time.monotonic()
            assert me is not None
            assert sender.liveness_replacements == 1
            detected = sender.liveness_replaced_at - sent
            assert detected <= POLICY.silent_bound + LOOP_SLACK
            assert answered - sent <= POLICY.silent_bound + RECONNECT
            print(f"\nvery old: detected {detected:.2f} s, answered {answered - sent:.2f} s")


async def test_reply_dropped_as_very_old_amid_live_traffic_is_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Updates keep arriving after the skew ends, so the connection is never silent: only the
    # "replies ignored" rule can recover the call whose reply Telethon dropped.
    async with TelegramTestServer() as server:
        client = guarded(server)
        got = listen(client)
        async with client:
            sender = main_sender(client)
            await asyncio.wait_for(client.get_me(), T)
            skew_replies(server, 1.0)
            sent = time.monotonic()
            call = asyncio.ensure_future(client.get_me())
            await asyncio.sleep(1.1)  # the skew is over; its reply was dropped
            n = 0
            while not call.done() and time.monotonic() - sent < T:
                n += 1
                server.push_message("carol", "bob", f"traffic {n}")  # accepted messages
                await asyncio.sleep(0.25)
            assert (await asyncio.wait_for(call, T)) is not None
            assert sender.liveness_replacements == 1
            detected = sender.liveness_replaced_at - sent
            assert detected <= POLICY.silent_bound + LOOP_SLACK
            assert any("replies ignored" in r.getMessage() for r in caplog.records)
            assert len(got) >= 3  # the traffic really flowed before the replacement


async def test_plain_telethon_never_recovers_a_reply_dropped_as_very_old() -> None:
    async with TelegramTestServer() as server:
        plain: TelegramClient = server.client()
        await asyncio.wait_for(plain.connect(), T)
        async with plain:
            await asyncio.wait_for(plain.get_me(), T)
            skew_replies(server, 1.5)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(plain.get_me(), POLICY.silent_bound + RECONNECT)


async def test_a_blocking_loop_stall_is_not_taken_for_a_silent_connection() -> None:
    async with TelegramTestServer() as server:
        client = guarded(server)
        async with client:
            sender = main_sender(client)
            await asyncio.wait_for(client.get_me(), T)
            call = asyncio.ensure_future(client.get_me())
            await asyncio.sleep(0.05)  # the request is on the wire
            # a blocking handler; the server (same loop) answers once the loop runs again
            time.sleep(TIMEOUT + 1.0)  # noqa: ASYNC251 -- the stall under test
            me = await asyncio.wait_for(call, T)
            assert me is not None
            assert sender.liveness_replacements == 0
            assert server.log.connections_opened() == 1
