"""The default account key is the logged-in user (issue 12, "What to build" 3), with real
Telethon over real sockets against ``telethon_guard.testing``; ``server.log`` is the ground
truth of what each client sent. Every wait is bounded.

* two sessions of one user (two auth keys) sharing one storage share a FLOOD_WAIT: the second
  refuses locally, nothing sent;
* before login the key is the auth key's (``key:<id>``), after ``start(bot_token=...)`` the
  bot's user id (``user:<id>``);
* a client restarted on the same file session uses ``user:<id>`` before its first request;
* an explicit ``account=`` still wins over the user id.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from telethon.sessions import SQLiteSession
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard._link import account_key
from telethon_guard.errors import FloodWaitBlocked
from telethon_guard.events import (
    GuardEvent,
    ReconnectAttempt,
    ReconnectSucceeded,
    RequestFinished,
    TransportErrorEvent,
)
from telethon_guard.storage.memory import MemoryStorage
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import ErrorOnCalls, Transport429Storm
from tests.integration._client_helpers import AT_ONCE, bounded, wait_until

HISTORY = "messages.getHistory"
QUICK = {"receive_updates": False, "max_flood_wait": 1.0, "deadline": 10.0}


def history() -> functions.messages.GetHistoryRequest:
    return functions.messages.GetHistoryRequest(
        peer=types.InputPeerSelf(), offset_id=0, offset_date=None, add_offset=0, limit=1,
        max_id=0, min_id=0, hash=0)


@asynccontextmanager
async def connected(client: GuardedTelegramClient) -> AsyncIterator[GuardedTelegramClient]:
    """``connect()`` only (``async with client`` would run ``start()``, hence ``get_me()``)."""
    await bounded(client.connect())
    try:
        yield client
    finally:
        await bounded(client.disconnect())


def key_of(client: GuardedTelegramClient) -> str:
    return account_key(client, client.guard)


async def test_two_sessions_of_one_user_share_a_flood_wait() -> None:
    async with TelegramTestServer(dcs=1, strict=False) as server:
        user_id = server.world.register_account(None)
        shared = MemoryStorage()
        phone = server.client(GuardedTelegramClient, session=server.session(user_id),
                              storage=shared, **QUICK)
        backend = server.client(GuardedTelegramClient, session=server.session(user_id),
                                storage=shared, **QUICK)
        async with connected(phone), connected(backend):
            assert phone.session.auth_key.key_id != backend.session.auth_key.key_id
            for client in (phone, backend):
                me = await bounded(client.get_me())
                assert me.id == user_id
                assert key_of(client) == f"user:{user_id}"
            server.faults.add(ErrorOnCalls(HISTORY, 420, "FLOOD_WAIT_30", times=1))
            with pytest.raises(FloodWaitBlocked) as first:
                await bounded(phone(history()))
            assert first.value.from_server and first.value.seconds == 30
            sent = server.log.count(HISTORY)
            with pytest.raises(FloodWaitBlocked) as second:
                await bounded(backend(history()), AT_ONCE)
            assert not second.value.from_server and 25 <= second.value.retry_after <= 30
            assert server.log.count(HISTORY) == sent == 1  # the second sent nothing


async def test_before_login_the_auth_key_then_the_bot_user_id() -> None:
    async with TelegramTestServer(dcs=1, strict=False) as server:
        client = server.client(GuardedTelegramClient, session=server.empty_session(),
                               durable_storage=False, **QUICK)
        async with connected(client):
            key_id = client.session.auth_key.key_id
            assert key_of(client) == f"key:{key_id:016x}"  # connected, not logged in
            await bounded(client(functions.help.GetConfigRequest()))
            assert key_of(client) == f"key:{key_id:016x}"
            await bounded(client.start(bot_token="4242:AAbbCC"))
            me = await bounded(client.get_me())
            assert me.bot
            assert key_of(client) == f"user:{me.id}"


async def test_connection_events_after_login_carry_the_user_key() -> None:
    # A trial saw TransportErrorEvent / ReconnectAttempt / ReconnectSucceeded keep
    # 'key:<auth key>' after login while requests carried 'user:<id>': the sender's key was
    # fixed when it was built (before login). A -429 storm after login, real sockets.
    async with TelegramTestServer(dcs=1, strict=False) as server:
        seen: list[GuardEvent] = []
        client = server.client(GuardedTelegramClient, session=server.empty_session(),
                               durable_storage=False, on_event=seen.append, **QUICK)
        async with connected(client):
            await bounded(client.start(bot_token="4242:AAbbCC"))
            me = await bounded(client.get_me())
            plan = server.faults
            assert plan.started_at is not None
            plan.add(Transport429Storm(start=time.monotonic() - plan.started_at, duration=0.3))
            await wait_until(lambda: any(isinstance(e, ReconnectSucceeded) for e in seen))
            await bounded(client(history()))
        connection_events = [e for e in seen if isinstance(
            e, (TransportErrorEvent, ReconnectAttempt, ReconnectSucceeded))]
        kinds = {type(e) for e in connection_events}
        assert kinds == {TransportErrorEvent, ReconnectAttempt, ReconnectSucceeded}, seen
        assert {e.account for e in connection_events} == {f"user:{me.id}"}, connection_events
        finished = [e for e in seen if isinstance(e, RequestFinished) and e.method == HISTORY]
        assert [e.account for e in finished] == [f"user:{me.id}"]


def request_keys(client: GuardedTelegramClient) -> list[tuple[str, str | None]]:
    """(method, account key) of every call the client's pipeline finishes from now on."""
    seen: list[tuple[str, str | None]] = []

    def note(event: object) -> None:
        if isinstance(event, RequestFinished):
            seen.append((event.method, event.account))

    client.guard.events.subscribe(note)
    return seen


async def test_a_restarted_file_session_uses_the_user_key_before_its_first_request(
        tmp_path: Path) -> None:
    async with TelegramTestServer(dcs=1, strict=False) as server:
        user_id = server.world.register_account(None)
        source = server.session(user_id)
        path = str(tmp_path / "svc")
        session = SQLiteSession(path)
        session.set_dc(source.dc_id, source.server_address, source.port)
        session.auth_key = source.auth_key
        session.save()
        session.close()
        user_key = f"user:{user_id}"
        first = server.client(GuardedTelegramClient, session=SQLiteSession(path), **QUICK)
        first_keys = request_keys(first)
        async with connected(first):  # the file has no self row yet: learnt from get_me()
            await bounded(first.get_me())
            assert key_of(first) == user_key
        assert first_keys[0] == ("help.getConfig", f"key:{source.auth_key.key_id:016x}")
        assert first_keys[-1][1] == user_key
        again = server.client(GuardedTelegramClient, session=SQLiteSession(path), **QUICK)
        again_keys = request_keys(again)
        async with connected(again):  # the self row Telethon stored at disconnect
            await bounded(again(history()))
        assert again_keys and again_keys[-1][0] == HISTORY
        assert {key for _, key in again_keys} == {user_key}, again_keys  # from the first one
        assert server.log.count(HISTORY, account=user_id) == 1


async def test_an_explicit_account_wins_over_the_user_id() -> None:
    async with TelegramTestServer(dcs=1, strict=False) as server:
        client = server.client(GuardedTelegramClient, account="tenant-7", **QUICK)
        async with connected(client):
            assert key_of(client) == "tenant-7"
            await bounded(client.get_me())
            assert key_of(client) == "tenant-7"
