"""pool.workers() checks tenants with the (plain) factory at construction over real sockets:
the client it built is the one the first lease connects (the factory is not called twice)."""

from __future__ import annotations

from typing import Any

import pytest

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import GuardConfigError
from telethon_guard.pool import GuardedClientPool
from telethon_guard.testing import TelegramTestServer

from ._client_helpers import bounded


async def test_workers_probe_keeps_the_client_for_the_first_lease() -> None:
    async with TelegramTestServer() as server:
        ids = [server.world.register_account(None) for _ in range(2)]
        sessions = {i: server.session(uid) for i, uid in enumerate(ids)}
        calls: list[Any] = []

        def factory(tenant: int) -> Any:
            calls.append(tenant)
            return server.client(GuardedTelegramClient, session=sessions[tenant],
                                 storage=pool.storage, max_flood_wait=0)

        pool = GuardedClientPool(factory)
        async with pool:
            with pytest.raises(GuardConfigError, match="99"):
                pool.workers([0, 1, 99])
            router = pool.workers([0, 1])
            built = {t: pool.client_of(t) for t in (0, 1)}
            got = [await bounded(router.call("users.getUsers", lambda c: c.get_me()))
                   for _ in range(4)]
            assert sorted(m.id for m in got) == sorted(ids * 2)
            assert router.routed == {0: 2, 1: 2}
            assert {t: pool.client_of(t) for t in (0, 1)} == built  # the probed clients
            assert calls.count(0) == calls.count(1) == 1
