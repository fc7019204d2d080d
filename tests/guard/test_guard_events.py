from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from telethon_guard.events import (
    BreakerStateChanged,
    EventBus,
    FloodWaitStarted,
    RequestLimited,
    redact_peer,
)


def test_events_are_immutable() -> None:
    ev = FloodWaitStarted("messages.getHistory", "acct:1/method:x", 3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.seconds = 4  # type: ignore[misc]


def test_redact_peer_is_stable_and_hides_ids() -> None:
    a = redact_peer("acct:1/slowmode:peer:-1001234")
    assert "1001234" not in a and a.startswith("acct:1/slowmode:peer#")
    assert a == redact_peer("acct:1/slowmode:peer:-1001234")
    assert redact_peer("peer:1") != redact_peer("peer:2")


def test_one_log_line_per_event_at_its_level(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    with caplog.at_level(logging.DEBUG, logger="telethon_guard"):
        bus.emit(BreakerStateChanged("acct:1/dc:2", "CLOSED", "OPEN", 5.0))
        bus.emit(RequestLimited("acct:1/peer:42", 0.5))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.DEBUG]
    assert "peer:42" not in caplog.text
    assert all("\n" not in r.getMessage() for r in caplog.records)


async def test_sync_async_and_failing_callbacks(caplog: pytest.LogCaptureFixture) -> None:
    got: list[str] = []

    def sync_cb(ev: object) -> None:
        got.append("sync")

    async def async_cb(ev: object) -> None:
        await asyncio.sleep(0)
        got.append("async")

    async def async_bad(ev: object) -> None:
        raise ValueError("async boom")

    def bad(ev: object) -> None:
        raise RuntimeError("boom")

    bus = EventBus([bad, sync_cb, async_cb, async_bad])
    bus.emit(RequestLimited("k", 1.0))
    await bus.drain()
    assert sorted(got) == ["async", "sync"]
    assert "boom" in caplog.text and "async boom" in caplog.text


def test_subscribe_and_unsubscribe() -> None:
    got: list[object] = []
    bus = EventBus()
    off = bus.subscribe(got.append)
    bus.emit(RequestLimited("k", 1.0))
    off()
    off()
    bus.emit(RequestLimited("k", 1.0))
    assert len(got) == 1


def test_async_callback_without_loop_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    async def cb(ev: object) -> None:
        pass

    EventBus([cb]).emit(RequestLimited("k", 1.0))
    assert "no running loop" in caplog.text
