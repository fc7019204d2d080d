"""Redis errors that are not connection errors are "storage unavailable" too.

A wrong database index (``DB index is out of range`` on ``SELECT``) and a server on the port
that does not speak Redis (an HTTP server answering ``400 Bad Request``) must follow the
``on_unavailable`` / ``storage_fallback`` policy: fall back locally with one event and one log
line, or raise ``StorageUnavailableError`` from the redis-py error. A failing Lua script of
ours also falls back, logged at ERROR with the server's message; ``NOSCRIPT`` is a reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from redis import exceptions as rexc
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import StorageUnavailableError
from telethon_guard.events import EventBus, GuardEvent, StorageFallback
from telethon_guard.storage import LimitSpec
from telethon_guard.storage.redis import RedisStorage, _Script, from_url
from telethon_guard.testing.server import TelegramTestServer

SPEC = [LimitSpec("acct:7", ((2, 1.0),))]
TIMEOUT = 0.5


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    """A TCP server that answers anything with an HTTP 400 and closes (not Redis)."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.read(1024), 1.0)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


def bad_urls(redis_url: str, http_port: int) -> dict[str, str]:
    base = redis_url.rsplit("/", 1)[0]
    return {"db99": f"{base}/99", "http": f"redis://127.0.0.1:{http_port}/0"}


def fallbacks(events: list[GuardEvent]) -> list[StorageFallback]:
    return [e for e in events if isinstance(e, StorageFallback)]


@pytest.mark.parametrize("which", ["db99", "http"])
async def test_local_policy_falls_back_once(redis_url: str, http_port: int, which: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="telethon_guard")
    events: list[GuardEvent] = []
    st = from_url(bad_urls(redis_url, http_port)[which], timeout=TIMEOUT, probe_interval=30.0,
                  on_unavailable="local", events=EventBus([events.append]))
    try:
        first = await asyncio.wait_for(st.reserve(SPEC), 5)
        assert isinstance(first.token, float) and first.delay == 0.0  # served locally
        assert not st.available
        second = await asyncio.wait_for(st.reserve(SPEC), 5)
        assert isinstance(second.token, float)
        third = await asyncio.wait_for(st.reserve(SPEC), 5)
        assert third.delay > 0.5  # the local limiter counts: 2 per second
        assert await asyncio.wait_for(st.flood_block("acct:7/method:m", 10.0), 5) > 9
        assert await asyncio.wait_for(st.flood_left("acct:7/method:m"), 5) > 9
        downs = fallbacks(events)
        assert [e.active for e in downs] == [True], downs
        # "Protocol Error" (redis-py's parser) or "Protocol error" (hiredis)
        expected = "db index" if which == "db99" else "protocol error"
        assert expected in downs[0].reason.lower(), downs[0].reason
        logged = [r for r in caplog.records if "StorageFallback" in r.getMessage()]
        assert len(logged) == 1, [r.getMessage() for r in logged]
        assert st.fallbacks == 1
    finally:
        await st.aclose()


@pytest.mark.parametrize("which", ["db99", "http"])
async def test_fail_policy_raises_storage_unavailable(redis_url: str, http_port: int,
                                                      which: str) -> None:
    st = from_url(bad_urls(redis_url, http_port)[which], timeout=TIMEOUT, probe_interval=30.0,
                  on_unavailable="fail")
    try:
        with pytest.raises(StorageUnavailableError) as e:
            await asyncio.wait_for(st.reserve(SPEC), 5)
        assert isinstance(e.value.__cause__, rexc.RedisError), repr(e.value.__cause__)
        assert e.value.backend == "redis"
        for aw in (st.flood_left("acct:7/method:m"), st.breaker_state("acct:7/dc:2")):
            with pytest.raises(StorageUnavailableError):
                await asyncio.wait_for(aw, 5)
    finally:
        await st.aclose()


@pytest.mark.parametrize("policy", ["local", "fail"])
@pytest.mark.parametrize("which", ["db99", "http"])
async def test_guarded_client_connect_and_call(redis_url: str, http_port: int, which: str,
                                               policy: str) -> None:
    """``storage="redis://..."`` through the client: connect() and calls follow
    ``storage_fallback`` instead of leaking redis-py exceptions."""
    events: list[GuardEvent] = []
    req = functions.users.GetUsersRequest([types.InputUserSelf()])
    async with TelegramTestServer() as server:
        client = server.client(cls=GuardedTelegramClient,
                               storage=bad_urls(redis_url, http_port)[which],
                               storage_fallback=policy, storage_timeout=TIMEOUT,
                               account=f"acct-bad-{which}", on_event=events.append,
                               deadline=10)
        try:
            if policy == "local":
                await asyncio.wait_for(client.connect(), 15)
                users = await asyncio.wait_for(client(req), 10)
                assert users
                assert [e.active for e in fallbacks(events)] == [True]
            else:
                with pytest.raises(StorageUnavailableError):
                    await asyncio.wait_for(client.connect(), 15)
                    await asyncio.wait_for(client(req), 10)
        finally:
            await asyncio.wait_for(client.disconnect(), 10)


async def test_failing_lua_script_falls_back_and_logs_error(
        redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="telethon_guard")
    events: list[GuardEvent] = []
    st = RedisStorage(url=redis_url, prefix=prefix, timeout=TIMEOUT, probe_interval=30.0,
                      events=EventBus([events.append]))
    st._flood_left = _Script("return nil + KEYS[1]")  # a bug in "our" script
    try:
        assert await asyncio.wait_for(st.flood_left("acct:7/method:m"), 5) == 0.0
        assert not st.available
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR
                  and "bug in telethon-guard" in r.getMessage()]
        assert len(errors) == 1 and "user_script" in errors[0].getMessage()
        assert [e.active for e in fallbacks(events)] == [True]
    finally:
        await st.aclose()


async def test_noscript_reloads_instead_of_falling_back(redis_url: str, prefix: str) -> None:
    events: list[GuardEvent] = []
    st = RedisStorage(url=redis_url, prefix=prefix, timeout=TIMEOUT,
                      events=EventBus([events.append]))
    # a script Redis has never seen: the first EVALSHA answers NOSCRIPT
    st._flood_left = _Script(f"-- {prefix}\nreturn '0'")
    try:
        assert await asyncio.wait_for(st.flood_left("acct:7/method:m"), 5) == 0.0
        assert st.available and not fallbacks(events)
    finally:
        await st.aclose()
