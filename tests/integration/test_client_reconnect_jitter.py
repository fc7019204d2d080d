"""Reconnect jitter follows the guard's configured randomness and clock (issue 9 item 6:
"``seed``/``rng`` and the guard clock do not reach reconnect jitter").

The reconnect pacer of a guarded client draws its jittered backoff from ``GuardConfig.seed`` /
``GuardConfig.rng`` and measures time on the guard clock, so a test with a seed sees the same
reconnect schedule on every run and a fake clock drives reconnect pacing too.
"""

from __future__ import annotations

import random

from telethon_guard import GuardConfig, GuardedTelegramClient
from telethon_guard.clock import FakeClock

API_ID, API_HASH = 1, "0" * 32


def _backoffs(client: GuardedTelegramClient, n: int = 6) -> list[float]:
    pacer = client.guard.pacer(None)
    return [pacer.record_failure() for _ in range(n)]


async def test_same_seed_same_reconnect_backoffs() -> None:
    a = GuardedTelegramClient(None, API_ID, API_HASH, seed=7, reconnect_jitter=1.0)
    b = GuardedTelegramClient(None, API_ID, API_HASH, seed=7, reconnect_jitter=1.0)
    c = GuardedTelegramClient(None, API_ID, API_HASH, seed=8, reconnect_jitter=1.0)
    first, second, other = _backoffs(a), _backoffs(b), _backoffs(c)
    assert first == second
    assert first != other
    # full jitter: each backoff lies in [0, ceiling] of TDLib's doubling (base 1 s, cap 16 s)
    assert all(0.0 <= d <= min(16.0, 2.0 ** i) for i, d in enumerate(first))


async def test_configured_rng_draws_the_reconnect_jitter() -> None:
    rng = random.Random(42)
    client = GuardedTelegramClient(
        None, API_ID, API_HASH, guard_config=GuardConfig(rng=rng, reconnect_jitter=1.0))
    expected_rng = random.Random(42)
    got = _backoffs(client, 3)
    expected = [expected_rng.uniform(0.0, min(16.0, 2.0 ** i)) for i in range(3)]
    assert got == expected


async def test_reconnect_pacing_runs_on_the_guard_clock() -> None:
    clock = FakeClock()
    client = GuardedTelegramClient(None, API_ID, API_HASH, clock=clock, reconnect_jitter=0.0)
    pacer = client.guard.pacer(None)
    assert pacer.now() == clock.now()
    assert pacer.record_failure() == 1.0  # no jitter: TDLib's first backoff
    assert pacer.next_turn_in() == 1.0
    clock.advance(1.0)
    assert pacer.next_turn_in() == 0.0
    assert await pacer.wait_turn()  # granted at once on the fake clock
