"""The example service in the incident's shape: ``/channels?user_id=...`` from a pool of
per-user clients, through a transport -429 storm, with one user's session broken and one
unknown user. Real Telethon against the embedded server, driven through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
from telethon.crypto import AuthKey

from examples.fastapi_service.app import ChannelService, create_app
from examples.fastapi_service.tenants import TenantChannels
from telethon_guard import GuardedTelegramClient
from telethon_guard.pool import GuardedClientPool
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import Latency, Transport429Storm

TIMEOUT = 1.0  # seconds one /channels may spend on Telegram
STORM = 2.5  # seconds of -429 (every request and every new connection)
BOUND = 20.0
ANSWER_BOUND = TIMEOUT + 1.0  # the budget plus scheduling noise on a shared 2-core machine
USERS = ("alice", "bob", "carol")


async def test_per_user_channels_through_a_storm_with_a_broken_and_an_unknown_user() -> None:
    plan = FaultPlan(Latency("channels.getFullChannel", 0.05))
    async with TelegramTestServer(faults=plan) as server:
        sessions = {u: server.session(server.world.user_id(u)) for u in USERS}
        broken = server.session()
        broken.auth_key = AuthKey(os.urandom(256))  # revoked: the server answers -404
        sessions["dave"] = broken
        # The per-user clients' breakers open during the storm (default threshold); after it
        # each user's HALF_OPEN probe must end in a verdict (a cancelled one is freed and the
        # guard reports "a probe may be sent"), so every user is live again within the bound.
        settings = {"deadline": 5.0, "attempt_timeout": 0.4, "retry_base_delay": 0.01,
                    "retry_max_delay": 0.05}

        def factory(user_id: str) -> Any:
            session = sessions.get(user_id)
            if session is None:
                return None
            return server.client(GuardedTelegramClient, session=session, storage=pool.storage,
                                 account=f"user:{user_id}", **settings)

        pool = GuardedClientPool(factory, connect_timeout=TIMEOUT, broken_retry_after=60)
        tenants = TenantChannels(pool, timeout=TIMEOUT)
        service = ChannelService(server.client(GuardedTelegramClient, **settings),
                                 timeout=TIMEOUT)
        app = create_app(service, tenants)
        await asyncio.wait_for(service.start(), BOUND)
        answers: list[tuple[str, str, int, str, float]] = []  # phase, user, status, source, s
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://svc", timeout=BOUND) as http:

                async def channels(phase: str, user: str) -> dict[str, Any]:
                    t = time.perf_counter()
                    r = await asyncio.wait_for(http.get("/channels",
                                                        params={"user_id": user}), BOUND)
                    body: dict[str, Any] = r.json()
                    answers.append((phase, user, r.status_code, body["source"],
                                    time.perf_counter() - t))
                    return body

                async def everyone(phase: str) -> list[dict[str, Any]]:
                    return list(await asyncio.gather(
                        *(channels(phase, u) for u in (*USERS, "dave", "mallory"))))

                # 1. calm: every real user live through their own account; dave's session is
                # broken (nothing cached yet: 503), mallory has none (404).
                calm = await everyone("calm")
                for user, body in zip(USERS, calm, strict=False):
                    assert body["source"] == "live" and body["user_id"] == user, body
                    assert [c["username"] for c in body["channels"]] == list(tenants.channels)
                assert calm[3]["reason"] == "TenantUnavailableError", calm[3]
                status = {a[1]: a[2] for a in answers}
                assert status["dave"] == 503 and status["mallory"] == 404, answers
                assert pool.state_of("dave") == "broken"
                # each user's calls ran on that user's account
                for user in USERS:
                    uid = server.world.user_id(user)
                    assert server.log.count("channels.getFullChannel", account=uid) >= 4

                # 2. -429 storm on every connection while users keep asking
                assert plan.started_at is not None
                plan.add(Transport429Storm(start=time.monotonic() - plan.started_at + 0.02,
                                           duration=STORM))
                storm_end = time.monotonic() + 0.02 + STORM
                while time.monotonic() < storm_end:
                    for body in (await everyone("storm"))[:3]:
                        assert body["channels"], body  # live or each user's own cache
                    await asyncio.sleep(0.05)

                # 3. after the storm every user is live again within a bound
                end = time.monotonic() + BOUND
                pending = set(USERS)
                while pending:
                    assert time.monotonic() < end, answers[-10:]
                    for user in list(pending):
                        if (await channels("recovery", user))["source"] == "live":
                            pending.discard(user)
                    await asyncio.sleep(0.1)
                health = tenants.health()
        finally:
            await asyncio.wait_for(service.stop(), BOUND)
            await asyncio.wait_for(tenants.close(), BOUND)

    real = [a for a in answers if a[1] in USERS]
    # No request timed out: every user's /channels answered within the budget plus noise,
    # HTTP 200, from live data or that user's cache.
    assert all(a[2] == 200 for a in real), [a for a in real if a[2] != 200]
    assert max(a[4] for a in real) < ANSWER_BOUND, max(real, key=lambda a: a[4])
    assert any(a[0] == "storm" and a[3] == "cache" for a in real), answers
    # The broken user was refused at once every time, and the unknown one with 404.
    dave = [a for a in answers if a[1] == "dave"]
    assert all(a[2] == 503 for a in dave) and max(a[4] for a in dave[1:]) < 0.25, dave
    assert all(a[2] == 404 for a in answers if a[1] == "mallory")
    assert health["unavailable"] == {"dave": "broken"}, health
    assert pool.closed and pool.connected == 0
