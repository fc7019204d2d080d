"""ReconnectPacer: TDLib's connection flood-control windows and jittered backoff (fake clock)."""

from __future__ import annotations

import asyncio
import random

import pytest
from guardfakes import MaxRandom, ZeroRandom

from telethon_guard.errors import GuardConfigError
from telethon_guard.fakeclock import FakeClock
from telethon_guard.reconnect import DEFAULT_WINDOWS, ReconnectPacer

T0 = 1000.0


def make(clock: FakeClock, **kw: object) -> ReconnectPacer:
    kw.setdefault("rng", ZeroRandom())
    return ReconnectPacer(clock=clock.now, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def count_in(times: list[float], start: float, length: float) -> int:
    return sum(1 for t in times if start <= t < start + length - 1e-9)


async def test_default_windows_are_tdlib_connection_creator() -> None:
    assert DEFAULT_WINDOWS == ((1, 1.0), (2, 4.0), (3, 8.0))


async def test_turns_follow_1_per_1s_2_per_4s_3_per_8s() -> None:
    clock = FakeClock(T0)
    pacer = make(clock)
    times = []
    for _ in range(8):
        assert await asyncio.wait_for(pacer.wait_turn(), 5)
        times.append(clock.now() - T0)
    assert times == pytest.approx([0, 1, 4, 8, 9, 12, 16, 17])
    for t in times:  # every window, anchored at every attempt
        assert count_in(times, t, 1) <= 1
        assert count_in(times, t, 4) <= 2
        assert count_in(times, t, 8) <= 3
    # a server refusing for 10 s sees at most 5 attempts
    assert max(count_in(times, t, 10) for t in times) == 5
    assert pacer.attempts_total == 8


async def test_backoff_doubles_from_base_up_to_cap() -> None:
    clock = FakeClock(T0)
    pacer = make(clock, windows=((100, 1.0),), backoff_base=1.0, backoff_cap=10.0,
                 rng=MaxRandom())
    drawn = [pacer.record_failure() for _ in range(6)]
    assert drawn == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert pacer.next_turn_in() == pytest.approx(10.0)
    assert pacer.failures == 6


async def test_default_backoff_is_tdlib_doubling_with_a_quarter_jitter() -> None:
    clock = FakeClock(T0)
    low = make(clock, rng=ZeroRandom())
    assert [low.record_failure() for _ in range(7)] == [0.75, 1.5, 3, 6, 12, 12, 12]
    high = make(clock, rng=MaxRandom())
    assert [high.record_failure() for _ in range(7)] == [1, 2, 4, 8, 16, 16, 16]


async def test_full_jitter_stays_within_the_ceiling() -> None:
    clock = FakeClock(T0)
    pacer = make(clock, backoff_base=0.5, backoff_cap=4.0, jitter=1.0, rng=random.Random(7))
    for n in range(1, 30):
        ceiling = min(4.0, 0.5 * 2 ** (n - 1))
        b = pacer.record_failure()
        assert 0.0 <= b <= ceiling
        assert pacer.next_turn_in() >= b - 1e-9


async def test_refused_for_30s_at_most_6_attempts_back_within_5s_of_a_10s_refusal() -> None:
    # Worst cases of the default jitter: the shortest delays (most attempts) ...
    clock = FakeClock(T0)
    pacer = make(clock, rng=ZeroRandom())
    times = []
    while clock.now() - T0 < 30:
        assert await pacer.wait_turn()
        times.append(clock.now() - T0)
        pacer.record_failure()  # refused at once
    assert len([t for t in times if t < 30]) <= 6
    # ... and the longest (latest return): refused from 0 to 10 s after a stable connection
    clock = FakeClock(T0)
    pacer = make(clock, rng=MaxRandom())
    assert pacer.try_turn()
    pacer.record_success()
    clock.advance(100)
    pacer.record_failure()  # the live connection gets -429 at t=0
    start = clock.now()
    attempts = []
    while True:
        assert await pacer.wait_turn()
        t = clock.now() - start
        attempts.append(t)
        if t >= 10:
            break
        pacer.record_failure()
    assert len(attempts) - 1 <= 5  # attempts during the refusal
    assert attempts[-1] - 10 <= 5.0


async def test_the_later_of_window_and_backoff_wins() -> None:
    clock = FakeClock(T0)
    pacer = make(clock, rng=MaxRandom(), backoff_base=0.25)
    assert pacer.try_turn()
    pacer.record_failure()  # backoff 0.25 s, but the 1-per-1 s window says 1 s
    assert pacer.next_turn_in() == pytest.approx(1.0)
    assert await pacer.wait_turn()
    assert clock.now() - T0 == pytest.approx(1.0)
    for _ in range(4):
        pacer.record_failure()  # 5 failures: backoff 0.25*16 = 4 s > window (2 per 4 s: 3 s)
    assert pacer.next_turn_in() == pytest.approx(4.0)


async def test_wait_turn_gives_up_before_a_deadline_it_cannot_meet() -> None:
    clock = FakeClock(T0)
    pacer = make(clock, rng=MaxRandom(), backoff_cap=30.0)
    for _ in range(5):
        pacer.record_failure()  # backoff 16 s
    before = pacer.attempts_total
    assert await pacer.wait_turn(deadline=clock.now() + 10) is False
    assert clock.now() == T0  # returned at once, no sleeping
    assert pacer.attempts_total == before
    assert await pacer.wait_turn(deadline=clock.now() + 20) is True
    assert clock.now() - T0 == pytest.approx(16.0)


async def test_a_stable_success_resets_failures_an_unstable_one_does_not() -> None:
    clock = FakeClock(T0)
    pacer = make(clock, stable_after=5.0, rng=MaxRandom())
    for _ in range(3):
        pacer.record_failure()
    since = pacer.failing_since
    assert since == T0
    clock.advance(2)
    pacer.record_success()  # connected...
    clock.advance(1)
    pacer.record_failure()  # ...and refused 1 s later: not stable
    assert pacer.failures == 4
    assert pacer.failing_since == since
    pacer.record_success()
    clock.advance(5)
    assert pacer.failures == 0  # survived stable_after
    assert pacer.failing_since is None
    assert pacer.record_failure() == pytest.approx(1.0)  # backoff starts over from the base


async def test_waiters_sharing_a_pacer_never_share_a_turn() -> None:
    clock = FakeClock(T0)
    pacer = make(clock)
    got: list[float] = []

    async def one() -> None:
        await pacer.wait_turn()
        got.append(clock.now() - T0)

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(5))), 5)
    assert sorted(got) == pytest.approx([0, 1, 4, 8, 9])


async def test_a_cancelled_waiter_takes_no_turn() -> None:
    clock = FakeClock(T0, auto_advance=False)
    pacer = make(clock)
    assert pacer.try_turn()
    task = asyncio.ensure_future(pacer.wait_turn())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pacer.attempts_total == 1
    clock.advance(1)
    assert pacer.try_turn()


async def test_record_attempt_counts_in_the_windows() -> None:
    clock = FakeClock(T0)
    pacer = make(clock)
    pacer.record_attempt()
    pacer.record_attempt()  # recorded even though the window said no
    assert pacer.attempts_total == 2
    assert pacer.next_turn_in() == pytest.approx(4.0)  # 2 per 4 s


async def test_try_turn_never_waits() -> None:
    clock = FakeClock(T0)
    pacer = make(clock)
    assert pacer.try_turn()
    assert not pacer.try_turn()
    assert pacer.next_turn_in() == pytest.approx(1.0)


async def test_scaled_keeps_the_shape() -> None:
    clock = FakeClock(T0)
    pacer = ReconnectPacer.scaled(0.25, clock=clock.now, sleep=clock.sleep, rng=ZeroRandom())
    assert pacer.windows == ((1, 0.25), (2, 1.0), (3, 2.0))
    assert pacer.backoff_cap == pytest.approx(4.0)
    times = []
    for _ in range(5):
        await pacer.wait_turn()
        times.append(clock.now() - T0)
    assert times == pytest.approx([0, 0.25, 1, 2, 2.25])


async def test_reset_forgets_failures_but_not_recent_attempts() -> None:
    clock = FakeClock(T0)
    pacer = make(clock, rng=MaxRandom())
    assert pacer.try_turn()
    for _ in range(4):
        pacer.record_failure()
    pacer.reset()
    assert pacer.failures == 0
    assert pacer.next_turn_in() == pytest.approx(1.0)  # the 1 s window still applies


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"windows": ()}, "windows"),
        ({"windows": ((0, 1.0),)}, "windows"),
        ({"windows": ((1, 0),)}, "windows"),
        ({"windows": ((1, float("inf")),)}, "windows"),
        ({"windows": ((1.5, 1.0),)}, "windows"),
        ({"windows": "abc"}, "windows"),
        ({"backoff_base": 0}, "backoff_base"),
        ({"backoff_base": -1}, "backoff_base"),
        ({"backoff_cap": float("nan")}, "backoff_cap"),
        ({"backoff_base": 5.0, "backoff_cap": 1.0}, "backoff_cap"),
        ({"stable_after": -1}, "stable_after"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"clock": 3}, "clock"),
    ],
)
def test_bad_settings_raise_at_construction(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(GuardConfigError) as ei:
        ReconnectPacer(**kwargs)  # type: ignore[arg-type]
    assert ei.value.field == field
