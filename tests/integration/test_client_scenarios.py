"""Issue 3 scenarios (server scripts -> checkable results) through GuardedTelegramClient.

Times are scaled down where noted so the suite stays fast; each test says which numbers it
scaled and why the assertion still shows the behaviour. Ground truth is ``server.log``.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from telethon import errors as tl_errors
from telethon import utils
from telethon.tl import functions, types

from telethon_guard import (
    DeadlineExceeded,
    FloodPremiumBlocked,
    FloodWaitBlocked,
    GuardedTelegramClient,
    SlowModeBlocked,
)
from telethon_guard.errors import AlreadyDelivered
from telethon_guard.events import GuardEvent, RetryScheduled
from telethon_guard.storage import CLOSED
from telethon_guard.testing.faults import FaultPlan
from telethon_guard.testing.faults_calls import DropReplies, ErrorOnCalls, ResetOn
from telethon_guard.testing.faults_limits import FloodWindow, PeerFlood, PremiumFlood, SlowMode
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import AT_ONCE, bounded, measured


def _dialogs() -> functions.messages.GetDialogsRequest:
    return functions.messages.GetDialogsRequest(
        offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(), limit=10, hash=0)


def _me() -> functions.users.GetUsersRequest:
    return functions.users.GetUsersRequest([types.InputUserSelf()])


def _arrivals(server: TelegramTestServer, method: str) -> list[float]:
    """Server times of every request of ``method``, whatever its outcome."""
    return sorted(e.time for e in server.log.requests(method))


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# ---- FLOOD_WAIT ------------------------------------------------------------------------------


async def test_flood_wait_22_every_second_call_raises_as_soon_as_it_cannot_fit() -> None:
    # Real FLOOD_WAIT_22 on every 2nd getDialogs; the 60 s deadline is scaled to 20 s so the
    # 22 s wait cannot fit: the caller must get the typed error at once, not after sleeping.
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_22", every=2))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=20, max_flood_wait=60)
        async with client:
            await bounded(client(_dialogs()))  # call 1: OK
            t0 = time.monotonic()
            with pytest.raises(tl_errors.FloodWaitError) as e:
                await bounded(client(_dialogs()))  # call 2: FLOOD_WAIT_22
            elapsed = time.monotonic() - t0
            assert isinstance(e.value, FloodWaitBlocked) and e.value.from_server, repr(e.value)
            assert e.value.seconds == 22, (e.value.seconds, e.value.retry_after)
            assert e.value.method == "messages.getDialogs"
            # "At once": far below the 22 s it did not wait (the server log below shows it
            # did not retry either); a bound tied to the behaviour, not to machine speed.
            assert elapsed < AT_ONCE, elapsed
            # call 3: blocked locally (no network call: server count below), with the seconds
            t0 = time.monotonic()
            with pytest.raises(FloodWaitBlocked) as e3:
                await bounded(client(_dialogs()))
            local = time.monotonic() - t0
            assert local < AT_ONCE, local
            assert not e3.value.from_server and 20 <= e3.value.seconds <= 22
            measured("flood_wait_22_every_2nd", raise_after_s=elapsed, seconds=e.value.seconds,
                     local_fail_s=local, local_seconds=e3.value.seconds)
            assert server.log.count("messages.getDialogs") == 2
            # other methods keep flowing
            assert (await bounded(client(_me())))[0].id > 0


async def test_flood_wait_that_fits_is_slept_once_then_raised_when_the_next_cannot_fit() -> None:
    # FLOOD_WAIT_2 on every call with a 5 s deadline (scaled from 22 s / 60 s): the first two
    # waits fit (2 s, 4 s < 5 s), the third cannot (6 s > 5 s): the typed error comes as soon
    # as it cannot fit, not at the deadline. Adaptive pacing is off here so the flood ledger
    # alone decides.
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_2"))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5, max_flood_wait=60,
                               adaptive_pacing=False)
        async with client:
            t0 = time.monotonic()
            with pytest.raises(FloodWaitBlocked) as e:
                await bounded(client(_dialogs()))
            elapsed = time.monotonic() - t0
        assert e.value.seconds == 2 and e.value.from_server
        n = server.log.count("messages.getDialogs")
        assert n == 3, n
        gaps = _gaps(_arrivals(server, "messages.getDialogs"))
        assert all(g >= 1.95 for g in gaps), gaps
        # Raised after the two waits (the lower bound and the gaps), and before the deadline:
        # that is what the type shows (a call that slept into the 5 s deadline would end with
        # DeadlineExceeded), so no upper wall-clock bound that a busy machine could break.
        assert elapsed >= 3.9, elapsed
        measured("flood_wait_2_every_call_deadline_5", server_calls=n, gaps=gaps,
                 raised_after_s=elapsed)


async def test_flood_wait_120_over_max_flood_wait_raises_at_once_keeping_its_type() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_120"))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, max_flood_wait=60, deadline=300)
        async with client:
            t0 = time.monotonic()
            with pytest.raises(tl_errors.FloodWaitError) as e:
                await bounded(client.get_dialogs())
            elapsed = time.monotonic() - t0
            assert isinstance(e.value, FloodWaitBlocked) and e.value.from_server
            assert elapsed < AT_ONCE, elapsed  # far below the 120 s wait it did not sleep
        assert e.value.seconds == 120
        measured("flood_wait_120_max_60", raised_after_s=elapsed, type=type(e.value).__name__)
        assert server.log.count("messages.getDialogs") == 1


async def test_flood_wait_0_four_times_then_ok() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_0", times=4))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=30)
        async with client:
            result = await bounded(client(_dialogs()))
        assert isinstance(result, types.messages.Dialogs | types.messages.DialogsSlice)
        times = _arrivals(server, "messages.getDialogs")
        assert len(times) == 5
        gaps = _gaps(times)
        assert all(g >= 0.99 for g in gaps), gaps
        measured("flood_wait_0_x4", server_calls=len(times), min_gap_s=min(gaps))


async def test_resolve_username_flooded_48038_s_after_50_calls() -> None:
    plan = FaultPlan(FloodWindow("contacts.resolveUsername", 50, 86_400, seconds=48_038))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=60)
        async with client:
            for _ in range(50):
                await bounded(client(functions.contacts.ResolveUsernameRequest("alice")))
            t0 = time.monotonic()
            with pytest.raises(tl_errors.FloodWaitError) as e51:
                await bounded(client(functions.contacts.ResolveUsernameRequest("alice")))
            assert time.monotonic() - t0 < AT_ONCE  # not 48,038 s, nor the 60 s deadline
            assert e51.value.seconds == 48_038 and e51.value.from_server
            t0 = time.monotonic()
            for _ in range(52, 101):
                with pytest.raises(FloodWaitBlocked) as e:
                    await bounded(client(functions.contacts.ResolveUsernameRequest("bob")))
                assert not e.value.from_server and e.value.seconds >= 48_030
            local = time.monotonic() - t0
            assert local < AT_ONCE  # 49 local failures, no waiting (server count: no network)
            assert server.log.count("contacts.resolveUsername") == 51
            measured("resolve_username_48038", call51_seconds=e51.value.seconds,
                     calls_52_100_total_s=local,
                     server_calls=server.log.count("contacts.resolveUsername"))
            # other methods keep flowing
            for _ in range(5):
                await bounded(client(_me()))
            await bounded(client(_dialogs()))


# ---- slow mode, PEER_FLOOD, premium transfer waits ------------------------------------------


async def test_slow_mode_in_chat_a_leaves_b_and_c_alone() -> None:
    server = TelegramTestServer()
    chat_a = utils.get_peer_id(types.PeerChannel(server.world.channel_id("chat_a")))
    server.faults.add(SlowMode(60, peers=[chat_a]))
    async with server:
        client = server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=10)
        async with client:
            a, b, c = [await bounded(client.get_input_entity(n))
                       for n in ("chat_a", "chat_b", "chat_c")]
            await bounded(client.send_message(a, "a1"))
            t0 = time.monotonic()
            await bounded(client.send_message(b, "b1"))
            await bounded(client.send_message(c, "c1"))
            assert time.monotonic() - t0 < AT_ONCE  # B and C go out at once, not after 60 s
            with pytest.raises(tl_errors.SlowModeWaitError) as e:
                await bounded(client.send_message(a, "a2"))  # server: SLOWMODE_WAIT_~60
            assert isinstance(e.value, SlowModeBlocked) and e.value.from_server
            sends = server.log.count("messages.sendMessage")
            t0 = time.monotonic()
            with pytest.raises(SlowModeBlocked) as e2:
                await bounded(client.send_message(a, "a3"))
            assert time.monotonic() - t0 < AT_ONCE  # not the ~60 s of slow mode
            assert not e2.value.from_server and e2.value.seconds > 50
            assert server.log.count("messages.sendMessage") == sends  # no network call
            await bounded(client.send_message(b, "b2"))  # B still free
        stored = [m.peer for m in server.world.sent_messages()]
        assert stored.count(chat_a) == 1
        measured("slow_mode_60", second_a_seconds=e.value.seconds,
                 third_a_local=not e2.value.from_server, stored_in_a=stored.count(chat_a))


async def test_peer_flood_is_never_retried() -> None:
    plan = FaultPlan(PeerFlood(after=20))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10)
        async with client:
            chat = await bounded(client.get_input_entity("chat_b"))
            for i in range(20):
                await bounded(client.send_message(chat, f"m{i}"))
            for i in range(3):
                with pytest.raises(tl_errors.PeerFloodError):
                    await bounded(client.send_message(chat, f"spam{i}"))
                assert server.log.count("messages.sendMessage") == 20 + i + 1
        assert len(server.world.sent_messages()) == 20
        measured("peer_flood_20", server_sends=server.log.count("messages.sendMessage"),
                 attempts_after_flood=3)


async def test_premium_wait_pauses_all_upload_workers_once() -> None:
    # Scaled: 300 saveBigFilePart from 4 workers, FLOOD_PREMIUM_WAIT_1 above 60 parts/s
    # (issue: FLOOD_PREMIUM_WAIT_6 above 8 parts/s, which would take > 30 s).
    seconds = 1
    plan = FaultPlan(PremiumFlood(rate=60, seconds=seconds))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=10)
        file_id = 4242
        total = 300
        parts = iter(range(total))
        async with client:
            async def worker() -> None:
                for part in parts:
                    ok = await bounded(client(functions.upload.SaveBigFilePartRequest(
                        file_id=file_id, file_part=part, file_total_parts=total,
                        bytes=bytes([part % 256]) * 64)))
                    assert ok is True

            await bounded(asyncio.gather(*(worker() for _ in range(4))), 60)
        stored = server.world.uploaded_parts(file_id)
        assert len(stored) == total
        errors = [e for e in server.log.requests("upload.saveBigFilePart", "rpc_error")]
        assert errors and all(e.error_message.startswith("FLOOD_PREMIUM_WAIT") for e in errors)
        # One shared pause per server wait: after an error at t, only requests already in
        # flight (at most the other 3 workers) reach the server before t + seconds.
        starts = [e.time for e in errors]
        for t in starts:
            inside = [r for r in server.log.requests("upload.saveBigFilePart")
                      if t + 0.05 < r.time < t + seconds - 0.05]
            assert len(inside) <= 3, (t, len(inside))
        pauses = 1 + sum(1 for g in _gaps(starts) if g > 0.5)
        assert len(errors) <= 4 * pauses
        all_times = _arrivals(server, "upload.saveBigFilePart")
        measured("premium_wait_300_parts_4_workers", parts=len(stored),
                 premium_errors=len(errors), pauses=pauses,
                 duration_s=all_times[-1] - all_times[0])
        assert FloodPremiumBlocked  # the type a worker would see if the wait did not fit


# ---- retries, deadlines, delivery ------------------------------------------------------------


async def test_rpc_call_fail_seven_times_gives_the_real_error_after_the_budget() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 500, "RPC_CALL_FAIL", times=7))
    async with TelegramTestServer(faults=plan) as server:
        events: list[GuardEvent] = []
        client = server.client(cls=GuardedTelegramClient, deadline=20, retry_max_attempts=5,
                               retry_base_delay=0.1, retry_max_delay=0.4, seed=7,
                               on_event=events.append)
        async with client:
            with pytest.raises(tl_errors.RpcCallFailError) as e:
                await bounded(client(_dialogs()))
        assert not isinstance(e.value, ValueError)
        times = _arrivals(server, "messages.getDialogs")
        assert len(times) == 5
        gaps = _gaps(times)
        # The backoff the guard slept, from its own events (exact, no wall clock): full
        # jitter uniform(0, min(0.4, 0.1 * 2**n)), so jittered and never above 0.4 s.
        delays = [ev.delay for ev in events if isinstance(ev, RetryScheduled)
                  and ev.method == "messages.getDialogs"]
        assert len(delays) == 4, delays
        assert all(0 <= d <= min(0.4, 0.1 * 2 ** n) for n, d in enumerate(delays)), delays
        assert len({round(d, 6) for d in delays}) == len(delays), delays
        # On the wire: not Telethon's flat 2 s sleep between attempts.
        assert all(g < 2.0 for g in gaps), gaps
        measured("rpc_call_fail_x7", server_calls=len(times), gaps=[round(g, 3) for g in gaps],
                 error=type(e.value).__name__)


async def test_503_twice_then_ok() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", -503, "Timeout", times=2))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10, retry_base_delay=0.05,
                               retry_max_delay=0.2)
        async with client:
            result = await bounded(client.get_dialogs())
        assert isinstance(result, list)
        assert server.log.count("messages.getDialogs") == 3
        assert server.log.count("messages.getDialogs", outcome="ok") == 1
        measured("503_x2_then_ok", server_calls=server.log.count("messages.getDialogs"))


async def test_reply_never_sent_hits_the_deadline_typed() -> None:
    # Scaled: deadline 1 s (issue: 5 s).
    plan = FaultPlan(DropReplies("messages.getDialogs"))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=1.0)
        async with client:
            t0 = time.monotonic()
            with pytest.raises(DeadlineExceeded) as e:
                await bounded(client(_dialogs()))
            elapsed = time.monotonic() - t0
            assert isinstance(e.value, TimeoutError)
            # at the deadline: not before it, and not hanging (a hang ends at the 20 s bound)
            assert 0.95 <= elapsed < 1.0 + AT_ONCE, elapsed
            assert (await bounded(client(_me())))[0].id > 0
            measured("reply_never_sent_deadline_1", raised_after_s=elapsed)


async def test_reply_never_sent_inside_wait_for_releases_everything() -> None:
    # Scaled: deadline 2 s, asyncio.wait_for 0.5 s (issue: 5 s and 3 s).
    plan = FaultPlan(DropReplies("messages.getDialogs"))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=2.0,
                               rate_limits=((50, 1.0),))
        async with client:
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError) as e:
                await asyncio.wait_for(client(_dialogs()), 0.5)
            elapsed = time.monotonic() - t0
            # wait_for's timeout at 0.5 s, not the guard's 2 s deadline (DeadlineExceeded is a
            # TimeoutError too): the type says which fired, so no tight upper wall-clock bound.
            assert not isinstance(e.value, DeadlineExceeded), repr(e.value)
            assert elapsed >= 0.45, elapsed
            measured("reply_never_sent_wait_for_0.5", raised_after_s=elapsed)
            pipeline = client.guard.pipeline
            assert pipeline.limiter.queue_length == 0
            storage = pipeline.storage
            assert storage.flood_scopes() == {}
            for key in storage.breaker_keys():
                state = storage.breaker_state_sync(key)
                assert state.state == CLOSED and state.failures == 0, (key, state)
            # and the client carries on at once (a slot or probe left held would make it wait
            # into its 2 s deadline and raise DeadlineExceeded)
            t0 = time.monotonic()
            assert (await bounded(client(_me())))[0].id > 0
            assert time.monotonic() - t0 < 2.0


async def test_send_whose_reply_is_lost_in_a_reset_is_stored_once() -> None:
    plan = FaultPlan(ResetOn("messages.sendMessage", calls=1, after_execute=True))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=15)
        async with client:
            chat = await bounded(client.get_input_entity("chat_c"))
            try:
                msg = await bounded(client.send_message(chat, "exactly once"))
                assert msg.message == "exactly once"
            except AlreadyDelivered as e:  # the re-send was answered RANDOM_ID_DUPLICATE
                assert e.random_id is not None
            await bounded(client.send_message(chat, "second logical send"))
        texts = [m.text for m in server.world.sent_messages()]
        assert texts.count("exactly once") == 1
        assert texts.count("second logical send") == 1
        # the re-send happened and was answered "already done"
        dup = [e for e in server.log.requests("messages.sendMessage")
               if e.error_message == "RANDOM_ID_DUPLICATE"]
        assert len(dup) == 1
        measured("lost_reply_send", stored=texts.count("exactly once"),
                 server_sends=server.log.count("messages.sendMessage"))


async def test_iter_messages_5000_with_flood_wait_and_a_reset() -> None:
    # Scaled: FLOOD_WAIT_2 on the 31st getHistory (issue: FLOOD_WAIT_7 in a 30 s window);
    # a reset (request executed, reply lost) on getHistory call 41.
    plan = FaultPlan(
        ErrorOnCalls("messages.getHistory", 420, "FLOOD_WAIT_2", calls=31),
        ResetOn("messages.getHistory", calls=41, after_execute=True),
    )
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=30, max_flood_wait=10)
        async with client:
            ids = [m.id async for m in client.iter_messages("news", limit=5000, wait_time=0)]
        n = server.world.config.history_size
        assert ids == list(range(n, n - 5000, -1))
        assert server.log.count("messages.getHistory", outcome="rpc_error") == 1
        assert server.log.count("messages.getHistory", outcome="reset") == 1
        measured("iter_messages_5000", ids=len(ids), unique=len(set(ids)),
                 get_history_calls=server.log.count("messages.getHistory"))
