from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from telethon_guard.errors import GuardConfigError, StorageUnavailableError
from telethon_guard.events import EventBus, StorageFallback
from telethon_guard.fakeclock import FakeClock
from telethon_guard.storage import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    GuardStorage,
    LimitSpec,
    LocalGuardStorage,
    open_storage,
)
from telethon_guard.storage.fallback import BackendUnavailable, OutageFallback
from telethon_guard.storage.memory import MemoryStorage

POLICY = BreakerPolicy(threshold=2, open_seconds=4.0, growth=2.0, max_open=10.0)


def mem() -> tuple[MemoryStorage, FakeClock]:
    clock = FakeClock(auto_advance=False)
    return MemoryStorage(clock), clock


def test_memory_implements_both_protocols() -> None:
    st, _ = mem()
    assert isinstance(st, GuardStorage) and isinstance(st, LocalGuardStorage)
    assert st.is_local and st.name == "memory"


def test_open_storage() -> None:
    st, clock = mem()
    assert open_storage(st) is st
    assert isinstance(open_storage(None, clock=clock), MemoryStorage)
    assert isinstance(open_storage("memory"), MemoryStorage)
    with pytest.raises(GuardConfigError):
        open_storage(object())


def test_flood_ledger_keeps_the_later_end_and_expires() -> None:
    st, clock = mem()
    assert st.flood_block_sync("s", 10) == 10
    assert st.flood_block_sync("s", 3) == 10  # an earlier end never shortens a block
    clock.advance(4)
    assert st.flood_left_sync("s") == 6
    assert st.flood_block_sync("s", 20) == 20
    clock.advance(20)
    assert st.flood_left_sync("s") == 0
    assert st.flood_scopes() == {}


def test_flood_table_is_swept() -> None:
    st, clock = mem()
    for i in range(1100):
        st.flood_block_sync(f"s{i}", 1)
    clock.advance(2)
    st.flood_block_sync("new", 1)
    assert len(st._flood) < 1100


def test_breaker_state_machine() -> None:
    st, clock = mem()
    assert st.breaker_acquire_sync("k", 30).decision == "allow"
    assert st.breaker_failure_sync("k", POLICY).state == CLOSED
    d = st.breaker_failure_sync("k", POLICY)
    assert (d.old, d.state, d.retry_after) == (CLOSED, OPEN, 4.0)
    assert st.breaker_acquire_sync("k", 30).decision == "reject"
    clock.advance(4)
    d = st.breaker_acquire_sync("k", 30)
    assert (d.decision, d.old, d.state) == ("probe", OPEN, HALF_OPEN)
    assert st.breaker_acquire_sync("k", 30).decision == "reject"  # one probe only
    d = st.breaker_failure_sync("k", POLICY)
    assert (d.old, d.state, d.retry_after) == (HALF_OPEN, OPEN, 8.0)
    clock.advance(8)
    st.breaker_acquire_sync("k", 30)
    st.breaker_release_probe_sync("k")
    assert st.breaker_acquire_sync("k", 30).decision == "probe"
    d = st.breaker_success_sync("k")
    assert (d.old, d.state) == (HALF_OPEN, CLOSED)
    assert st.breaker_state_sync("k").failures == 0


def test_probe_lease_expires() -> None:
    st, clock = mem()
    st.breaker_failure_sync("k", POLICY)
    st.breaker_failure_sync("k", POLICY)
    clock.advance(4)
    assert st.breaker_acquire_sync("k", 1.0).decision == "probe"
    clock.advance(1.5)  # the prober vanished
    assert st.breaker_acquire_sync("k", 1.0).decision == "probe"


def test_success_while_open_keeps_it_open() -> None:
    st, _ = mem()
    st.breaker_failure_sync("k", POLICY)
    st.breaker_failure_sync("k", POLICY)
    assert st.breaker_success_sync("k").state == OPEN


def test_release_unknown_token_is_ignored() -> None:
    st, _ = mem()
    spec = [LimitSpec("k", ((1, 1.0),))]
    st.release_sync(spec, 12345.0)
    st.release_sync([LimitSpec("nope", ((1, 1.0),))], 1.0)
    r = st.reserve_sync(spec)
    st.release_sync(spec, r.token)
    assert st.slots("k") == []


def test_seed_inserts_history_in_order() -> None:
    st, clock = mem()
    spec = LimitSpec("p", ((3, 10.0),))
    st.seed_sync(spec, [5.0, 3.0, 1.0, 50.0])  # 50 s ago is outside the window: dropped
    now = clock.now()
    assert st.slots("p") == [now - 5, now - 3, now - 1]
    assert st.reserve_sync([spec]).delay == pytest.approx(5.0)


async def test_async_twins() -> None:
    st, _ = mem()
    spec = [LimitSpec("k", ((1, 1.0),))]
    r = await st.reserve(spec)
    assert r.delay == 0
    assert (await st.reserve(spec)).delay == 1.0
    await st.release(spec, r.token)
    assert await st.flood_block("f", 2) == 2 and await st.flood_left("f") == 2
    await st.flood_clear("f")
    assert await st.flood_left("f") == 0
    assert (await st.breaker_acquire("b", 1)).decision == "allow"
    assert (await st.breaker_failure("b", POLICY)).failures == 1
    assert (await st.breaker_success("b")).failures == 0
    await st.breaker_release_probe("b")
    assert (await st.breaker_state("b")).state == CLOSED
    await st.seed(spec[0], [0.5])
    await st.aclose()


# ---- the shared storage's fallback policy (storage.fallback) ---------------------------------


async def test_outage_fallback_serves_locally_probes_on_the_clock_and_logs_a_failed_copy_back(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(auto_advance=False)
    events: list[Any] = []
    copied: list[dict[str, float]] = []

    async def copy_back(blocks: dict[str, float]) -> None:
        copied.append(blocks)
        raise ConnectionError("server went away again")

    fb = OutageFallback("test", "local", 5.0, clock=clock, events=EventBus([events.append]),
                        copy_back=copy_back)
    calls: list[str] = []
    up = True

    async def remote() -> str:
        calls.append("remote")
        if not up:
            raise BackendUnavailable("refused")
        return "shared"

    assert await fb.run(remote, lambda: "local") == "shared" and fb.available
    up = False
    assert await fb.run(remote, lambda: "local") == "local" and not fb.available
    fb.local.flood_block_sync("acct:1/method:m", 30.0)  # learned during the outage
    up = True
    assert await fb.run(remote, lambda: "local") == "local"  # no probe before 5 s
    assert calls == ["remote", "remote"]
    clock.advance(5.0)
    caplog.set_level(logging.WARNING, logger="telethon_guard")
    assert await fb.run(remote, lambda: "local") == "shared" and fb.available
    for _ in range(5):
        await asyncio.sleep(0)
    assert copied and "acct:1/method:m" in copied[0]
    assert any("could not copy 1 flood block" in r.getMessage() and r.exc_info
               for r in caplog.records)
    assert [e.active for e in events if isinstance(e, StorageFallback)] == [True, False]
    assert fb.fallbacks == 1


async def test_outage_fallback_fail_policy_raises_storage_unavailable() -> None:
    fb = OutageFallback("test", "fail", 5.0, clock=FakeClock(auto_advance=False))

    async def remote() -> str:
        raise BackendUnavailable("refused") from ConnectionError("refused")

    with pytest.raises(StorageUnavailableError):
        await fb.run(remote, lambda: "local")
    with pytest.raises(StorageUnavailableError):  # between probes: at once
        await fb.run(remote, lambda: "local")
    with pytest.raises(GuardConfigError):
        OutageFallback("test", "sometimes", 5.0)
