"""``client.guard.stats()`` on Redis storage, through a real Telethon client and the test
server: a 60 s FLOOD_WAIT shows in ``blocked`` (and another process sees it after
``refresh_view()``), an OPEN breaker shows in ``breakers``, and ``disconnect()`` closes the
Redis connections of a storage opened from a URL (counted on the Redis server)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
import telethon.errors as te
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import FloodWaitBlocked
from telethon_guard.storage.redis import from_url
from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

ME = functions.users.GetUsersRequest([types.InputUserSelf()])


async def _connections_named(url: str, name: str) -> int:
    admin = aioredis.Redis.from_url(url)
    try:
        return sum(1 for c in await admin.client_list() if c.get("name") == name)
    finally:
        await admin.aclose()


async def test_stats_show_redis_blocks_and_breakers_and_disconnect_closes_the_url_storage(
        redis_url: str, prefix: str) -> None:
    name = f"tg-guard-test-{uuid.uuid4().hex[:8]}"
    async with TelegramTestServer() as server:
        client = server.client(
            cls=GuardedTelegramClient, storage=f"{redis_url}?prefix={prefix}&client_name={name}",
            storage_fallback="fail", account="acct-stats", max_flood_wait=1.0,
            breaker_failure_threshold=1, breaker_open_seconds=30.0, retry_max_attempts=1,
            deadline=10.0, adaptive_pacing=False)
        await asyncio.wait_for(client.connect(), 10)
        try:
            await asyncio.wait_for(client(ME), 5)
            assert client.guard.stats()["blocked"] == {}
            server.faults.add(ErrorOnCalls("users.getUsers", 420, "FLOOD_WAIT_60", times=1))
            with pytest.raises((te.FloodWaitError, FloodWaitBlocked)):
                await asyncio.wait_for(client(ME), 5)
            blocked = client.guard.stats()["blocked"]
            assert len(blocked) == 1 and 55 < next(iter(blocked.values())) <= 60, blocked
            with pytest.raises(FloodWaitBlocked):  # refused locally: the block is in Redis
                await asyncio.wait_for(client(ME), 5)

            # another process (its own storage on the same prefix) sees it after a refresh
            other = from_url(f"{redis_url}?prefix={prefix}", storage_fallback="fail")
            try:
                assert other.flood_scopes() == {}
                await asyncio.wait_for(other.refresh_view(), 5)
                seen = other.flood_scopes()
                assert seen.keys() == blocked.keys() and 55 < next(iter(seen.values())) <= 60
            finally:
                await other.aclose()

            server.faults.add(ErrorOnCalls("help.getConfig", 500, "INTERNAL", times=1))
            with pytest.raises(te.ServerError):
                await asyncio.wait_for(client(functions.help.GetConfigRequest()), 5)
            breakers = client.guard.stats()["breakers"]
            assert list(breakers.values()) == ["OPEN"], breakers
            assert client.guard.unavailable_reason == "breaker OPEN"
            assert await _connections_named(redis_url, name) >= 1
        finally:
            await asyncio.wait_for(client.disconnect(), 10)
        assert await _connections_named(redis_url, name) == 0


async def test_stats_show_another_process_block_without_a_manual_refresh(
        redis_url: str, prefix: str) -> None:
    """Two guarded clients, each with its own Redis storage (its own connections) on one
    prefix, as two processes would be: a FLOOD_WAIT recorded by the first shows in the
    second's ``stats()["blocked"]`` by reading stats alone; reading stats in a tight loop
    starts at most one refresh per second (``stats()`` itself does no I/O)."""
    url = f"{redis_url}?prefix={prefix}"
    async with TelegramTestServer() as server:
        opts: dict[str, object] = dict(
            cls=GuardedTelegramClient, storage_fallback="fail", account="acct-view",
            max_flood_wait=1.0, retry_max_attempts=1, deadline=10.0, adaptive_pacing=False)
        first = server.client(storage=url, **opts)
        second = server.client(storage=url, **opts)
        await asyncio.wait_for(first.connect(), 10)
        await asyncio.wait_for(second.connect(), 10)
        try:
            assert second.guard.stats()["blocked"] == {}
            server.faults.add(ErrorOnCalls("users.getUsers", 420, "FLOOD_WAIT_60", times=1))
            with pytest.raises((te.FloodWaitError, FloodWaitBlocked)):
                await asyncio.wait_for(first(ME), 5)
            refresher = second.guard.pipeline.storage.view_refresher
            before = refresher.refreshes
            loop = asyncio.get_running_loop()
            start = loop.time()
            blocked: dict[str, float] = {}
            while not blocked:
                assert loop.time() - start < 5, "the other client's block never showed"
                blocked = second.guard.stats()["blocked"]
                await asyncio.sleep(0.01)
            took = loop.time() - start
            assert len(blocked) == 1 and 50 < next(iter(blocked.values())) <= 60, blocked
            # ~100 stats() calls per second: at most one refresh per second of reading
            assert refresher.refreshes - before <= took / refresher.max_age + 1, (
                refresher.refreshes - before, took)
        finally:
            await asyncio.wait_for(first.disconnect(), 10)
            await asyncio.wait_for(second.disconnect(), 10)
