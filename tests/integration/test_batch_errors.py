"""Batched requests through GuardedTelegramClient: each item's typed error, and a batch whose
failed items are all FLOOD_WAITs catchable as a flood (issue 13 item 3).

Real Telethon over real sockets against telethon_guard.testing; the ground truth is
``server.log``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from telethon import errors as tl_errors
from telethon.tl import functions, types

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import FloodWaitBlocked, FloodWaitMultiError
from telethon_guard.testing.faults import FaultPlan
from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import bounded


@contextlib.asynccontextmanager
async def _guarded(*rules: ErrorOnCalls) -> AsyncIterator[tuple[TelegramTestServer, Any]]:
    """A connected GuardedTelegramClient (10 s deadline, 5 s max_flood_wait) on a server
    playing ``rules``."""
    async with TelegramTestServer(faults=FaultPlan(*rules)) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10, max_flood_wait=5)
        async with client:
            yield server, client


def _history() -> functions.messages.GetHistoryRequest:
    return functions.messages.GetHistoryRequest(
        peer=types.InputPeerSelf(), offset_id=0, offset_date=None, add_offset=0, limit=1,
        max_id=0, min_id=0, hash=0)


def _users() -> functions.users.GetUsersRequest:
    return functions.users.GetUsersRequest([types.InputUserSelf()])


async def test_batch_with_only_flood_failures_is_caught_as_flood_wait() -> None:
    # getHistory answers FLOOD_WAIT_30, longer than max_flood_wait: the guard fails that item
    # fast with FloodWaitBlocked; users.getUsers succeeds.
    rules = (ErrorOnCalls("messages.getHistory", 420, "FLOOD_WAIT_30"),
             ErrorOnCalls("help.getNearestDc", 420, "FLOOD_WAIT_12"))
    async with _guarded(*rules) as (server, client):
        history = _history()
        try:
            await bounded(client([history, _users()]))
        except tl_errors.FloodWaitError as e:  # what single-call code already catches
            caught: BaseException = e
        else:  # pragma: no cover - the assertion below reports it
            caught = AssertionError("no error raised")
        assert isinstance(caught, FloodWaitMultiError)
        assert isinstance(caught, tl_errors.MultiError)  # Telethon's shape is kept
        assert caught.seconds == 30 and 29.0 < (caught.retry_after or 0) <= 30.0
        assert caught.request is history
        assert isinstance(caught.exceptions[0], FloodWaitBlocked)
        assert caught.exceptions[1] is None and caught.results[0] is None
        assert isinstance(caught.results[1][0], types.User)  # the success is kept
        assert caught.failed_requests() == [history]
        assert server.log.count("messages.getHistory") == 1  # failed fast, not re-sent

        # every item floods: the longest wait is the batch's (12 s live, ~30 s ledger)
        with pytest.raises(tl_errors.FloodWaitError) as both:
            await bounded(client([functions.help.GetNearestDcRequest(), _history()]))
        assert isinstance(both.value, FloodWaitMultiError)
        assert all(isinstance(x, FloodWaitBlocked) for x in both.value.exceptions)
        assert both.value.seconds == max(x.seconds for x in both.value.exceptions)
        assert len(both.value.failed_requests()) == 2


async def test_batch_with_a_non_flood_failure_stays_a_plain_multi_error() -> None:
    rules = (ErrorOnCalls("messages.getHistory", 420, "FLOOD_WAIT_30"),
             ErrorOnCalls("help.getNearestDc", 400, "SOME_BAD_REQUEST"))
    async with _guarded(*rules) as (server, client):
        with pytest.raises(tl_errors.MultiError) as e:
            await bounded(client([_history(), functions.help.GetNearestDcRequest(),
                                  _users()]))
        # a flood beside a 400: waiting would not make the batch succeed, so it is not a
        # FloodWaitError; each item still carries its own typed error
        assert not isinstance(e.value, tl_errors.FloodWaitError)
        assert isinstance(e.value.exceptions[0], FloodWaitBlocked)
        assert isinstance(e.value.exceptions[1], tl_errors.BadRequestError)
        assert e.value.exceptions[2] is None and e.value.results[2] is not None
        # a batch of one raises the item's own error, as Telethon does
        with pytest.raises(FloodWaitBlocked):
            await bounded(client([_history()]))
        assert server.log.count("help.getNearestDc") == 1
