"""EditCoalescer (issue 15 item 2) on a fake clock with a fake edit function."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from guardfakes import bounded
from telethon import errors as te
from telethon.tl import types

from telethon_guard.edits import EditCoalescer
from telethon_guard.fakeclock import FakeClock

CHAT_A, CHAT_B = types.InputPeerChat(5), types.InputPeerChat(6)


class FakeEdits:
    """Records ``(time, chat id, message id, text)`` per edit sent; each takes ``latency`` s;
    ``fail``: message id -> the error every edit of it raises."""

    def __init__(self, clock: FakeClock, latency: float = 0.1,
                 fail: dict[int, BaseException] | None = None) -> None:
        self.clock = clock
        self.latency = latency
        self.fail = fail or {}
        self.sent: list[tuple[float, int, int, str]] = []

    async def __call__(self, entity: Any, message_id: int, text: str, **kw: Any) -> str:
        self.sent.append((self.clock.now(), entity.chat_id, message_id, text))
        await self.clock.sleep(self.latency)
        if message_id in self.fail:
            raise self.fail[message_id]
        return f"edited {message_id}: {text}"


async def _spread(clock: FakeClock, co: EditCoalescer, calls: list[tuple[Any, int, str]],
                  step: float) -> list[Any]:
    """Start one edit every ``step`` seconds; gather their outcomes."""
    tasks = []
    for entity, mid, text in calls:
        tasks.append(asyncio.create_task(co.edit(entity, mid, text)))
        await clock.sleep(step)
    return list(await bounded(asyncio.gather(*tasks, return_exceptions=True)))


async def test_ten_quick_edits_send_the_first_and_the_latest_text_only() -> None:
    clock = FakeClock()
    fake = FakeEdits(clock)
    co = EditCoalescer(edit=fake, interval=1.0, clock=clock)
    t0 = clock.now()
    out = await _spread(clock, co, [(CHAT_A, 1, f"{i * 10} %") for i in range(10)], 0.05)
    assert [(t - t0, text) for t, _, _, text in fake.sent] == [(0.0, "0 %"), (1.0, "90 %")]
    assert out[0] == "edited 1: 0 %" and set(out[1:]) == {"edited 1: 90 %"}
    assert co.sent == 2


async def test_an_edit_after_a_quiet_moment_still_waits_for_the_chats_interval() -> None:
    clock = FakeClock()
    fake = FakeEdits(clock)
    co = EditCoalescer(edit=fake, interval=1.0, clock=clock)
    t0 = clock.now()
    await _spread(clock, co, [(CHAT_A, 1, "a"), (CHAT_A, 1, "b")], 0.5)  # b after a is done
    assert [t - t0 for t, *_ in fake.sent] == [0.0, 1.0]
    clock.advance(1.0)  # b was answered at t0 + 1.1: now t0 + 2.1, past its interval
    await bounded(co.edit(CHAT_A, 1, "c"))
    assert fake.sent[-1][0] - t0 == pytest.approx(2.1)  # at once
    await clock.sleep(1.0)
    assert not co._chats  # the chat is forgotten once its interval has passed


async def test_messages_of_one_chat_share_its_interval_other_chats_do_not_wait() -> None:
    clock = FakeClock()
    fake = FakeEdits(clock)
    co = EditCoalescer(edit=fake, interval=1.0, clock=clock)
    t0 = clock.now()
    await _spread(clock, co, [(CHAT_A, 1, "a1"), (CHAT_A, 2, "a2"), (CHAT_B, 7, "b7")], 0.0)
    times = {(chat, mid): t - t0 for t, chat, mid, _ in fake.sent}
    assert times == {(5, 1): 0.0, (5, 2): 1.0, (6, 7): 0.0}


async def test_message_not_modified_is_success() -> None:
    clock = FakeClock()
    fake = FakeEdits(clock, fail={3: te.MessageNotModifiedError(None)})
    co = EditCoalescer(edit=fake, clock=clock)
    assert await bounded(co.edit(CHAT_A, 3, "same")) is None


async def test_a_deleted_message_fails_every_pending_edit_with_one_server_error() -> None:
    clock = FakeClock()
    gone = te.MessageIdInvalidError(None)
    fake = FakeEdits(clock, latency=0.5, fail={4: gone})
    co = EditCoalescer(edit=fake, interval=1.0, clock=clock)
    out = await _spread(clock, co, [(CHAT_A, 4, f"step {i}") for i in range(5)], 0.05)
    assert all(o is gone for o in out)  # the server's error, to every caller
    assert len(fake.sent) == 1  # sent once: the texts that came meanwhile were not sent
    await clock.sleep(1.0)
    assert len(fake.sent) == 1 and not co._chats  # nothing left pending


async def test_aclose_cancels_pending_edits() -> None:
    clock = FakeClock()
    fake = FakeEdits(clock, latency=0.5)
    co = EditCoalescer(edit=fake, clock=clock)
    first = asyncio.create_task(co.edit(CHAT_A, 1, "x"))
    await clock.sleep(0.1)
    second = asyncio.create_task(co.edit(CHAT_A, 1, "y"))
    await asyncio.sleep(0)
    await bounded(co.aclose())
    for t in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await bounded(t)


@pytest.mark.parametrize("interval", [0, -1.0, float("inf"), float("nan"), "1", True])
def test_nonsensical_interval_is_refused(interval: Any) -> None:
    with pytest.raises(ValueError, match="interval"):
        EditCoalescer(edit=FakeEdits(FakeClock()), interval=interval)


def test_needs_a_client_or_an_edit_function() -> None:
    with pytest.raises(TypeError):
        EditCoalescer()
