from __future__ import annotations

import asyncio
import logging
import random

import pytest
from guardfakes import Recorder, bounded, make_call, send_call
from telethon import errors as te

from telethon_guard.call import CallInfo
from telethon_guard.config import GuardConfig
from telethon_guard.errors import DeadlineExceeded, FloodWaitBlocked
from telethon_guard.events import EventBus, FloodBlocked, ObservedDelay, RequestLimited
from telethon_guard.fakeclock import FakeClock
from telethon_guard.keys import is_private_peer, is_send
from telethon_guard.limiter import (
    LimitKeys,
    RateLimiter,
    RateLimitLayer,
)
from telethon_guard.storage import LimitSpec
from telethon_guard.storage.memory import MemoryStorage


def max_in_window(times: list[float], period: float) -> int:
    """Largest number of ``times`` inside any half-open interval of length ``period``."""
    ts = sorted(times)
    best = 0
    j = 0
    for i in range(len(ts)):
        while ts[i] - ts[j] >= period - 1e-9:
            j += 1
        best = max(best, i - j + 1)
    return best


def make(clock: FakeClock | None = None, **kw: object) -> tuple[RateLimiter, MemoryStorage,
                                                                 FakeClock, Recorder]:
    clock = clock or FakeClock()
    st = MemoryStorage(clock, **kw)  # type: ignore[arg-type]
    rec = Recorder()
    return RateLimiter(st, clock, EventBus([rec])), st, clock, rec


def test_single_window_slots() -> None:
    lim, _, _, _ = make()
    spec = [LimitSpec("k", ((3, 1.0),))]
    delays = [lim.decide(spec)[0] for _ in range(7)]
    assert delays == [0, 0, 0, 1, 1, 1, 2]


def test_multi_window_10_per_second_and_200_per_minute() -> None:
    lim, st, clock, _ = make()
    spec = [LimitSpec("acct", ((10, 1.0), (200, 60.0)))]
    start = clock.now()
    slots = [start + lim.decide(spec)[0] for _ in range(401)]
    assert max_in_window(slots, 1.0) == 10
    assert max_in_window(slots, 60.0) == 200
    # 200 go in the first 20 s (10/s), the 201st waits for the minute to roll over.
    assert slots[199] - start == pytest.approx(19.0)
    assert slots[200] - start == pytest.approx(60.0)
    assert st.key_count() == (1, 0)


def test_sliding_window_never_exceeds_count_with_random_arrivals() -> None:
    clock = FakeClock(auto_advance=False)
    lim, _, _, _ = make(clock)
    rng = random.Random(5)
    spec = [LimitSpec("k", ((5, 1.0), (20, 10.0)))]
    slots = []
    for _ in range(500):
        clock.advance(rng.expovariate(8.0))
        slots.append(clock.now() + lim.decide(spec)[0])
    assert max_in_window(slots, 1.0) <= 5
    assert max_in_window(slots, 10.0) <= 20
    assert slots == sorted(slots)  # FIFO: slots never go backwards


def test_multi_key_reservation_commits_the_same_slot_everywhere() -> None:
    lim, st, clock, _ = make()
    glob = LimitSpec("acct", ((1, 1.0),))
    peer = LimitSpec("acct/peer:1", ((1, 5.0),), True)
    assert lim.decide([glob, peer])[0] == 0
    assert lim.decide([glob])[0] == 1.0
    # The peer key is bound until 5 s; its slot is recorded on the global key too.
    d = lim.decide([glob, peer])[0]
    assert d == 5.0
    assert st.slots("acct") == [clock.now(), clock.now() + 1, clock.now() + 5]
    assert lim.decide([glob])[0] == 6.0


async def test_fifo_among_waiters() -> None:
    lim, _, clock, rec = make()
    spec = [LimitSpec("k", ((1, 1.0),))]
    order: list[int] = []
    when: list[float] = []

    async def worker(i: int) -> None:
        await lim.acquire(spec)
        order.append(i)
        when.append(clock.now())

    tasks = []
    for i in range(20):
        tasks.append(asyncio.create_task(worker(i)))
        await asyncio.sleep(0)  # arrival order 0..19
    await bounded(asyncio.gather(*tasks))
    assert order == list(range(20))
    assert when == [1000.0 + i for i in range(20)]
    assert len(rec.of(RequestLimited)) == 19


async def test_atomic_under_concurrency() -> None:
    lim, _, clock, _ = make()
    spec = [LimitSpec("k", ((5, 1.0), (12, 5.0)))]
    granted: list[float] = []

    async def worker() -> None:
        await asyncio.sleep(0)
        await lim.acquire(spec)
        granted.append(clock.now())

    await bounded(asyncio.gather(*(worker() for _ in range(60))))
    assert len(granted) == 60
    assert max_in_window(granted, 1.0) <= 5
    assert max_in_window(granted, 5.0) <= 12


async def test_cancelled_waiter_gives_back_and_later_waiters_move_up() -> None:
    lim, st, clock, _ = make()
    spec = [LimitSpec("k", ((1, 1.0),))]
    assert lim.decide(spec)[0] == 0  # slot at t0
    t0 = clock.now()
    done: dict[str, float] = {}

    async def waiter(name: str) -> None:
        await lim.acquire(spec)
        done[name] = clock.now() - t0

    b = asyncio.create_task(waiter("b"))  # slot t0+1
    await asyncio.sleep(0)
    c = asyncio.create_task(waiter("c"))  # slot t0+2
    await asyncio.sleep(0)
    assert lim.queue_length == 2
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    await bounded(c)
    assert done == {"c": 1.0}
    assert lim.queue_length == 0
    assert st.slots("k") == [t0 + 1]  # live slots: c moved up into b's slot, t0+2 is gone


async def test_a_woken_waiter_keeps_its_slot_when_another_gives_back() -> None:
    # a's timer fired (its future is resolved) but its task has not run yet when g, cancelled
    # just before, gives its slot back: a goes with the slot it was woken for (re-reserving
    # it moved its record off that slot and armed a timer for a waiter already woken).
    lim, st, clock, _ = make(FakeClock(auto_advance=False))
    spec = [LimitSpec("k", ((1, 10.0),))]
    lim.decide(spec)
    t0 = clock.now()
    a = asyncio.create_task(lim.acquire(spec))  # slot t0+10
    g = asyncio.create_task(lim.acquire(spec))  # slot t0+20
    for _ in range(3):
        await asyncio.sleep(0)
    assert lim.queue_length == 2
    g.cancel()  # g's task runs first (scheduled first), a's right after
    clock.advance(10.5)  # a's timer fires: its future is resolved, its task not run yet
    assert await bounded(a) == pytest.approx(10.5)
    with pytest.raises(asyncio.CancelledError):
        await g
    assert st.slots("k") == [t0 + 10]  # a's slot where it was woken; g's given back


async def test_a_slot_given_back_in_the_background_that_fails_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    class Shared(MemoryStorage):
        is_local = False  # used through the async API, as a shared backend

        async def release(self, specs: object, token: object) -> None:
            raise ConnectionError("storage went away")

    clock = FakeClock()
    lim = RateLimiter(Shared(clock), clock)
    spec = [LimitSpec("k", ((1, 10.0),))]
    await lim.acquire(spec)
    caplog.set_level(logging.WARNING, logger="telethon_guard")
    with pytest.raises(DeadlineExceeded):  # the slot (10 s) is beyond the deadline: given back
        await lim.acquire(spec, deadline_at=clock.now() + 5, method="m")
    for _ in range(5):
        await asyncio.sleep(0)
    assert any("giving a slot back" in r.getMessage() and r.exc_info
               for r in caplog.records)


async def test_slot_beyond_deadline_raises_at_once_and_is_given_back() -> None:
    lim, st, clock, _ = make()
    spec = [LimitSpec("k", ((1, 10.0),))]
    lim.decide(spec)
    t0 = clock.now()
    with pytest.raises(DeadlineExceeded):
        await lim.acquire(spec, deadline_at=t0 + 5, method="m")
    assert clock.now() == t0  # no waiting at all
    assert st.slots("k") == [t0]  # the refused slot was given back
    assert lim.decide(spec)[0] == 10.0


def test_per_peer_keys_are_bounded() -> None:
    lim, st, _, _ = make(max_peer_keys=100)
    for peer in range(1000):
        lim.decide([LimitSpec(f"acct/peer:{peer}", ((1, 1.0),), True)])
    assert st.key_count() == (0, 100)
    assert st.peer_evictions == 900
    # Most recently used peers survive.
    assert st.slots("acct/peer:999") and not st.slots("acct/peer:0")


def test_lru_keeps_recently_used_peer() -> None:
    lim, st, _, _ = make(max_peer_keys=2)
    a = [LimitSpec("p:a", ((1, 60.0),), True)]
    lim.decide(a)
    lim.decide([LimitSpec("p:b", ((1, 60.0),), True)])
    lim.decide(a)  # touch a (second slot), b is now least recently used
    lim.decide([LimitSpec("p:c", ((1, 60.0),), True)])
    assert st.slots("p:a") and not st.slots("p:b")


def test_empty_specs_cost_nothing() -> None:
    lim, _, _, _ = make()
    assert lim.decide([])[0] == 0


async def test_observe_mode_never_waits_but_reports() -> None:
    clock = FakeClock()
    st = MemoryStorage(clock)
    rec = Recorder()
    lim = RateLimiter(st, clock, EventBus([rec]), observe=True)
    spec = [LimitSpec("k", ((1, 1.0),))]
    for _ in range(3):
        assert await lim.acquire(spec) == 0.0
    assert clock.now() == 1000.0
    obs = rec.of(ObservedDelay)
    # Each delay is measured against what was really sent (all at t0, nothing waited).
    assert [round(o.seconds, 3) for o in obs] == [1.0, 1.0]
    assert max_in_window(st.slots("k"), 1.0) == 3  # observe records real send times


def test_limit_keys_for_calls() -> None:
    cfg = GuardConfig(rate_limits=((10, 1.0),),
                      method_limits={"messages.getHistory": ((30, 30.0),)},
                      send_limits=((30, 1.0),), peer_limits_private=((1, 1.0),),
                      peer_limits_group=((20, 60.0),))
    paces = {("a1", "messages.getHistory"): ((3, 9.0),)}
    keys = LimitKeys(cfg, lambda a, m: paces.get((a, m)))
    hist = keys.specs(make_call())
    assert [s.key for s in hist] == ["acct:a1", "acct:a1/dc:2/method:messages.getHistory",
                                     "acct:a1/pace:messages.getHistory"]
    priv = keys.specs(send_call(42))
    # Configured windows carry rate_margin (default 0.05 s) on their periods; a pace does not.
    assert [s.windows for s in hist] == [((10, 1.05),), ((30, 30.05),), ((3, 9.0),)]
    assert [(s.key, s.windows, s.bounded) for s in priv[1:]] == [
        ("acct:a1/sends", ((30, 1.05),), False), ("acct:a1/peer:42", ((1, 1.05),), True)]
    group = keys.specs(send_call(-100))
    assert group[-1] == LimitSpec("acct:a1/peer:-100", ((20, 60.05),), True)
    assert LimitKeys(GuardConfig()).specs(send_call(42)) == ()
    exact = LimitKeys(cfg.replace(rate_margin=0.0)).specs(send_call(42))
    assert [s.windows for s in exact] == [((10, 1.0),), ((30, 1.0),), ((1, 1.0),)]


def test_send_detection() -> None:
    assert is_send(send_call(5))
    assert not is_send(make_call(peer="peer:5"))
    assert is_private_peer("peer:5") and not is_private_peer("peer:-1005")



# ---- learned pace vs configured limits at the deadline / max_flood_wait ---------------------

PACE_KEY = "acct:a1/pace:messages.getHistory"
METHOD_KEY = "acct:a1/dc:2/method:messages.getHistory"


class Paced:
    """A RateLimitLayer over in-memory storage with a fixed "learned" pace and a fake network."""

    def __init__(self, pace: tuple[tuple[int, float], ...] | None, **cfg: object) -> None:
        self.clock = FakeClock()
        self.storage = MemoryStorage(self.clock)
        self.rec = Recorder()
        lim = RateLimiter(self.storage, self.clock, EventBus([self.rec]))
        keys = LimitKeys(GuardConfig(**cfg), lambda a, m: pace)  # type: ignore[arg-type]
        self.layer = RateLimitLayer(lim, keys)
        self.sent: list[float] = []

    async def call(self, *, deadline: float | None = None,
                   max_flood_wait: float | None = None) -> str:
        now = self.clock.now()
        call = make_call(deadline_at=None if deadline is None else now + deadline)
        call.max_flood_wait = max_flood_wait
        call.budget = deadline

        async def call_next(call: CallInfo) -> str:
            return str(await self._net())

        result: str = await bounded(self.layer.handle(call, call_next))
        return result

    async def _net(self) -> str:
        self.sent.append(self.clock.now())
        return "sent"


async def test_learned_pace_wait_over_max_flood_wait_raises_flood_wait_blocked_at_once() -> None:
    p = Paced(((1, 20.0),), max_flood_wait=5.0)
    assert await p.call() == "sent"
    t0 = p.clock.now()
    with pytest.raises(FloodWaitBlocked) as info:
        await p.call()  # no deadline: only max_flood_wait bounds the pace's wait
    e = info.value
    assert isinstance(e, te.FloodWaitError)  # callers' except FloodWaitError still catches it
    assert e.from_server is False
    assert e.retry_after == pytest.approx(20.0) and e.seconds == 20
    assert e.scope == "acct:a1/method:messages.getHistory"
    assert e.method == "messages.getHistory"
    assert p.clock.now() == t0 and p.clock.sleeps == []  # nothing waited
    assert p.sent == [t0]  # no network call
    assert p.storage.slots(PACE_KEY) == [t0]  # the refused slot was given back
    (ev,) = p.rec.of(FloodBlocked)
    assert ev.from_server is False and ev.seconds == pytest.approx(20.0)
    # the per-call override (flood_sleep_threshold) counts as max_flood_wait
    with pytest.raises(FloodWaitBlocked):
        await p.call(max_flood_wait=1.0)


async def test_learned_pace_wait_beyond_the_deadline_is_a_flood_error_not_a_timeout() -> None:
    p = Paced(((1, 20.0),), max_flood_wait=60.0)
    await p.call()
    t0 = p.clock.now()
    with pytest.raises(FloodWaitBlocked) as info:
        await p.call(deadline=8.0)
    assert info.value.retry_after == pytest.approx(20.0)
    assert p.clock.now() == t0 and p.sent == [t0]
    assert p.storage.slots(PACE_KEY) == [t0]
    # a pace wait that fits both is waited as before
    assert await p.call(deadline=30.0) == "sent"
    assert p.sent == [t0, t0 + 20.0]


async def test_the_pace_share_decides_when_configured_limits_apply_too() -> None:
    # Both bind; the pace alone (20 s) does not fit max_flood_wait: flood error with the pace's
    # own seconds, not the combined 30 s.
    p = Paced(((1, 20.0),), max_flood_wait=5.0,
              method_limits={"messages.getHistory": ((1, 30.0),)})
    await p.call()
    t0 = p.clock.now()
    with pytest.raises(FloodWaitBlocked) as info:
        await p.call()
    assert info.value.retry_after == pytest.approx(20.0)
    assert p.storage.slots(METHOD_KEY) == [t0] and p.storage.slots(PACE_KEY) == [t0]


async def test_configured_limit_beyond_the_deadline_stays_deadline_exceeded_at_once() -> None:
    # The pace (1 per 8 s) would fit; the configured 1 per 30 s does not fit the 10 s deadline.
    p = Paced(((1, 8.0),), max_flood_wait=60.0,
              method_limits={"messages.getHistory": ((1, 30.0),)})
    await p.call()
    t0 = p.clock.now()
    with pytest.raises(DeadlineExceeded):
        await p.call(deadline=10.0)
    assert p.clock.now() == t0 and p.clock.sleeps == []  # failed fast, slept nothing
    assert p.sent == [t0]
    assert p.storage.slots(METHOD_KEY) == [t0] and p.storage.slots(PACE_KEY) == [t0]
    assert p.rec.of(FloodBlocked) == []


async def test_configured_limit_over_max_flood_wait_is_still_waited_when_the_pace_fits() -> None:
    # max_flood_wait bounds flood waits, not configured rate limits: with no deadline the 30 s
    # of the configured window are waited as before, even with a (small) learned pace present.
    p = Paced(((1, 1.0),), max_flood_wait=5.0, rate_margin=0.0,
              method_limits={"messages.getHistory": ((1, 30.0),)})
    await p.call()
    t0 = p.clock.now()
    assert await p.call() == "sent"
    assert p.sent == [t0, t0 + 30.0]
    assert p.rec.of(FloodBlocked) == []
    assert [round(e.waited, 3) for e in p.rec.of(RequestLimited)] == [30.0]


async def test_configured_limit_without_pace_beyond_deadline_fails_fast() -> None:
    p = Paced(None, rate_limits=((1, 30.0),))
    await p.call()
    t0 = p.clock.now()
    with pytest.raises(DeadlineExceeded):
        await p.call(deadline=10.0)
    assert p.clock.now() == t0 and p.clock.sleeps == [] and p.sent == [t0]
    assert p.storage.slots("acct:a1") == [t0]


def test_delay_sync_peeks_without_reserving() -> None:
    lim, st, clock, _ = make()
    spec = [LimitSpec("k", ((2, 10.0),))]
    assert st.delay_sync(spec) == 0.0 and st.key_count() == (0, 0)  # no key created
    lim.decide(spec)
    lim.decide(spec)
    assert st.delay_sync(spec) == 10.0
    assert st.slots("k") == [clock.now(), clock.now()]  # nothing committed by the peek


def test_decisions_match_a_brute_force_model_under_random_operations() -> None:
    """Lazy trimming, the unrolled 1- and 2-window paths and the multi-key path decide exactly
    what the definition says: the earliest t >= now with ``slots[-n] + p <= t`` for every
    window (n, p) of every key, over ALL slots ever granted and not given back."""
    rng = random.Random(11)
    clock = FakeClock(auto_advance=False)
    st = MemoryStorage(clock, max_peer_keys=1000)
    specs = {
        "one": LimitSpec("one", ((3, 1.0),)),
        "two": LimitSpec("two", ((10, 1.0), (200, 60.0))),
        "two_b": LimitSpec("two_b", ((5, 2.0), (2, 0.5))),  # windows not in count order
        "two_c": LimitSpec("two_c", ((50, 100.0), (1, 0.2))),
        "three": LimitSpec("three", ((2, 0.3), (5, 1.0), (30, 10.0))),
        "peer": LimitSpec("acct/peer:1", ((1, 0.7), (4, 5.0)), True),
    }
    singles = {k: (spec,) for k, spec in specs.items()}
    model: dict[str, list[float]] = {k: [] for k in specs}
    granted: list[tuple[list[str], float]] = []
    for step in range(4000):
        clock.advance(rng.expovariate(6.0))
        now = clock.now()
        op = rng.random()
        if op < 0.08 and granted:
            names, token = granted.pop(rng.randrange(len(granted)))
            st.release_sync([specs[n] for n in names], token)
            for n in names:
                if token in model[n]:
                    model[n].remove(token)
            continue
        names = rng.sample(sorted(specs), rng.choice((1, 1, 1, 2, 3)))
        observe = rng.random() < 0.1
        expect = now
        for n in names:
            log = sorted(model[n])
            for count, period in specs[n].windows:
                if len(log) >= count:
                    expect = max(expect, log[-count] + period)
        arg: list[LimitSpec] | tuple[LimitSpec, ...] = [specs[n] for n in names]
        if len(names) == 1 and rng.random() < 0.7:
            arg = singles[names[0]]  # the same tuple again and again: the decider's memo hits
        delay, token = st.reserve_fast(arg, observe)
        assert delay == pytest.approx(expect - now, abs=1e-9), (step, names)
        assert token == (now if observe else now + delay)
        for n in names:
            model[n].append(token)
        granted.append((names, token))
    # Memory stays bounded: each log holds at most its cap (2 x largest count + slack) plus
    # what lies within its longest period.
    for n, spec in specs.items():
        kl = (st._peers if spec.bounded else st._keys)[spec.key]
        assert len(kl.log) <= max(kl.cap, 2 * len(st.slots(spec.key))) + 1, n


def test_stale_slots_are_trimmed_once_a_log_outgrows_its_cap() -> None:
    lim, st, clock, _ = make()
    spec = [LimitSpec("k", ((2, 1.0),))]
    for _ in range(1000):
        clock.advance(1.0)
        assert lim.decide(spec)[0] == 0
    kl = st._keys["k"]
    assert len(kl.log) <= kl.cap + 1 == 2 * 2 + 64 + 1
    assert st.slots("k") == [clock.now()]  # only live slots are reported


def test_decider_memo_follows_window_changes_made_elsewhere() -> None:
    """The decider remembers the last spec tuple and its key's log; when another spec of the
    same key (a learned pace decays to new windows) changed the windows, it applies its own."""
    clock = FakeClock(auto_advance=False)
    st = MemoryStorage(clock)
    decide = st.decider()
    slow = (LimitSpec("k", ((1, 10.0),)),)
    fast = (LimitSpec("k", ((1, 1.0),)),)
    t0 = clock.now()
    assert decide(slow) == (0.0, t0)
    assert st.reserve_fast(fast) == (1.0, t0 + 1.0)  # other decider: the key's windows change
    # 1 per 10 s again: the slot after t0+1 is t0+11 (with the stale windows it would be t0+2)
    assert decide(slow) == (11.0, t0 + 11.0)
    assert decide(slow) == (21.0, t0 + 21.0)  # memo hit: same tuple, same windows


def test_decider_does_not_memoize_mutable_spec_lists() -> None:
    clock = FakeClock(auto_advance=False)
    st = MemoryStorage(clock)
    decide = st.decider()
    specs = [LimitSpec("a", ((1, 5.0),))]
    t0 = clock.now()
    assert decide(specs) == (0.0, t0)
    specs[0] = LimitSpec("b", ((1, 5.0),))  # same list object, another key
    assert decide(specs) == (0.0, t0)  # key "b" is free: not confused with "a"
    assert st.slots("a") == [t0] and st.slots("b") == [t0]


def test_decider_takes_the_general_path_for_peers_and_several_keys() -> None:
    clock = FakeClock(auto_advance=False)
    st = MemoryStorage(clock, max_peer_keys=1)
    decide = st.decider()
    t0 = clock.now()
    peer_a = (LimitSpec("p:a", ((1, 5.0),), True),)
    peer_b = (LimitSpec("p:b", ((1, 5.0),), True),)
    assert decide(peer_a) == (0.0, t0)
    assert decide(peer_b) == (0.0, t0)  # evicts p:a (LRU of 1)
    assert st.peer_evictions == 1
    assert decide(peer_a) == (0.0, t0)  # a fresh log: the evicted key is not resurrected
    both = (LimitSpec("g", ((1, 2.0),)), LimitSpec("h", ((1, 3.0),)))
    assert decide(both) == (0.0, t0)
    assert decide(both) == (3.0, t0 + 3.0)
    assert st.slots("g") == st.slots("h") == [t0, t0 + 3.0]


@pytest.mark.parametrize("count", [10**9, 5000])
def test_a_huge_count_is_trimmed_by_the_windows_age(count: int) -> None:
    """A count far above the calls made ("effectively unlimited") kept one slot per call for
    ever: the log was trimmed only past 2 x count + 64 entries. Now by age too: the log holds
    at most twice the live slots (or the base threshold) plus one."""
    lim, st, clock, _ = make()
    specs = (LimitSpec("k", ((count, 1.0),)),)
    for i in range(20_000):
        clock.advance(0.01 if i < 10_000 else 0.001)  # 100 live slots, then 1000
        assert lim.decide(specs)[0] == 0
        assert lim.decide([specs[0]])[0] == 0  # the general path too
    kl = st._keys["k"]
    live = len(st.slots("k"))
    assert 1990 <= live <= 2010  # two slots per step, 1000 steps within the last second
    assert len(kl.log) <= max(2 * 512 + 64, 2 * live) + 1
