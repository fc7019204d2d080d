"""A Redis Cluster primary fails over while a flood block is active and operations are in
flight (a real local cluster of 3 primaries and 3 replicas, started for this test): no
operation hangs past the storage timeout, the fallback keeps the block, and once the replica
is promoted the storage shares state again within ``probe_interval`` plus one operation's
timeout, the block intact (another process sees it)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis
from redis_helpers import LocalCluster

from telethon_guard.storage.redis import from_url

TIMEOUT = 0.3
PROBE = 0.5
SCOPE = "acct:fo/method:messages.sendMessage"


def _replicated(port: int, timeout: float = 10.0) -> None:
    """Until the primary on ``port`` has a replica at its replication offset (bounded)."""
    node = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        deadline = time.monotonic() + timeout
        while True:
            info = node.info("replication")
            replica = info.get("slave0")
            if isinstance(replica, dict) and replica.get("state") == "online" and int(
                    replica.get("offset", -1)) >= int(info["master_repl_offset"]):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no replica caught up with {port}: {info}")
            time.sleep(0.05)
    finally:
        node.close()


@pytest.fixture
def cluster_with_replicas() -> Iterator[LocalCluster]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server/redis-cli are not installed")
    with tempfile.TemporaryDirectory(prefix="tg-guard-failover-") as workdir:
        cluster = LocalCluster(workdir, primaries=3, replicas=1)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


async def test_failover_during_a_flood_block(cluster_with_replicas: LocalCluster) -> None:
    cluster = cluster_with_replicas
    st = from_url(cluster.url, prefix="fo", timeout=TIMEOUT, probe_interval=PROBE)
    try:
        assert 59 < await st.flood_block(SCOPE, 60.0) <= 60
        primary = cluster.primary_of("{acct:fo}")
        await asyncio.to_thread(_replicated, primary)  # the replica has the block

        cluster.kill_node(primary)
        t0 = time.monotonic()
        lefts = await asyncio.wait_for(
            asyncio.gather(*(st.flood_left(SCOPE) for _ in range(20))), 10)
        assert time.monotonic() - t0 < TIMEOUT + 1.0  # bounded, not hung
        assert all(50 < left <= 60 for left in lefts), lefts  # the fallback holds the block
        assert not st.available

        await asyncio.to_thread(cluster.wait_ok)  # the replica is promoted (bounded: 30 s)
        t0 = time.monotonic()
        while not st.available and time.monotonic() - t0 < PROBE + TIMEOUT + 2.0:
            assert 50 < await asyncio.wait_for(st.flood_left(SCOPE), 5) <= 60
            await asyncio.sleep(0.05)
        assert st.available, "not shared again within probe_interval + timeout"
        other = from_url(cluster.url, prefix="fo", storage_fallback="fail", timeout=2.0)
        try:
            assert 50 < await other.flood_left(SCOPE) <= 60
        finally:
            await other.aclose()
    finally:
        await st.aclose()
