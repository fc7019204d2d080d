"""Pool health after a tenant's cool-down, and "idle but fine" told apart from "down".

Before: once ``broken_retry_after`` had passed, ``state_of`` said ``idle`` while ``health()``
and ``tenant_stats`` still said ``broken`` (``available=False``, ``broken_for=0.0``). And a
``/health`` built on ``health()`` flagged every idle tenant, since a tenant without a client
is not ``available``. Now the snapshot uses the same state as ``state_of``, and
``TenantStats.down`` / ``health(down_only=True)`` name only tenants in trouble.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import TenantUnavailableError
from telethon_guard.pool import GuardedClientPool
from telethon_guard.testing import TelegramTestServer

from ._client_helpers import BOUND, bounded


async def wait_until(predicate: Callable[[], bool], seconds: float = BOUND) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_health_after_the_cool_down_and_idle_versus_down() -> None:
    async with TelegramTestServer() as server:
        def factory(tenant: str) -> Any:
            if tenant == "vault":
                raise RuntimeError("vault down")
            return server.client(GuardedTelegramClient, session=server.session())

        async with GuardedClientPool(factory, broken_retry_after=0.3,
                                     idle_timeout=0.2) as pool:
            with pytest.raises(TenantUnavailableError):
                await bounded(pool.call("vault", lambda c: c.get_me()))
            async with pool.lease("good") as client:
                assert (await bounded(client.get_me())).id
                st = pool.tenant_stats("vault")
                assert (st.state, st.available, st.down) == ("broken", False, True)
                assert st.broken_for > 0
                assert pool.health(down_only=True) == {"vault": "broken"}
                assert pool.tenant_stats("good").down is False
            # The cool-down passes: every view says idle (the next lease retries).
            await wait_until(lambda: pool.state_of("vault") == "idle")
            st = pool.tenant_stats("vault")
            assert (st.state, st.unavailable_reason, st.broken_for, st.down) == (
                "idle", "idle", 0.0, False)
            assert pool.health()["vault"] == "idle"
            # "good" goes idle (no lease for idle_timeout): not available, but not down.
            await wait_until(lambda: pool.state_of("good") == "idle")
            good = pool.tenant_stats("good")
            assert (good.available, good.down) == (False, False)
            assert pool.health() == {"vault": "idle", "good": "idle"}  # unchanged meaning
            assert pool.health(down_only=True) == {}
            # Broken again: down again, and the lease is refused at once.
            with pytest.raises(TenantUnavailableError):
                await bounded(pool.call("vault", lambda c: c.get_me()))
            assert pool.health(down_only=True) == {"vault": "broken"}
