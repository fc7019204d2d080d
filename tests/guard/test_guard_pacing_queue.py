"""Issue 13 item 3, "the demo serves": calls queued during an outage and released together into
a FLOOD_WAIT wave either complete within their deadline or fail the moment the guard knows they
cannot. Fake clock and the fake sliding-window server of ``test_guard_pacing`` (the shape of
``telethon-guard demo``: 20 calls/s, the method limited to 20 per 2 s for a while, calls queued
behind a reconnect released at once)."""

from __future__ import annotations

import asyncio

from guardfakes import Recorder, bounded, make_call, make_pipeline
from test_guard_pacing import METHOD, START, Outcomes, WindowServer, open_loop

from telethon_guard.errors import DeadlineExceeded, FloodWaitBlocked
from telethon_guard.events import FloodWaitStarted, PaceLearned
from telethon_guard.pipeline import Pipeline

DEADLINE = 14.0  # the demo's per-call deadline (seconds)
RATE = 20.0  # the demo worker's calls per second


async def _queued(pipe: Pipeline, server: WindowServer, out: Outcomes, issued: float) -> None:
    """A call issued at ``issued`` (seconds since START) that waited out an outage: it reaches
    the pipeline now, with what is left of its deadline."""
    clock = server.clock
    try:
        await pipe.invoke(make_call(METHOD, deadline_at=START + issued + DEADLINE), server)
        out.ok.append(clock.now() - START)
        out.spans.append((issued, clock.now() - START))
    except (FloodWaitBlocked, DeadlineExceeded) as e:
        out.failed.append((clock.now() - START, e))


async def _demo_shape(backlog_from: float, released: float, wave: tuple[float, float],
                      until: float) -> tuple[Outcomes, Outcomes, WindowServer, Recorder]:
    """Calls at RATE/s from 0 s; those issued in ``[backlog_from, released)`` are held (the
    outage) and all reach the pipeline at ``released``; the server limits the method to 20
    per 2 s during ``wave``; the open loop goes on from ``released`` to ``until``."""
    pipe, clock, rec = make_pipeline(max_flood_wait=60.0)
    server = WindowServer(clock, None, 2.0)
    before = await bounded(open_loop(pipe, server, RATE, backlog_from, deadline=DEADLINE), 30)
    await clock.sleep(START + released - clock.now())
    start, stop = wave
    if start <= released:
        server.set_limit(20)  # the wave started during the outage (its window is empty)

    async def schedule() -> None:
        if start > released:
            await clock.sleep(START + start - clock.now())
            server.set_limit(20)
        await clock.sleep(START + stop - clock.now())
        server.set_limit(None)

    changes = asyncio.ensure_future(schedule())
    queued = Outcomes()
    n = int((released - backlog_from) * RATE)
    backlog = [asyncio.ensure_future(_queued(pipe, server, queued, backlog_from + i / RATE))
               for i in range(n)]
    later = Outcomes()

    async def after() -> None:
        # The worker keeps calling at RATE/s from the release on (open_loop counts from START).
        i = 0
        tasks = []
        while released + i / RATE < until:
            await clock.sleep(START + released + i / RATE - clock.now())
            call_at = released + i / RATE
            tasks.append(asyncio.ensure_future(_queued(pipe, server, later, call_at)))
            i += 1
        await asyncio.gather(*tasks)

    await bounded(asyncio.gather(*backlog, after(), changes), 60)
    assert before.ok and not before.failed
    return queued, later, server, rec


async def test_a_backlog_released_into_a_wave_is_served_within_its_deadlines() -> None:
    """The demo's incident: 140 calls queued during a 7 s outage reach the guard together at
    8 s, into a wave (20 per 2 s, 5 to 10 s). The server accepts ~20 and answers the rest
    FLOOD_WAIT_2; the guard learns a pace from it. The wave is over at 10 s: every queued
    call still has 7 to 14 s of its deadline then, so none may be refused. (Before issue 13
    item 3, a learned pace never held a call longer than Telegram's X = 2 s: ~100 of them were
    refused at once at 10 s, ``FloodWaitBlocked`` with 4.6 to 14 s of deadline left.)"""
    queued, later, server, rec = await _demo_shape(1.0, 8.0, (5.0, 10.0), 20.0)
    assert rec.of(PaceLearned)  # the wave taught a pace ...
    assert len(server.floods) >= 50  # ... from the backlog sent into it at once
    assert not queued.failed, [(t, repr(e)) for t, e in queued.failed[:5]]
    assert not later.failed, [(t, repr(e)) for t, e in later.failed[:5]]
    assert len(queued.ok) == 140
    for issued, done in queued.spans + later.spans:
        assert done - issued < DEADLINE
    # The pace was a hypothesis about a wave that ended: it is dropped, and the queue went
    # with it, not one learned spacing at a time (140 calls at ~10/s would take 14 s).
    assert max(done for _, done in queued.spans) < 10.0 + 2.0 + 2.0 + 1.0


async def test_calls_after_the_first_flood_wait_wait_on_the_ledger() -> None:
    """The backlog is sent before any answer comes back (one burst: every call in it draws its
    own FLOOD_WAIT, nothing can stop what is already sent). From the first FLOOD_WAIT on, the
    guard knows the method is blocked: calls made afterwards wait on the ledger (within their
    deadline) instead of drawing their own FLOOD_WAIT, and succeed after the block."""
    _, later, server, rec = await _demo_shape(1.0, 8.0, (5.0, 10.0), 20.0)
    burst = [t for t in server.floods if t < 8.0 + 0.1]
    assert burst and len(burst) == len(server.floods), server.floods
    waited = [e for e in rec.of(FloodWaitStarted) if not e.from_server]
    assert waited  # the calls made during the block waited on the ledger ...
    assert all(0 < e.seconds <= 2.0 + 1e-6 for e in waited)
    assert not later.failed  # ... and were served


async def test_a_pace_still_refuses_a_call_it_knows_cannot_make_its_deadline() -> None:
    """Fail fast stays: with a real limit behind the pace (the wave lasts the whole run, demand
    twice the limit, deadline 3 s), a call whose deadline the held pace cannot meet is refused
    before its deadline, typed, with the wait it would have needed."""
    pipe, clock, rec = make_pipeline(max_flood_wait=60.0)
    server = WindowServer(clock, 20, 2.0)
    failed: list[tuple[float, float, Exception]] = []  # (issued, ended, error)
    ok: list[tuple[float, float]] = []

    async def one(issued: float) -> None:
        try:
            await pipe.invoke(make_call(METHOD, deadline_at=START + issued + 3.0), server)
            ok.append((issued, clock.now() - START))
        except (FloodWaitBlocked, DeadlineExceeded) as e:
            failed.append((issued, clock.now() - START, e))

    tasks = []
    for i in range(int(30.0 * RATE)):
        await clock.sleep(START + i / RATE - clock.now())
        tasks.append(asyncio.ensure_future(one(i / RATE)))
    await bounded(asyncio.gather(*tasks), 60)
    assert rec.of(PaceLearned)
    # Refused before sending (a pace or ledger wait that does not fit: FloodWaitBlocked, or
    # DeadlineExceeded when the slot leaves the attempt less than its network budget).
    refused = [(a, b, e) for a, b, e in failed
               if not (isinstance(e, FloodWaitBlocked) and e.from_server)]
    assert refused  # calls the guard could not serve in time were refused ...
    for issued, ended, e in refused:  # ... typed, never after their deadline
        assert ended - issued <= 3.0 + 1e-6
        if isinstance(e, FloodWaitBlocked):
            assert (e.retry_after or 0.0) > 0.0
    # About half at once (the pace's expected wait is beyond their deadline when they
    # arrive); the others were held until the pace's next step, which still left no time.
    assert any(b - a < 0.1 for a, b, _ in refused)
    for issued, done in ok:
        assert done - issued < 3.0
    assert len(ok) >= 0.6 * 10.0 * 30.0  # served close to the limit (10/s), not starved
