"""A HALF_OPEN probe that ends without a verdict never wedges the breaker (fake clock).

The wedge (issue 10, "a client that never wedges"): a probe cancelled by its caller was freed
in storage, but health kept reporting any HALF_OPEN breaker as unavailable, so
``with_fallback`` never sent the next probe and served its fallback for good.
"""

from __future__ import annotations

import asyncio

import pytest
from guardfakes import Script, bounded, make_call, make_pipeline, start_hanging_call
from telethon import errors as te

from telethon_guard._client_guard import ClientGuard
from telethon_guard.health import unavailable_reason, with_fallback
from telethon_guard.storage import CLOSED, HALF_OPEN

KEY = "acct:a1/dc:2"


async def test_cancelled_probe_leaves_the_breaker_available_and_the_next_call_probes() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=1,
                                   breaker_open_seconds=5)
    guard = ClientGuard(pipe.config, pipe)
    with pytest.raises(te.RpcCallFailError):
        await pipe.invoke(make_call(), Script(clock, [te.RpcCallFailError(None)]))
    assert unavailable_reason(guard) == "breaker OPEN"
    clock.advance(5)
    assert unavailable_reason(guard) is None  # the next call is the probe
    probe = await start_hanging_call(pipe)
    assert unavailable_reason(guard) == "breaker HALF_OPEN"  # its one probe is out
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    # Freed at once, and health says so: a probe may be sent.
    d = pipe.storage.breaker_state_sync(KEY)  # type: ignore[attr-defined]
    assert (d.state, d.retry_after) == (HALF_OPEN, 0.0)
    assert unavailable_reason(guard) is None
    live = Script(clock)
    got = await bounded(with_fallback(lambda: pipe.invoke(make_call(), live), "cached",
                                      timeout=2.0, guard=guard))
    assert got == "ok" and live.count == 1
    assert (await pipe.breaker.state(KEY)).state == CLOSED


async def test_a_lost_probe_release_ends_with_the_lease_bounded_by_the_deadline() -> None:
    pipe, clock, _ = make_pipeline(retry_max_attempts=1, breaker_failure_threshold=1,
                                   breaker_open_seconds=5, deadline=10.0)
    guard = ClientGuard(pipe.config, pipe)
    assert pipe.breaker.lease == pytest.approx(11.0)  # no call outlives its deadline
    with pytest.raises(te.RpcCallFailError):
        await pipe.invoke(make_call(), Script(clock, [te.RpcCallFailError(None)]))
    clock.advance(5)
    # A prober that took the lease and vanished (a crashed process on shared storage).
    local = pipe.storage
    assert local.breaker_acquire_sync(KEY, pipe.breaker.lease).decision == "probe"  # type: ignore[attr-defined]
    assert unavailable_reason(guard) == "breaker HALF_OPEN"
    clock.advance(pipe.breaker.lease)
    assert unavailable_reason(guard) is None
    assert await bounded(pipe.invoke(make_call(), Script(clock))) == "ok"
    assert (await pipe.breaker.state(KEY)).state == CLOSED
