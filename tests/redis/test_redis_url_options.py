"""Redis URL query options are checked at construction.

A misspelled option (``?timout=0.5``) was passed on by redis-py to its connection class, which
raised ``TypeError: AbstractConnection.__init__() got an unexpected keyword argument`` at the
first connection: ``connect()`` and every call failed, with ``storage_fallback="local"`` too.
Now construction raises ``GuardConfigError`` naming the field and the option; options redis-py
does take still reach it, and a client built with them connects and calls over real sockets.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import GuardConfigError
from telethon_guard.storage.redis import RedisStorage, from_url
from telethon_guard.testing import TelegramTestServer


@pytest.mark.parametrize("fallback", ["local", "fail"])
def test_a_mistyped_option_is_refused_at_construction(redis_url: str, fallback: str) -> None:
    with pytest.raises(GuardConfigError) as e:
        GuardedTelegramClient(None, 1, "x", storage=f"{redis_url}?timout=0.5",
                              storage_fallback=fallback)
    assert e.value.field == "storage"
    assert "'timout'" in str(e.value) and "'timeout'" in str(e.value)  # names it, suggests


@pytest.mark.parametrize("build", [
    lambda url: from_url(f"{url}?prefix=p&bogus=1"),
    lambda url: RedisStorage(url=f"{url}?bogus=1"),
    lambda url: from_url("rediss://127.0.0.1:6379/0?ssl_cert_reqs=none&bogus=1"),
])
def test_every_way_of_giving_a_url_checks_its_options(redis_url: str, build: object) -> None:
    with pytest.raises(GuardConfigError, match="'bogus'"):
        build(redis_url)  # type: ignore[operator]


async def test_options_redis_py_takes_still_work_over_a_real_connection(
        redis_url: str, prefix: str) -> None:
    url = (f"{redis_url}?timeout=0.5&prefix={prefix}&client_name=tg-guard-test"
           "&socket_keepalive=true&health_check_interval=5")
    async with TelegramTestServer() as server:
        client = server.client(GuardedTelegramClient,
                               session=server.session(server.world.user_id("alice")),
                               storage=url, storage_fallback="fail", deadline=5)
        try:
            await asyncio.wait_for(client.connect(), 10)
            messages = await asyncio.wait_for(client.get_messages("news", limit=1), 10)
            assert len(messages) == 1
            names = [c.get("name") for c in redis.Redis.from_url(redis_url).client_list()]
            assert "tg-guard-test" in names  # the option reached redis-py's connections
        finally:
            await asyncio.wait_for(client.disconnect(), 10)
