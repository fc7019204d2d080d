"""The guarded sender counts a reconnect attempt in its pacer's windows when the connection
starts, after the wait for a slot of the process connection budget (real Telethon over real
sockets; the pure logic is tests/guard/test_reconnect_attempt_start.py).

Before: the attempt was recorded at the pacer turn, before a budget wait of any length, so
TDLib's windows (1 per 1 s, 2 per 4 s, 3 per 8 s) counted from a time when no connection was
made.
"""

from __future__ import annotations

import asyncio
import time

from telethon_guard.budget import ConnectionBudget, connection_target, set_process_budget
from telethon_guard.client import GuardedTelegramClient
from telethon_guard.testing import TelegramTestServer
from telethon_guard.testing.faults import OnLiveConnections
from tests._waits import poll_until

from ._client_helpers import bounded

SLOT_PERIOD = 2.5  # the budget in this test: one new connection per 2.5 s


async def test_the_pacer_counts_the_reconnect_when_the_budget_slot_came() -> None:
    async with TelegramTestServer() as server:
        client = server.client(GuardedTelegramClient, deadline=30.0)
        previous = set_process_budget(None)
        try:
            await bounded(client.connect())
            sender = client._sender
            pacer = sender.pacer
            target = connection_target(sender._connection)
            budget = ConnectionBudget(((1, SLOT_PERIOD),), storm_windows=())
            set_process_budget(budget)
            await budget.acquire(target)  # the budget's slot is taken: the next in 2.5 s
            slot_free_at = time.monotonic() + SLOT_PERIOD
            losses = sender.connection_losses
            server.faults.add(OnLiveConnections("close", start=server.faults.now()))
            # the pacer's turn comes 0.75-1 s after the loss (its backoff), the slot later
            await poll_until(lambda: sender.reconnect_attempts >= 1
                             and sender.connection_losses > losses, 20.0)
            await poll_until(lambda: budget.granted.get(target, 0) >= 2, 20.0)
            await bounded(client.get_me())
            # the attempt is on record from when it could connect, not from the turn
            assert pacer.last_attempt_at is not None
            assert pacer.last_attempt_at >= slot_free_at - 0.1, (
                pacer.last_attempt_at - slot_free_at)
            assert sender.reconnect_attempts == 1
        finally:
            set_process_budget(previous)
            await asyncio.wait_for(client.disconnect(), 10)
