"""``unix://`` Redis URLs reach a Redis listening on a unix socket.

Every ``unix:///path`` URL was refused at construction ("Redis URL must specify one of the
following schemes"): rebuilding the URL without the guard's query options with ``urlunsplit``
dropped the ``//`` of a URL with no host (``unix:/path``). The test starts its own
``redis-server`` on a unix socket only (``--port 0``), bounded and killed afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from telethon_guard import GuardedTelegramClient
from telethon_guard.storage.redis import RedisStorage
from telethon_guard.testing import TelegramTestServer


@pytest.fixture
def unix_redis() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="tg-guard-unix-") as tmp:
        sock = str(Path(tmp) / "redis.sock")
        proc = subprocess.Popen([exe, "--port", "0", "--unixsocket", sock, "--save", "",
                                 "--appendonly", "no", "--dir", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if redis.Redis(unix_socket_path=sock, socket_timeout=1).ping():
                        break
                except (redis.RedisError, OSError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server on {sock} did not start")
                time.sleep(0.02)
            yield sock
        finally:
            proc.kill()
            proc.wait(5)


async def test_redis_storage_takes_a_unix_url(unix_redis: str) -> None:
    storage = RedisStorage(url=f"unix://{unix_redis}?db=1")
    try:
        assert await asyncio.wait_for(storage.client.ping(), 5)
    finally:
        await storage.aclose()


async def test_a_client_keeps_its_state_in_redis_over_a_unix_socket(unix_redis: str) -> None:
    url = f"unix://{unix_redis}?prefix=unixtest&timeout=1"
    async with TelegramTestServer() as server:
        client = server.client(GuardedTelegramClient,
                               session=server.session(server.world.user_id("alice")),
                               storage=url, storage_fallback="fail", deadline=5,
                               rate_limits=((100, 1.0),))
        try:
            await asyncio.wait_for(client.connect(), 10)
            messages = await asyncio.wait_for(client.get_messages("news", limit=1), 10)
            assert len(messages) == 1
        finally:
            await asyncio.wait_for(client.disconnect(), 10)
    keys = redis.Redis(unix_socket_path=unix_redis, socket_timeout=5).keys("*unixtest*")
    assert keys  # the guard's state went to this Redis, not to a local fallback
