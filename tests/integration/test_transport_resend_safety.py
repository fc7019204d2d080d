"""Re-send safety on a transport-error reconnect (issue 10, "nothing accepted is lost", and
"a ``sendCode`` is never re-sent automatically").

Real Telethon over real sockets: the server executes a request, then resets the connection
before its reply. On the paced reconnect the guarded sender re-sends what is safe to send twice
(``random_id``, reads, pings: :func:`telethon_guard.liveness.resend_is_safe`) and fails a sent
request that is not with :class:`~telethon_guard.errors.MayHaveRunError`
(:class:`~telethon_guard.sender.ConnectionLostMayHaveRun`), as the liveness replacement does.
Before this rule, a reset after ``auth.sendCode`` ran sent a second code
(server log ``[(executed, "reset"), (executed, "ok")]``).
"""

from __future__ import annotations

import asyncio

import pytest
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import MayHaveRunError
from telethon_guard.sender import ConnectionLostMayHaveRun
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import FaultPlan, ResetOn

T = 10.0  # bound for a wait that should succeed, seconds


def outcomes(server: TelegramTestServer, method: str) -> list[tuple[bool, str | None]]:
    return [(e.executed, e.outcome) for e in server.log.requests(method)]


async def test_send_code_executed_then_reset_is_not_sent_again() -> None:
    plan = FaultPlan(ResetOn("auth.sendCode", calls=1, after_execute=True))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=8)
        send_code = functions.auth.SendCodeRequest(
            "+15550100042", server.api_id, server.api_hash, types.CodeSettings())
        async with client:
            with pytest.raises(MayHaveRunError) as caught:
                await asyncio.wait_for(client(send_code), T)
            assert isinstance(caught.value, ConnectionLostMayHaveRun)
            assert caught.value.method == "auth.sendCode"
            # one code went out: executed once, its reply lost in the reset, never re-sent
            assert outcomes(server, "auth.sendCode") == [(True, "reset")]
            # the connection came back: calls work, and a sendCode asked for again is sent
            me = await asyncio.wait_for(client.get_me(), T)
            assert me is not None
            sent = await asyncio.wait_for(client(send_code), T)
            assert sent.phone_code_hash
            assert outcomes(server, "auth.sendCode") == [(True, "reset"), (True, "ok")]
            assert all(state == "CLOSED" for state in client.guard.stats().breakers.values())


async def test_reads_in_flight_on_a_reset_are_sent_again() -> None:
    # The safe side of the rule: a read whose reply was lost in the reset is re-sent on the
    # new connection and the caller gets its answer (no error).
    plan = FaultPlan(ResetOn("users.getFullUser", calls=1, after_execute=True))
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=8)
        async with client:
            full = await asyncio.wait_for(
                client(functions.users.GetFullUserRequest(types.InputUserSelf())), T)
            assert full.full_user is not None
            assert outcomes(server, "users.getFullUser") == [(True, "reset"), (True, "ok")]
