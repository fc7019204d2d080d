"""The update-path policy (telethon_guard/update_path.py) as pure logic: which errors reach
Telethon's update loop unchanged, which become ``DifferenceDeferred``, and when a deferred
difference is begun again. The behaviour with real Telethon is in
tests/integration/test_updates_under_faults.py."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from telethon import errors as tl_errors
from telethon.tl import types
from telethon.tl.functions.updates import GetChannelDifferenceRequest, GetDifferenceRequest

from telethon_guard import _telethon as tl
from telethon_guard.errors import (
    AuthKeyInvalidError,
    CircuitOpenError,
    ClientDisconnectedError,
    DeadlineExceeded,
    FloodWaitBlocked,
    GuardConnectionError,
    TransportFloodError,
)
from telethon_guard.update_path import (
    DIFFERENCE_TIMEOUT,
    RECOVERY_BASE,
    RECOVERY_CAP,
    RECOVERY_MARGIN,
    DifferenceDeferred,
    DifferenceRecovery,
    difference_entry,
    recovery_delay,
    tolerated,
)

CHANNEL_DIFF = GetChannelDifferenceRequest(
    types.InputChannel(77, 1), types.ChannelMessagesFilterEmpty(), pts=5, limit=100)
ACCOUNT_DIFF = GetDifferenceRequest(pts=5, date=None, qts=0)  # type: ignore[arg-type]


def test_entry_is_the_channel_id_or_the_account() -> None:
    assert difference_entry(CHANNEL_DIFF) == 77
    assert difference_entry(ACCOUNT_DIFF) is tl.ACCOUNT_ENTRY


def test_a_flood_is_retried_when_its_wait_ends_plus_the_margin() -> None:
    blocked = FloodWaitBlocked(CHANNEL_DIFF, 5.2, method="updates.getChannelDifference",
                               scope="s", from_server=True)
    assert recovery_delay(blocked, 1) == pytest.approx(5.2 + RECOVERY_MARGIN)
    raw = tl_errors.FloodWaitError(CHANNEL_DIFF, capture=6)
    assert recovery_delay(raw, 3) == pytest.approx(6 + RECOVERY_MARGIN)  # not the backoff


def test_other_failures_back_off_doubling_to_the_cap_or_their_retry_after() -> None:
    err = tl_errors.ServerError(CHANNEL_DIFF, "RPC_CALL_FAIL", 500)
    assert [recovery_delay(err, n) for n in (1, 2, 3)] == [
        RECOVERY_BASE, 2 * RECOVERY_BASE, 4 * RECOVERY_BASE]
    assert recovery_delay(err, 40) == RECOVERY_CAP
    assert recovery_delay(CircuitOpenError("acct/dc2", 12.0), 1) == 12.0
    assert recovery_delay(TransportFloodError(-429, None), 2) == 2 * RECOVERY_BASE


@pytest.mark.parametrize("exc", [
    tl_errors.AuthKeyUnregisteredError(None),
    tl_errors.ChannelPrivateError(None),
    ClientDisconnectedError("offline"),
    sqlite3.OperationalError("database is locked"),
])
def test_cases_telethon_handles_itself_are_not_retried(exc: Exception) -> None:
    assert recovery_delay(exc, 1) is None


@pytest.mark.parametrize("exc", [
    FloodWaitBlocked(None, 3.0, method="m", scope="s", from_server=False),
    tl_errors.ServerError(None, "RPC_CALL_FAIL", 500),
    tl_errors.RPCError(None, "INPUT_METHOD_INVALID_1_2", 400),
    tl_errors.ChannelPrivateError(None),
])
def test_telegrams_answers_reach_the_loop_unchanged(exc: Exception) -> None:
    assert tolerated(exc, CHANNEL_DIFF, 1.0) is exc


@pytest.mark.parametrize("exc", [
    GuardConnectionError("dropped"),      # an OSError: Telethon would sleep its whole loop 5 s
    DeadlineExceeded("updates.getChannelDifference", 30.0),
    CircuitOpenError("acct/dc2", 3.0),
    TransportFloodError(-429, 1.0),
    AuthKeyInvalidError(2),               # not an RPCError: fatal for Telethon
    RuntimeError("a bug"),
    tl_errors.InvalidBufferError(b"\xa3\xfe\xff\xff"),
])
def test_everything_else_becomes_a_server_error_the_loop_tolerates(exc: Exception) -> None:
    out = tolerated(exc, CHANNEL_DIFF, 2.5)
    assert isinstance(out, DifferenceDeferred)
    assert isinstance(out, tl_errors.ServerError) and not isinstance(out, OSError)
    assert out.retry_after == 2.5 and out.request is CHANNEL_DIFF
    assert type(exc).__name__ in str(out)


class _Offline:
    """Stands for a client that disconnected meanwhile: a due timer does nothing."""

    def is_connected(self) -> bool:
        return False


async def test_recovery_bounds_each_try_doubling_per_failure_and_resets_on_success() -> None:
    rec = DifferenceRecovery()
    client: Any = _Offline()
    err = tl_errors.ServerError(CHANNEL_DIFF, "RPC_CALL_FAIL", 500)
    assert rec.timeout(client, 77) == DIFFERENCE_TIMEOUT
    assert rec.failed(client, 77, err) == RECOVERY_BASE
    assert rec.timeout(client, 77) == 2 * DIFFERENCE_TIMEOUT
    assert rec.failed(client, 77, err) == 2 * RECOVERY_BASE
    assert rec.pending() == 1  # one timer per entry: the newer one replaced the older
    assert rec.timeout(client, tl.ACCOUNT_ENTRY) == DIFFERENCE_TIMEOUT  # other entries free
    for _ in range(10):
        rec.failed(client, 77, err)
    assert rec.timeout(client, 77) == RECOVERY_CAP
    rec.succeeded(client, 77)
    assert rec.timeout(client, 77) == DIFFERENCE_TIMEOUT
    assert rec.failed(client, 78, tl_errors.ChannelPrivateError(None)) is None  # banned
    assert rec.pending() == 1
