"""ReconnectPacer after a short transport -429 storm (issue 13 item 3): back as soon as TDLib's
windows allow once the storm ends (fake clock).

The demo's shape: a connection opened at 0 s, the live connection gets -429 at 1 s, and every
new connection is accepted (TCP) and then answered -429 until 4 s. TDLib counts those -429s in
``mtproto_error_flood_control`` (1 per 1 s, 2 per 4 s, 3 per 8 s) next to its windows on new
connections: the -429 that ended the live connection opens the windows.
"""

from __future__ import annotations

import random

import pytest
from guardfakes import MaxRandom, ZeroRandom

from telethon_guard.fakeclock import FakeClock
from telethon_guard.reconnect import ReconnectPacer

T0 = 1000.0


async def _storm(rng: random.Random, lost_at: float, end: float) -> list[float]:
    """Attempt times (seconds since T0; the first is the initial connect at 0) until one at or
    after ``end`` succeeds; every attempt before ``end`` is accepted then refused with -429."""
    clock = FakeClock(T0)
    pacer = ReconnectPacer(clock=clock.now, sleep=clock.sleep, rng=rng)
    pacer.record_attempt()
    pacer.record_success()
    clock.advance(lost_at)
    pacer.record_failure()  # the live connection gets -429
    times = [0.0]
    while True:
        assert await pacer.wait_turn()
        t = clock.now() - T0
        times.append(t)
        pacer.record_success()  # the server accepted the TCP connection ...
        if t >= end:
            return times
        clock.advance(0.01)
        pacer.record_failure()  # ... and answered -429
        assert len(times) < 20


def _count_in(times: list[float], start: float, length: float) -> int:
    return sum(1 for t in times if start <= t < start + length - 1e-9)


@pytest.mark.parametrize("rng", [ZeroRandom(), MaxRandom()], ids=["shortest", "longest"])
async def test_back_one_window_after_a_short_storm_within_tdlib_windows(
        rng: random.Random) -> None:
    """Storm for 3 s from 1.05 s after the connection opened (the demo's: its client connects
    just before the worker starts): back 1 s after it ended (the 2-per-4-s window from the
    -429 at 1.05 s), whatever the jitter. Before issue 13 the windows counted the connection's
    opening at 0 s: the second reconnect went at 4.0 s (just before the storm ended) and the
    3-per-8-s window held the third until 8.0 s, ~4 s after the storm."""
    times = await _storm(rng, 1.05, 4.05)
    assert times[-1] - 4.05 <= 1.0 + 0.05, times
    for t in times:  # TDLib's windows on new connections, the initial connect included
        assert _count_in(times, t, 1.0) <= 1
        assert _count_in(times, t, 4.0) <= 2
        assert _count_in(times, t, 8.0) <= 3, times


async def test_the_windows_on_refusals_are_never_looser_than_before() -> None:
    """Counting the -429s adds windows, it never removes one: a longer storm sees no more
    attempts than TDLib's windows and the backoff allow, and the steady pace holds."""
    times = await _storm(ZeroRandom(), 1.05, 30.0)
    during = [t for t in times if 1.05 <= t < 30.0]
    assert len(during) <= 7, during  # 1/1, 2/4, 3/8 s plus the backoff doubling to 16 s
    for t in times:
        assert _count_in(times, t, 8.0) <= 3
