"""Clients sharing their guard layers (one GuardConfig with one MemoryStorage object,
pipeline.shared_layers): a pace refined by a late answer on the straight lane's success path
(lane_call -> AdaptivePacer.on_success -> _refine -> PaceLearned) is an event of the client
whose call was answered, as every other event of shared layers is (EVENT_ROUTE): it reaches
that client's ``guard.events`` subscribers, and not the other client's."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from guardfakes import bounded
from telethon import errors as te
from telethon import functions, types
from telethon.sessions import StringSession

from telethon_guard import GuardedTelegramClient
from telethon_guard.config import GuardConfig
from telethon_guard.errors import FloodWaitBlocked
from telethon_guard.events import GuardEvent, PaceLearned
from telethon_guard.storage.memory import MemoryStorage

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="the lane needs 3.11+")

_STATE = types.updates.State(pts=1, qts=0, date=None, seq=0, unread_count=0)


class HeldSender:
    """A main sender whose ``send_awaited`` answers at once (``"ok"``), fails with an
    exception, or holds the future (``"hang"``) for the test to answer later."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []
        self.held: list[asyncio.Future[Any]] = []
        self.dc_id = 2

    def send_awaited(self, request: Any, ordered: bool = False) -> asyncio.Future[Any]:
        item = self.outcomes.pop(0) if self.outcomes else "ok"
        fut = asyncio.get_running_loop().create_future()
        if isinstance(item, BaseException):
            fut.set_exception(item)
        elif item == "hang":
            self.held.append(fut)
        else:
            fut.set_result(_STATE)
        return fut

    send = send_awaited

    def is_connected(self) -> bool:
        return True


def _client(config: GuardConfig, account: str) -> tuple[Any, HeldSender]:
    client = GuardedTelegramClient(StringSession(), 1, "0" * 32, guard_config=config)
    sender = HeldSender()
    client._sender = sender
    client.session.set_dc(2, "127.0.0.1", 443)
    client._guard_link.offline = False  # as after connect()
    client._guard_link.account = account  # logged in (the link's cached user key)
    return client, sender


async def test_a_pace_refined_by_a_late_lane_answer_reaches_the_calling_clients_bus() -> None:
    seen: list[GuardEvent] = []
    config = GuardConfig(storage=MemoryStorage(), max_flood_wait=0.0, on_event=seen.append)
    (a, sa), (b, _) = _client(config, "user:1"), _client(config, "user:2")
    assert a.guard.pipeline.shared and a.guard.pipeline.layers is b.guard.pipeline.layers
    assert a.guard.pipeline.lane is not None
    got: dict[str, list[GuardEvent]] = {"a": [], "b": []}
    a.guard.events.subscribe(got["a"].append)
    b.guard.events.subscribe(got["b"].append)
    request = functions.updates.GetStateRequest
    for _ in range(10):  # a burst of answered calls: the evidence a pace is learned from
        assert await bounded(a(request())) == _STATE
    sa.outcomes = ["hang"] * 20
    in_flight = [asyncio.ensure_future(a(request())) for _ in range(20)]
    for _ in range(100):
        if len(sa.held) == 20:
            break
        await asyncio.sleep(0)
    assert len(sa.held) == 20  # sent by the lane, no pace yet
    sa.outcomes = [te.FloodWaitError(None, capture=2)]
    with pytest.raises(FloodWaitBlocked):
        await bounded(a(request()))
    await asyncio.sleep(0.05)  # EventBus delivers on the loop
    learned = [e for e in got["a"] if isinstance(e, PaceLearned)]
    assert len(learned) == 1, got["a"]
    for fut in sa.held:  # late answers: accepted before the refusal, answered during its wait
        fut.set_result(_STATE)
    assert await bounded(asyncio.gather(*in_flight)) == [_STATE] * 20
    await asyncio.sleep(0.05)
    paces_a = [e for e in got["a"] if isinstance(e, PaceLearned)]
    assert len(paces_a) >= 2, "no refined pace reached client A's subscribers"
    assert paces_a[-1].period / paces_a[-1].count < learned[0].period / learned[0].count
    assert all(e.account == "user:1" for e in paces_a)
    assert not [e for e in got["b"] if isinstance(e, PaceLearned)]
    assert len([e for e in seen if isinstance(e, PaceLearned)]) == len(paces_a)  # each once
