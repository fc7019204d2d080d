"""``RedisStorage.admit`` (one script: breaker acquire, flood check, limiter reservation)
gives the answers of the three separate operations, on one Redis and on the local cluster:
a refusal by an earlier step reserves nothing, and what it reserves counts in the windows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis_helpers import LocalCluster

from telethon_guard.storage import OPEN, BreakerPolicy, LimitSpec
from telethon_guard.storage.redis import RedisStorage, from_url

POLICY = BreakerPolicy(threshold=1, open_seconds=30.0, growth=2.0, max_open=300.0)
BR = "acct:ad/dc:2"
SCOPES = ["acct:ad/method:m", "acct:ad/writes:peer:5"]
SPECS = [LimitSpec("acct:ad/dc:2/method:m", ((2, 5.0),)), LimitSpec("acct:ad", ((100, 1.0),))]


@pytest.fixture(params=["redis", "cluster"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[RedisStorage]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("prefix")
    else:
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        url, prefix = cluster.url, f"tg-guard-ad-{uuid.uuid4().hex[:10]}"
    st = from_url(url, prefix=prefix, storage_fallback="fail", timeout=2.0)
    try:
        yield st
    finally:
        for key in (BR, *SCOPES):
            await st.flood_clear(key)
        await st.client.delete(*(st._key("rl", s.key) for s in SPECS))
        await st.client.delete(st._key("br", BR))
        await st.aclose()


async def test_admit_decides_like_the_three_operations(storage: RedisStorage) -> None:
    a = await storage.admit(BR, 60.0, SCOPES, SPECS)
    assert a.breaker.decision == "allow" and a.flood_index == -1
    assert a.reservation is not None and a.reservation.delay == 0.0
    a = await storage.admit(BR, 60.0, SCOPES, SPECS)
    assert a.reservation is not None and a.reservation.delay == 0.0
    a = await storage.admit(BR, 60.0, SCOPES, SPECS)  # 3rd in 5 s: the window is full
    assert a.reservation is not None and 4.5 < a.reservation.delay <= 5.0
    await storage.release(SPECS, a.reservation.token)

    # a blocked scope: its index and seconds left, nothing reserved
    await storage.flood_block(SCOPES[1], 20.0)
    a = await storage.admit(BR, 60.0, SCOPES, SPECS)
    assert a.flood_index == 1 and 19.0 < a.flood_left <= 20.0 and a.reservation is None
    await storage.flood_clear(SCOPES[1])

    # an OPEN breaker: rejected, nothing checked or reserved
    assert (await storage.breaker_failure(BR, POLICY)).state == OPEN
    a = await storage.admit(BR, 60.0, SCOPES, SPECS)
    assert a.breaker.decision == "reject" and a.reservation is None
    assert (await storage.breaker_success(BR)).state == OPEN  # untouched by the admission
    # the two admitted reservations still fill the window; the refused ones took nothing
    r = await storage.reserve(SPECS[:1])
    assert 4.0 < r.delay <= 5.0
