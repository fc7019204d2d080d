"""GuardedClientPool input at the boundary and bounded memory for failed tenants (pure logic:
factories that fail or know no tenant; no sockets are opened)."""

from __future__ import annotations

from typing import Any

import pytest

from telethon_guard import pool as pool_module
from telethon_guard.errors import GuardConfigError, TenantUnavailableError
from telethon_guard.pool import GuardedClientPool


def failing(tenant: Any) -> Any:
    raise RuntimeError("session store down")


async def test_failed_tenants_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "MAX_FAILED_TENANTS", 50)
    calls: list[Any] = []

    def factory(tenant: Any) -> Any:
        calls.append(tenant)
        raise RuntimeError("session store down")

    async with GuardedClientPool(factory, broken_retry_after=60) as pool:
        for tenant in range(300):  # ids taken from requests
            with pytest.raises(TenantUnavailableError):
                async with pool.lease(tenant):
                    pass
        assert len(pool) == 50
        assert pool.state_of(299) == "broken" and pool.state_of(0) == "new"
        # Within its cool-down a failed tenant is refused without calling the factory again.
        with pytest.raises(TenantUnavailableError):
            async with pool.lease(299):
                pass
        assert calls.count(299) == 1


class FakeTime:
    """Stands in for the pool module's ``time`` (its monotonic clock), moved by hand."""

    now = 1000.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


async def test_failed_tenants_are_forgotten_after_the_cool_down(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "time", FakeTime)
    async with GuardedClientPool(failing, broken_retry_after=30) as pool:
        for tenant in range(20):
            with pytest.raises(TenantUnavailableError):
                async with pool.lease(tenant):
                    pass
        assert len(pool) == 20
        FakeTime.now += 29.9
        with pytest.raises(TenantUnavailableError):
            async with pool.lease(0):  # still cooling down: kept and refused
                pass
        assert len(pool) == 20
        FakeTime.now += 0.2
        with pytest.raises(TenantUnavailableError):
            async with pool.lease("late"):
                pass
        assert len(pool) == 1 and pool.state_of("late") == "broken"


async def test_an_unhashable_tenant_id_is_a_type_error() -> None:
    async with GuardedClientPool(failing) as pool:
        with pytest.raises(TypeError, match="hashable") as info:
            async with pool.lease([1]):
                pass
        assert not isinstance(info.value, KeyError)
        with pytest.raises(TypeError, match="hashable"):
            pool.workers([[1]])


def known_0_1(tenant: Any) -> Any:
    if tenant not in (0, 1):
        raise KeyError(tenant)
    raise RuntimeError("not reached by these tests' calls")


async def test_workers_refuse_unknown_tenants_at_construction() -> None:
    async with GuardedClientPool(known_0_1) as pool:
        with pytest.raises(GuardConfigError, match="99") as info:
            pool.workers([0, 1, 99])
        assert info.value.field == "tenants"
        assert pool.workers([0, 1]).tenants == [0, 1]


async def test_workers_refuse_a_str_of_tenants() -> None:
    async with GuardedClientPool(known_0_1) as pool:
        with pytest.raises(GuardConfigError, match="collection") as info:
            pool.workers("ab")  # type: ignore[arg-type]
        assert info.value.field == "tenants"


async def test_workers_refuse_an_unknown_method_name() -> None:
    calls: list[Any] = []

    def factory(tenant: Any) -> Any:
        calls.append(tenant)
        raise RuntimeError("down")

    async with GuardedClientPool(factory) as pool:
        router = pool.workers([0])
        calls.clear()
        with pytest.raises(ValueError, match="getHistroy"):
            await router.call("messages.getHistroy", lambda c: c.get_me())
        with pytest.raises(ValueError, match="getHistroy"):
            async with router.lease("messages.getHistroy"):
                pass
        assert calls == []  # refused before any account was used
