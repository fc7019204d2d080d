"""Waiters move up across processes (issue 14): a slot given back in one process (a waiter
cancelled, or failing its deadline) is used by the waiters of another.

Each "process" is its own :class:`RedisStorage` with its own connection pool and its own
:class:`RateLimiter` (nothing shared in Python); ``test_give_back_moves_up_a_waiter_of_another
_os_process`` runs the second side in a real child process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time

import pytest

from telethon_guard.clock import MonotonicClock
from telethon_guard.errors import DeadlineExceeded
from telethon_guard.limiter import RateLimiter
from telethon_guard.storage import LimitSpec
from telethon_guard.storage.redis import RedisStorage, from_url

SPEC = (LimitSpec("acct:mu", ((1, 10.0),)),)
"""One call per 10 s: a waiter's slot moves by whole periods, far above any scheduling noise."""


async def _poll(pred: object, timeout: float) -> float:
    """Seconds until ``pred()`` is true (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while not pred():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def _scores(st: RedisStorage, key: str) -> list[float]:
    rk = st._key("rl", key)
    return [s for _, s in await st.client.zrange(rk, 0, -1, withscores=True)]


def _storage(url: str, prefix: str) -> RedisStorage:
    return from_url(url, prefix=prefix, storage_fallback="fail", timeout=5.0)


async def test_cancelled_waiter_in_one_process_lets_the_other_move_up(
        redis_url: str, prefix: str) -> None:
    a_st, b_st = _storage(redis_url, prefix), _storage(redis_url, prefix)
    clock = MonotonicClock()
    a, b = RateLimiter(a_st, clock), RateLimiter(b_st, clock)
    tasks: list[asyncio.Task[float]] = []
    try:
        assert await a.acquire(SPEC) == 0.0  # slot now
        a1 = asyncio.create_task(a.acquire(SPEC))  # slot +10
        await _poll(lambda: a.queue_length == 1, 5)
        tasks = [asyncio.create_task(b.acquire(SPEC))]  # slot +20
        await _poll(lambda: b.queue_length == 1, 5)
        tasks.append(asyncio.create_task(b.acquire(SPEC)))  # slot +30
        await _poll(lambda: b.queue_length == 2, 5)
        before = [w.wake_at for w in b._waiters]
        assert 19.0 < before[0] - clock.now() <= 20.0 and 29.0 < before[1] - clock.now() <= 30.0
        rounds = b.mover.rounds if b.mover else 0
        await asyncio.sleep(0.35)  # a few rounds with nothing given back: nothing moves
        assert [w.wake_at for w in b._waiters] == before
        assert b.mover is not None and b.mover.rounds > rounds

        a1.cancel()
        t0 = time.monotonic()
        seen = await _poll(lambda: next(w.wake_at for w in b._waiters) < before[0] - 5, 5)
        after = [w.wake_at for w in b._waiters]
        # each waiter moved up one whole period, in FIFO order, and stays 10 s apart
        assert abs((before[0] - after[0]) - 10.0) < 0.2, (before, after)
        assert abs((before[1] - after[1]) - 10.0) < 0.2, (before, after)
        scores = await _scores(b_st, "acct:mu")
        assert len(scores) == 3 and all(
            y - x >= 10.0 - 1e-6 for x, y in itertools.pairwise(scores)), scores
        print(f"give-back seen by the other storage after {seen * 1000:.0f} ms "
              f"(interval {b.mover.interval} s)")
        assert time.monotonic() - t0 < 5
        with pytest.raises(asyncio.CancelledError):
            await a1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.05)  # the background give-backs
        for st in (a_st, b_st):
            await st.aclose()


async def test_deadline_give_back_moves_up_the_other_process_and_it_goes_early(
        redis_url: str, prefix: str) -> None:
    spec = (LimitSpec("acct:mu2", ((1, 1.5),)),)
    a_st, b_st = _storage(redis_url, prefix), _storage(redis_url, prefix)
    clock = MonotonicClock()
    a, b = RateLimiter(a_st, clock), RateLimiter(b_st, clock)
    try:
        assert await a.acquire(spec) == 0.0  # slot now
        # A's second call reserves +1.5 but its deadline is in 0.5 s: it gives the slot back
        res = await a.reserve(spec)
        assert 1.3 < res[0] <= 1.5
        b1 = asyncio.create_task(b.acquire(spec))  # slot +3.0
        await _poll(lambda: b.queue_length == 1, 5)
        wake = next(iter(b._waiters)).wake_at
        assert 2.7 < wake - clock.now() <= 3.0
        with pytest.raises(DeadlineExceeded):
            await a.wait(spec, res, clock.now() + 0.5, "m", "mu2", None)
        waited = await asyncio.wait_for(b1, 5)
        # B went at A's given-back slot (+1.5), not at its own (+3.0)
        assert clock.now() < wake - 1.0, (waited, wake - clock.now())
    finally:
        for st in (a_st, b_st):
            await st.aclose()


_CHILD = r"""
import asyncio, json, sys, time
from telethon_guard.clock import MonotonicClock
from telethon_guard.limiter import RateLimiter
from telethon_guard.storage import LimitSpec
from telethon_guard.storage.redis import from_url

async def main():
    url, prefix = sys.argv[1], sys.argv[2]
    st = from_url(url, prefix=prefix, storage_fallback="fail", timeout=5.0)
    lim = RateLimiter(st, MonotonicClock())
    spec = (LimitSpec("acct:mu3", ((1, 2.0),)),)
    print(json.dumps({"ready": True}), flush=True)  # started and imported: wait for "go"
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start = time.time()
    res = await lim.reserve(spec)
    print(json.dumps({"reserved": res[0]}), flush=True)
    await lim.wait(spec, res, None, "m", "mu3", None)
    print(json.dumps({"went_after": time.time() - start, "reserved": res[0]}), flush=True)
    await st.aclose()

asyncio.run(main())
"""


async def test_give_back_moves_up_a_waiter_of_another_os_process(
        redis_url: str, prefix: str) -> None:
    spec = (LimitSpec("acct:mu3", ((1, 2.0),)),)
    st = _storage(redis_url, prefix)
    lim = RateLimiter(st, MonotonicClock())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = None
    try:
        # The child starts (seconds on a loaded machine) before the slots below are taken, so
        # its start-up is not counted in them; it reserves when told "go".
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, redis_url, prefix, stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stdin is not None
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 30)) == {"ready": True}
        assert await lim.acquire(spec) == 0.0  # slot now
        mine = asyncio.create_task(lim.acquire(spec))  # slot +2
        await _poll(lambda: lim.queue_length == 1, 5)
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert first["reserved"] > 2.0  # behind mine: +4 minus the time "go" took
        mine.cancel()
        with pytest.raises(asyncio.CancelledError):
            await mine
        done = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        # the child went a whole period before its own slot (at the slot given back)
        assert done["went_after"] < first["reserved"] - 1.0, done
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await st.aclose()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_moving_up_never_breaks_a_window(redis_url: str, prefix: str, seed: int) -> None:
    """Two storages reserve 16 slots under ((3, 10 s), (5, 30 s)) on two keys, give back a
    random third of them, then move their waiters up: slots move earlier, and still at most
    3 in any 10 s and 5 in any 30 s on every key (the argument in ``redis_moveup``)."""
    import random

    rng = random.Random(seed)
    windows = ((3, 10.0), (5, 30.0))
    specs = (LimitSpec("acct:w", windows), LimitSpec("acct:w/method:x", windows))
    sts = [_storage(redis_url, prefix), _storage(redis_url, prefix)]
    try:
        held: list[tuple[RedisStorage, bytes]] = []
        for i in range(16):
            st = sts[rng.randrange(2)] if i else sts[0]
            held.append((st, (await st.reserve(specs)).token))
        gone = rng.sample(range(1, 15), 5)
        for i in gone:
            await held[i][0].release(specs, held[i][1])
        kept = [h for i, h in enumerate(held) if i not in gone]
        before = await _scores(sts[0], "acct:w")
        for st in sts:
            mine = [(specs, tok) for s, tok in kept if s is st]
            ans = await st.move_up("acct:w", None, mine)
            assert ans is not None
        for key in ("acct:w", "acct:w/method:x"):
            after = await _scores(sts[0], key)
            assert len(after) == len(kept)
            for n, p in windows:
                for i, s in enumerate(after):
                    inside = [x for x in after[i:] if x < s + p - 1e-6]
                    assert len(inside) <= n, (key, n, p, after)
        after = await _scores(sts[0], "acct:w")
        assert sum(after) < sum(before) - 5.0, (before, after)  # the gaps were used
        assert await sts[1].move_up("acct:w", ans[0], []) is None  # nothing given back since
    finally:
        for st in sts:
            await st.aclose()
