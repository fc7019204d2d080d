"""Clients built from one GuardConfig with one local storage share the guard's layers
(pipeline.shared_layers, issue 12's memory per client), real Telethon over real sockets: each
client still gets its own events, stats and on_event deliveries, and one account's
FLOOD_WAIT never slows the other's calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.config import GuardConfig
from telethon_guard.errors import FloodWaitBlocked
from telethon_guard.events import FloodBlocked, FloodWaitStarted, GuardEvent, RequestFinished
from telethon_guard.storage.memory import MemoryStorage
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import FloodWindow

from ._client_helpers import bounded

FLOOD = 60.0  # seconds of FLOOD_WAIT account A gets (never waited out: max_flood_wait is 1)


async def test_shared_layers_keep_events_stats_and_floods_per_client() -> None:
    plan = FaultPlan()
    seen: list[GuardEvent] = []
    config = GuardConfig(storage=MemoryStorage(), max_flood_wait=1.0, on_event=seen.append)
    async with TelegramTestServer(faults=plan) as server:
        ids = [server.world.register_account(None) for _ in range(2)]
        plan.add(FloodWindow("messages.getHistory", 1, FLOOD, account=ids[0]))
        a, b = (server.client(GuardedTelegramClient, session=server.session(i),
                              guard_config=config) for i in ids)
        # an equal config (not the same object) with the same storage shares them too
        c = server.client(GuardedTelegramClient, session=server.session(),
                          storage=config.storage, max_flood_wait=1.0, on_event=seen.append)
        got: dict[str, list[GuardEvent]] = {"a": [], "b": [], "c": []}
        for name, client in zip("abc", (a, b, c), strict=True):
            client.guard.events.subscribe(got[name].append)
        pa, pb, pc = (x.guard.pipeline for x in (a, b, c))
        assert pa.shared and pb.shared and pc.shared
        assert pa.ledger is pb.ledger is pc.ledger and pa.limiter is pb.limiter
        assert pa.events is not pb.events  # the buses stay per client
        for client in (a, b, c):
            await bounded(client.connect())
        try:
            await bounded(a.get_messages("news", limit=1))  # the one call A's account gets
            with pytest.raises(FloodWaitBlocked):
                await bounded(a.get_messages("news", limit=1))
            with pytest.raises(FloodWaitBlocked):  # A's block, from the shared ledger
                await bounded(a.get_messages("news", limit=1))
            for _ in range(3):  # B's account is not blocked: its calls go at once
                started = asyncio.get_running_loop().time()
                await bounded(b.get_messages("news", limit=1))
                assert asyncio.get_running_loop().time() - started < 2.0
            await asyncio.sleep(0.05)  # EventBus delivers on the loop

            def floods(events: list[GuardEvent]) -> list[Any]:
                return [e for e in events if isinstance(e, (FloodWaitStarted, FloodBlocked))]

            assert floods(got["a"]) and not floods(got["b"]) and not floods(got["c"])
            assert len(floods(seen)) == len(floods(got["a"]))  # on_event: each event once
            finished_b = [e for e in got["b"] if isinstance(e, RequestFinished)]
            assert finished_b and all(e.account != f"user:{ids[0]}" for e in finished_b)
            assert any(e.account == f"user:{ids[1]}" for e in finished_b)
            sa, sb = a.guard.stats(), b.guard.stats()
            assert sa.calls["messages.getHistory"].get("flood_wait", 0) >= 1
            assert sb.calls["messages.getHistory"] == {"ok": 3}
            assert sa.flood_waits or sa.flood_blocked
            assert not sb.flood_waits and not sb.flood_blocked
            assert sb.paces == {} and sb.limiter_queue == 0
            assert sa.blocked and not sb.blocked  # the shared storage's blocks: A's only
            assert not c.guard.stats().calls.get("messages.getHistory")
        finally:
            for client in (a, b, c):
                await bounded(client.disconnect())


def test_layers_of_their_own_without_a_shared_local_storage() -> None:
    """A config without a storage object (each client's own memory storage), a Redis URL,
    or a pipeline given its own events / clock: the layers are the client's own."""
    from telethon_guard.pipeline import Pipeline

    own = GuardConfig()
    assert not Pipeline(own).shared
    assert Pipeline(own).ledger is not Pipeline(own).ledger
    shared = GuardConfig(storage=MemoryStorage())
    p1, p2 = Pipeline(shared), Pipeline(shared)
    assert p1.shared and p1.ledger is p2.ledger
    from telethon_guard.events import EventBus

    assert not Pipeline(shared, events=EventBus()).shared
    other = GuardConfig(storage=shared.storage, max_flood_wait=5.0)  # not equal: own layers
    assert Pipeline(other).ledger is not p1.ledger
