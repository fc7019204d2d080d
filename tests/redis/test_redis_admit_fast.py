"""The admission script's fast path and its cheaper limiter upkeep, on a real Redis:

* when the breaker has no key (CLOSED, no failures) and no scope is blocked, the script
  answers with the delay alone; a breaker CLOSED *with* failures or a blocked scope takes the
  full path (one EXISTS decides) and still reserves / refuses as before;
* a limiter key's expiry is never shortened by a reservation of an earlier slot (PEXPIRE GT):
  it covers the latest slot + the longest period + 1 s, as before the change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from telethon_guard.storage import BreakerPolicy, LimitSpec
from telethon_guard.storage.redis import RedisStorage, from_url

BR = "acct:fast/dc:2"
SCOPE = "acct:fast/method:m"
SPECS = [LimitSpec("acct:fast/dc:2/method:m", ((3, 5.0),))]


@pytest.fixture
async def storage(redis_url: str, prefix: str) -> AsyncIterator[RedisStorage]:
    st = from_url(redis_url, prefix=prefix, storage_fallback="fail", timeout=2.0)
    try:
        yield st
    finally:
        keys = [k async for k in st.client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await st.client.delete(*keys)
        await st.aclose()


async def test_fast_and_full_paths_give_the_same_answers(storage: RedisStorage) -> None:
    a = await storage.admit(BR, 60.0, [SCOPE], SPECS)  # nothing known: fast path
    assert (a.breaker.decision, a.breaker.state, a.breaker.failures) == ("allow", "CLOSED", 0)
    assert a.flood_index == -1 and a.reservation is not None and a.reservation.delay == 0.0

    # CLOSED with one failure (threshold 3): the breaker has a key, the full path answers
    d = await storage.breaker_failure(BR, BreakerPolicy(3, 30.0, 2.0, 300.0))
    assert d.state == "CLOSED" and d.failures == 1
    a = await storage.admit(BR, 60.0, [SCOPE], SPECS)
    assert (a.breaker.decision, a.breaker.state, a.breaker.failures) == ("allow", "CLOSED", 1)
    assert a.reservation is not None and a.reservation.delay == 0.0
    assert storage.breaker_state_sync(BR).failures == 1  # the view saw it

    # a success resets it (no key again): the fast path, and the view forgets the failure
    await storage.breaker_success(BR)
    a = await storage.admit(BR, 60.0, [SCOPE], SPECS)
    assert a.breaker.failures == 0 and a.reservation is not None
    assert a.reservation.delay == 0.0  # 3rd slot of 3 in 5 s
    assert storage.breaker_state_sync(BR).failures == 0

    # the window is full: the 4th waits ~5 s (the fast path carries the delay)
    a = await storage.admit(BR, 60.0, [SCOPE], SPECS)
    assert a.reservation is not None and 4.5 < a.reservation.delay <= 5.0
    await storage.release(SPECS, a.reservation.token)

    # a blocked scope with no breaker key: the EXISTS sees the scope, nothing is reserved
    await storage.flood_block(SCOPE, 20.0)
    a = await storage.admit(BR, 60.0, [SCOPE], SPECS)
    assert a.flood_index == 0 and 19.0 < a.flood_left <= 20.0 and a.reservation is None
    await storage.flood_clear(SCOPE)

    # no limiter keys: nothing reserved on either path
    a = await storage.admit(BR, 60.0, [SCOPE], [])
    assert a.breaker.decision == "allow" and a.reservation is None


async def test_expiry_is_never_shortened_by_an_earlier_slot(storage: RedisStorage,
                                                            prefix: str) -> None:
    spec = [LimitSpec("acct:fast/x", ((1, 5.0),))]
    key = f"{prefix}:rl:{{acct:fast}}/x"
    assert (await storage.reserve(spec)).delay == 0.0
    assert 5_000 < await storage.client.pttl(key) <= 6_000  # new key: slot + 5 s + 1 s
    r = await storage.reserve(spec)  # the next slot is 5 s later
    assert 4.5 < r.delay <= 5.0
    assert 10_000 < await storage.client.pttl(key) <= 11_000
    await storage.reserve(spec, observe=True)  # a slot now (earlier than the latest)
    assert 10_000 < await storage.client.pttl(key) <= 11_000  # still covers the latest
