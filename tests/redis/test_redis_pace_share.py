"""Adaptive paces shared on Redis (issue 14), through real Telethon clients and the test server:
a pace one client learns from a FLOOD_WAIT applies to the same account and method in another
client with its own Redis storage (its own connections, as another process has), from that
client's next call; the admission still costs one round trip."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from telethon.tl import functions, types
from test_redis_processes import Worker
from test_redis_round_trips import count_round_trips

from telethon_guard import GuardedTelegramClient
from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

ME = functions.users.GetUsersRequest([types.InputUserSelf()])
PACE = "acct-pace/users.getUsers"


async def test_a_pace_learned_in_one_process_applies_in_another(
        redis_url: str, prefix: str) -> None:
    url = f"{redis_url}?prefix={prefix}&timeout=2"
    async with TelegramTestServer() as server:
        opts: dict[str, Any] = dict(
            cls=GuardedTelegramClient, storage=url, storage_fallback="fail",
            account="acct-pace", max_flood_wait=10.0, retry_max_attempts=1, deadline=30.0,
            adaptive_pacing=True, pace_relax=30.0)
        a, b = server.client(**opts), server.client(**opts)
        await asyncio.wait_for(a.connect(), 10)
        await asyncio.wait_for(b.connect(), 10)
        try:
            await asyncio.wait_for(b(ME), 5)  # B's scripts loaded, connection pooled
            b_storage = b.guard.pipeline.storage
            take = count_round_trips(b_storage)
            await asyncio.wait_for(b(ME), 5)
            assert take() == 1  # the admission reads the shared pace in the same script

            # A: a burst, then FLOOD_WAIT_2: A learns a pace (held: a burst shorter than the
            # wait), waits 2 s, retries, and publishes the pace
            for _ in range(6):
                await asyncio.wait_for(a(ME), 5)
            server.faults.add(ErrorOnCalls("users.getUsers", 420, "FLOOD_WAIT_2", times=1))
            await asyncio.wait_for(a(ME), 15)
            a_paces = a.guard.stats()["paces"]
            assert PACE in a_paces, a_paces
            a_share = a.guard.pipeline.admit.paces
            await asyncio.wait_for(a_share.drain(), 5)
            assert a_share.published >= 1
            count, period = a_paces[PACE]
            spacing = period / count
            assert b.guard.stats()["paces"] == {}

            # B: its next call brings the pace; then B's calls are spaced by it
            loop = asyncio.get_running_loop()
            start = loop.time()
            for _ in range(4):
                await asyncio.wait_for(b(ME), 15)
            took = loop.time() - start
            b_share = b.guard.pipeline.admit.paces
            assert b_share.adopted == 1
            b_paces = b.guard.stats()["paces"]
            assert PACE in b_paces and b_paces[PACE][0] == count, (a_paces, b_paces)
            # 4 calls under one call per `spacing` s: at least 3 spacings (without the shared
            # pace B's calls went at once: a few ms each)
            assert took >= 3 * spacing * 0.95, (took, spacing)
            print(f"pace {count} per {period:.2f} s adopted by the other client; its 4 calls "
                  f"took {took:.2f} s (spacing {spacing:.2f} s)")
        finally:
            await asyncio.wait_for(a.disconnect(), 10)
            await asyncio.wait_for(b.disconnect(), 10)


async def test_a_pace_learned_in_one_os_process_applies_in_another(
        redis_url: str, prefix: str) -> None:
    """The same with two real worker processes (``redis_worker.py``); the spacing of the
    second process's calls is measured at the server."""
    async with TelegramTestServer(dcs=1, strict=False) as server:
        user_id = server.world.register_account(None)
        account = f"acct-{prefix[-12:]}"
        guard = {"storage": f"{redis_url}?prefix={prefix}&timeout=2", "account": account,
                 "max_flood_wait": 10.0, "deadline": 30.0, "adaptive_pacing": True,
                 "pace_relax": 30.0, "retry_max_attempts": 1}
        workers: list[Worker] = []
        try:
            for _ in range(2):
                session = server.session(account=user_id)
                workers.append(await Worker.start({
                    "session": session.save(), "api_id": server.api_id,
                    "api_hash": server.api_hash, "guard": guard}))
            for w in workers:
                assert (await w.read(60))["ready"]
            first, second = workers
            for _ in range(6):
                assert (await first.ask({"cmd": "call", "method": "me"}))["ok"]
            server.faults.add(ErrorOnCalls("users.getUsers", 420, "FLOOD_WAIT_2", times=1))
            assert (await first.ask({"cmd": "call", "method": "me"}))["ok"]  # waited, retried
            key = f"{account}/users.getUsers"
            learned = (await first.ask({"cmd": "paces"}))["paces"]
            assert key in learned, learned
            count, period = learned[key]
            await asyncio.sleep(0.2)  # the publication (one round trip after the flood)
            assert (await second.ask({"cmd": "paces"}))["paces"] == {}
            before = len(server.log.times("users.getUsers", user_id))
            for _ in range(4):
                assert (await second.ask({"cmd": "call", "method": "me"}))["ok"]
            adopted = (await second.ask({"cmd": "paces"}))["paces"]
            assert key in adopted and adopted[key][0] == count, (learned, adopted)
            times = server.log.times("users.getUsers", user_id)[before:]
            assert len(times) == 4
            gaps = [b - a for a, b in itertools.pairwise(times)]
            # the 2nd process's calls arrive one spacing apart (a few ms without the pace)
            assert min(gaps) >= 0.8 * period / count, (gaps, period / count)
        finally:
            for w in workers:
                await w.stop()
