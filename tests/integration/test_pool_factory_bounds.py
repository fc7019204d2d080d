"""An async session factory that never returns cannot hang a lease or the pool's close.

Before: ``_create`` awaited the factory with no bound (``connect_timeout`` wrapped only
``connect()``), so the lease waited forever, ``health()`` said ``connecting`` forever, and
``close()`` returned after ``close_timeout`` with the lease still waiting. Now the factory's
await is bounded by ``connect_timeout`` (the tenant is broken: ``TenantUnavailableError``
from a ``TimeoutError``) and ``close()`` ends it (``PoolClosedError``). Another tenant, served
by the test server over real sockets, is not held up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.errors import PoolClosedError, TenantUnavailableError
from telethon_guard.pool import GuardedClientPool
from telethon_guard.testing import TelegramTestServer

from ._client_helpers import BOUND, bounded


class HangingFactory:
    """``"stuck"`` never returns (until cancelled); any other tenant gets a real client."""

    def __init__(self, server: TelegramTestServer) -> None:
        self.server = server
        self.cancelled = 0
        self.entered = asyncio.Event()

    async def __call__(self, tenant: str) -> Any:
        if tenant != "stuck":
            return self.server.client(GuardedTelegramClient, session=self.server.session())
        self.entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_a_factory_that_never_returns_breaks_the_tenant_after_connect_timeout() -> None:
    async with TelegramTestServer() as server:
        factory = HangingFactory(server)
        async with GuardedClientPool(factory, connect_timeout=0.5, close_timeout=1) as pool:
            stuck = asyncio.ensure_future(pool.call("stuck", lambda c: c.get_me()))
            await bounded(factory.entered.wait())
            async with pool.lease("ok") as client:  # not held up by the stuck factory
                assert (await bounded(client.get_me())).id
            with pytest.raises(TenantUnavailableError) as e:
                await asyncio.wait_for(stuck, BOUND)
            assert isinstance(e.value.__cause__, TimeoutError)
            assert "connect_timeout" in str(e.value)
            assert factory.cancelled == 1  # the factory's await was ended, not abandoned
            assert pool.state_of("stuck") == "broken" and pool.health()["stuck"] == "broken"
            assert pool.health()["ok"] is None


@pytest.mark.parametrize("connect_timeout", [0.5, 3600.0])
async def test_close_ends_a_lease_waiting_in_the_factory(connect_timeout: float) -> None:
    async with TelegramTestServer() as server:
        factory = HangingFactory(server)
        pool = GuardedClientPool(factory, connect_timeout=connect_timeout, close_timeout=3600)
        stuck = asyncio.ensure_future(pool.call("stuck", lambda c: c.get_me()))
        await bounded(factory.entered.wait())
        assert pool.health() == {"stuck": "connecting"}
        await asyncio.wait_for(pool.close(), BOUND)  # not close_timeout: no lease is left
        with pytest.raises(PoolClosedError):
            await asyncio.wait_for(stuck, BOUND)
        assert factory.cancelled == 1
