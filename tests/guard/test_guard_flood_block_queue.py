"""Calls waiting out a method's block learn at once whether they can make their deadline behind
the calls waiting with them (``FloodLedger._sift``): the method's learned pace lets them
through one slot at a time when the block ends, so a call the block alone leaves time for may
still be refused then -- after waiting the whole block. The guard knows this when the call
joins the wait (or when a later FLOOD_WAIT extends the block), and refuses it then.

(``telethon-guard demo --quick``, issue 13: ~20 calls made during the -429 storm met the
FLOOD_WAIT wave when the client reconnected, waited out its ~2 s block and were refused at its
end by the pace, 5.3-6.3 s into their 7 s deadline, some in its last 10 %.) Fake clock, the
fake sliding-window server of ``test_guard_pacing``."""

from __future__ import annotations

import asyncio

from guardfakes import bounded, make_call, make_pipeline
from test_guard_pacing import METHOD, START, WindowServer, open_loop

from telethon_guard.errors import DeadlineExceeded, FloodWaitBlocked
from telethon_guard.keys import method_flood_key


async def test_calls_the_pace_cannot_serve_after_the_block_are_refused_when_they_join() -> None:
    """A one-off FLOOD_WAIT_2 at 5 s (10 calls/s before: a hypothesis pace that ramps back to
    10/s after the wait), then 60 calls made at once 0.5 s into the block, 3 s of deadline
    each. The pace can serve some of them between the block's end (~7 s) and their deadline;
    the others are refused the moment they arrive, typed, with the wait they would have
    needed -- not at the block's end (before the fix: 1.5 s later, after waiting it out)."""
    pipe, clock, _ = make_pipeline(max_flood_wait=60.0)
    server = WindowServer(clock, None, 2.0, sporadic=[(5.0, 2)])
    ok: list[tuple[int, float]] = []
    failed: list[tuple[int, float, Exception]] = []

    async def burst() -> None:
        await clock.sleep(START + 5.5 - clock.now())
        t0 = clock.now()

        async def one(i: int) -> None:
            try:
                await pipe.invoke(make_call(METHOD, deadline_at=t0 + 3.0), server)
                ok.append((i, clock.now() - t0))
            except (FloodWaitBlocked, DeadlineExceeded) as e:
                failed.append((i, clock.now() - t0, e))

        await asyncio.gather(*(one(i) for i in range(60)))

    await bounded(asyncio.gather(open_loop(pipe, server, 10.0, 5.2, deadline=3.0), burst()), 30)
    assert server.floods
    assert ok and failed
    for _, after, e in failed:
        assert isinstance(e, FloodWaitBlocked) and not e.from_server, e
        assert after < 0.01, after  # refused on arrival, not after waiting the block
        assert after + (e.retry_after or 0.0) > 3.0 - 0.3  # the wait it needed did not fit
    assert all(after < 3.0 for _, after in ok)


async def test_a_flood_wait_that_extends_the_block_refuses_the_waiters_it_strands() -> None:
    """Five calls wait out a 2 s block with 3 s of deadline (it fits). 0.5 s later a FLOOD_WAIT
    extends the block to 4 s from then: none of the five can make it any more, and they are
    refused at that moment (before the fix: at 2 s, when each woke and checked again)."""
    pipe, clock, _ = make_pipeline(max_flood_wait=60.0)
    key = method_flood_key("a1", METHOD)
    await pipe.ledger.record_block(key, 2.0)
    t0 = clock.now()
    ended: list[tuple[float, BaseException | None]] = []

    async def one(deadline: float) -> None:
        try:
            await pipe.invoke(make_call(METHOD, deadline_at=t0 + deadline), lambda: _ok())
            ended.append((clock.now() - t0, None))
        except (FloodWaitBlocked, DeadlineExceeded) as e:
            ended.append((clock.now() - t0, e))

    async def _ok() -> str:
        return "ok"

    waiters = [asyncio.ensure_future(one(3.0)) for _ in range(5)]
    await clock.sleep(0.5)
    await pipe.ledger.record_block(key, 4.0)  # what a server FLOOD_WAIT_4 records (_flooded)
    late = asyncio.ensure_future(one(10.0))  # a call joining the (extended) wait
    await bounded(asyncio.gather(*waiters, late), 30)
    refused = [(t, e) for t, e in ended if e is not None]
    assert len(refused) == 5, ended
    for t, e in refused:
        assert isinstance(e, FloodWaitBlocked) and not e.from_server, e
        assert abs(t - 0.5) < 1e-6, t  # when the extension became known, not at 2 s
    assert [t for t, e in ended if e is None] == [4.5]


async def test_calls_released_by_a_blocks_end_reach_the_pace_earliest_deadline_first() -> None:
    """30 calls with 30 s of deadline join a FLOOD_WAIT_2's block, then 30 with 2.5 s. The
    short ones that the pace (a first flood's hypothesis) can serve before their deadline are
    kept -- counted ahead of the long ones -- and must also go first when the block ends:
    released in the order they were counted, none of them is overtaken and refused at the
    block's end (before: released in the order their waits ended, the long ones took the first
    slots and the short ones kept were refused there, 1.4 s after they joined)."""
    pipe, clock, _ = make_pipeline(max_flood_wait=60.0)
    server = WindowServer(clock, None, 2.0, sporadic=[(5.0, 2)])
    ok: list[tuple[str, float]] = []
    failed: list[tuple[str, float, Exception]] = []

    async def one(kind: str, deadline: float) -> None:
        t0 = clock.now()
        try:
            await pipe.invoke(make_call(METHOD, deadline_at=t0 + deadline), server)
            ok.append((kind, clock.now() - t0))
        except (FloodWaitBlocked, DeadlineExceeded) as e:
            failed.append((kind, clock.now() - t0, e))

    async def bursts() -> None:
        await clock.sleep(START + 5.5 - clock.now())
        long = [asyncio.ensure_future(one("long", 30.0)) for _ in range(30)]
        await clock.sleep(0.1)
        short = [asyncio.ensure_future(one("short", 2.5)) for _ in range(30)]
        await asyncio.gather(*long, *short)

    await bounded(asyncio.gather(open_loop(pipe, server, 10.0, 5.2, deadline=3.0), bursts()), 30)
    pacer = pipe.ledger.pacer
    assert server.floods and pacer is not None and not pacer.is_held("a1", METHOD)
    assert any(k == "short" for k, _ in ok)  # the pace served some short ones in time ...
    for kind, after, e in failed:  # ... and the others were refused when they joined
        assert kind == "short" and after < 0.01, (kind, after, e)
    assert sum(1 for k, _ in ok if k == "long") == 30
    assert all(after < 2.5 for k, after in ok if k == "short")
