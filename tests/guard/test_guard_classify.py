from __future__ import annotations

import asyncio

import pytest
from telethon import errors as te

from telethon_guard import errors as ge
from telethon_guard.classify import Action, FloodScope, clamp_flood_seconds, classify


def test_flood_wait_scopes_and_clamp() -> None:
    v = classify(te.FloodWaitError(None, 30))
    assert (v.action, v.scope, v.seconds, v.breaker_failure) == (
        Action.FLOOD, FloodScope.METHOD, 30.0, False)
    assert classify(te.SlowModeWaitError(None, 60)).scope is FloodScope.PEER
    assert classify(te.FloodPremiumWaitError(None, 6)).scope is FloodScope.TRANSFERS


@pytest.mark.parametrize(("given", "expected"), [(0, 1.0), (None, 1.0), (1, 1.0), (5, 5.0),
                                                 (10**9, 14 * 86400.0)])
def test_clamp_like_tdlib(given: int | None, expected: float) -> None:
    assert clamp_flood_seconds(given) == expected


def test_flood_wait_zero_means_one_second() -> None:
    assert classify(te.FloodWaitError(None, 0)).seconds == 1.0


@pytest.mark.parametrize(
    "exc",
    [
        te.RpcCallFailError(None),
        te.RpcMcgetFailError(None),
        te.WorkerBusyTooLongRetryError(None),
        te.ServerError(None, "INTERNAL", 500),
        te.TimedOutError(None, "Timeout", -503),
        te.RPCError(None, "No workers running", -500),
        TimeoutError(),
    ],
)
def test_transient_server_errors(exc: BaseException) -> None:
    v = classify(exc)
    assert v.action is Action.TRANSIENT
    assert v.breaker_failure


def test_random_id_duplicate_is_delivered_not_transient() -> None:
    v = classify(te.RandomIdDuplicateError(None))
    assert v.action is Action.DELIVERED
    assert not v.breaker_failure


@pytest.mark.parametrize(
    "exc",
    [
        te.PeerFloodError(None),
        te.BadRequestError(None, "MESSAGE_EMPTY", 400),
        te.UsernameNotOccupiedError(None),
        te.PhoneMigrateError(None, 4),
        te.FileMigrateError(None, 4),
        te.FloodTestPhoneWaitError(None, 10),
        te.TakeoutInitDelayError(None, 100),
        te.TwoFaConfirmWaitError(None, 100),
        ge.AuthKeyInvalidError(2),
        ge.CircuitOpenError("k", 1.0),
        ValueError("x"),
    ],
)
def test_raised_at_once_and_not_breaker_failures(exc: BaseException) -> None:
    v = classify(exc)
    assert v.action is Action.RAISE
    assert not v.breaker_failure


@pytest.mark.parametrize(
    "exc",
    [ConnectionError(), ConnectionResetError(), te.InvalidBufferError(b"\x53\xfe\xff\xff"),
     asyncio.IncompleteReadError(b"", 4), OSError()],
)
def test_disconnects(exc: BaseException) -> None:
    v = classify(exc)
    assert v.action is Action.DISCONNECT
    assert v.breaker_failure


def test_transport_404_is_permanent() -> None:
    exc = te.InvalidBufferError(b"\x6c\xfe\xff\xff")
    assert exc.code == 404
    assert classify(exc).action is Action.RAISE


def test_transport_recovery_errors_never_retried_but_count_for_breaker() -> None:
    v = classify(ge.TransportFloodError(-429, 3.0))
    assert v.action is Action.RAISE and v.breaker_failure


def test_guard_connection_error_from_send_is_a_disconnect() -> None:
    v = classify(ge.GuardConnectionError("cancelled by disconnect"))
    assert v.action is Action.DISCONNECT and v.breaker_failure


def test_cancelled_error_only_a_disconnect_when_told() -> None:
    assert classify(asyncio.CancelledError()).action is Action.RAISE
    assert classify(asyncio.CancelledError(), disconnect_cancel=True).action is Action.DISCONNECT


def test_guard_flood_errors_are_not_reclassified() -> None:
    e = ge.FloodWaitBlocked(None, 10, method="m", scope="s", from_server=False)
    assert classify(e).action is Action.RAISE
