"""Flood scope inference for writes (issue 15 item 1), on a fake clock with scripted sends.

A FLOOD_WAIT on a write to a chat blocks that chat's writes only; it widens to the method on
floods from several chats within the window, or at a configured send limit; it narrows again
after writes to other chats succeed. The flooded chat gets no call before its wait has passed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from guardfakes import Script, bounded, make_call, make_pipeline, send_call
from telethon import errors as te
from telethon.tl import functions, types

from telethon_guard import _tl
from telethon_guard.config import GuardConfig
from telethon_guard.errors import FloodWaitBlocked, GuardConfigError
from telethon_guard.events import FloodWaitStarted, PaceLearned
from telethon_guard.flood_scope import is_chat_write


def edit_call(chat_id: int, msg_id: int = 1) -> Any:
    request = functions.messages.EditMessageRequest(
        peer=types.InputPeerChat(chat_id), id=msg_id, message="progress")
    return make_call("messages.editMessage", peer=f"peer:{-chat_id}", request=request)


async def test_a_chats_flood_blocks_that_chat_only_and_teaches_no_account_pace() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=10)
    group = Script(clock, [*["ok"] * 6, te.FloodWaitError(None, 30)])
    for n in range(6):  # a burst into the group (what an account-wide pace is learned from)
        await bounded(pipe.invoke(send_call(-5, random_id=100 + n), group))
        clock.advance(0.1)
    with pytest.raises(FloodWaitBlocked) as first:
        await bounded(pipe.invoke(send_call(-5), group))
    assert first.value.from_server
    assert first.value.scope.startswith("acct:a1/writes:peer#")  # the group's writes, redacted
    # 30 private chats: every send goes out at once, none waits.
    t0 = clock.now()
    private = Script(clock)
    for uid in range(100, 130):
        assert await bounded(pipe.invoke(send_call(uid, random_id=uid), private)) == "ok"
    assert private.count == 30 and set(private.times) == {t0}
    assert not rec.of(FloodWaitStarted)
    # The group itself: refused locally (no network call) until its wait has passed.
    with pytest.raises(FloodWaitBlocked) as again:
        await bounded(pipe.invoke(send_call(-5, random_id=9), group))
    assert not again.value.from_server and again.value.seconds == pytest.approx(30)
    assert group.count == 7
    assert not rec.of(PaceLearned)  # one chat's flood is no account-wide pace
    clock.advance(30)
    assert await bounded(pipe.invoke(send_call(-5, random_id=10), group)) == "ok"
    assert group.count == 8


async def test_flooded_call_is_resent_only_after_its_wait() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=10)
    edits = Script(clock, [te.FloodWaitError(None, 4)])
    t0 = clock.now()
    assert await bounded(pipe.invoke(edit_call(5), edits)) == "ok"
    assert edits.times == [t0, t0 + 4]  # never an immediate re-send


async def test_edits_and_sends_share_the_chats_scope_other_chats_edit_on_time() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=10)
    flooded = Script(clock, [te.FloodWaitError(None, 6)])
    t0 = clock.now()
    lead = asyncio.create_task(pipe.invoke(edit_call(5), flooded))
    await asyncio.sleep(0)
    # A send into the same chat waits for the same end; an edit in another chat does not.
    same = Script(clock)
    send = asyncio.create_task(pipe.invoke(send_call(-5), same))
    other = Script(clock)
    assert await bounded(pipe.invoke(edit_call(6), other)) == "ok"
    assert other.times == [t0]
    await bounded(asyncio.gather(lead, send))
    assert flooded.times == [t0, t0 + 6] and same.times == [t0 + 6]
    assert {e.scope for e in rec.of(FloodWaitStarted)} == {
        rec.of(FloodWaitStarted)[0].scope}  # only the flooded chat's scope waited


async def test_floods_from_three_chats_widen_to_the_method_account_wide() -> None:
    pipe, clock, rec = make_pipeline(max_flood_wait=10)
    for n, chat in enumerate((-5, -6)):
        with pytest.raises(FloodWaitBlocked):
            await bounded(pipe.invoke(send_call(chat, random_id=n),
                                      Script(clock, [te.FloodWaitError(None, 40)])))
        clock.advance(1)
    free = Script(clock)
    assert await bounded(pipe.invoke(send_call(200), free)) == "ok"  # two chats: not wide
    assert not pipe.ledger.scopes.is_wide("a1", "messages.sendMessage")
    burst = Script(clock, [*["ok"] * 6, te.FloodWaitError(None, 40)])
    for n in range(6):
        await bounded(pipe.invoke(send_call(-7, random_id=10 + n), burst))
        clock.advance(0.1)
    with pytest.raises(FloodWaitBlocked) as third:
        await bounded(pipe.invoke(send_call(-7, random_id=3), burst))
    assert third.value.scope == "acct:a1/method:messages.sendMessage"
    assert pipe.ledger.scopes.is_wide("a1", "messages.sendMessage")
    with pytest.raises(FloodWaitBlocked) as private:
        await bounded(pipe.invoke(send_call(201), free))
    assert not private.value.from_server and free.count == 1
    assert rec.of(PaceLearned)  # an account-wide flood does teach the method's pace
    # Edits are another method: not widened.
    assert await bounded(pipe.invoke(edit_call(9), Script(clock))) == "ok"


async def test_floods_further_apart_than_the_window_do_not_widen() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=10, flood_widen_window=30)
    for n, chat in enumerate((-5, -6, -7)):
        with pytest.raises(FloodWaitBlocked) as e:
            await bounded(pipe.invoke(send_call(chat, random_id=n),
                                      Script(clock, [te.FloodWaitError(None, 20)])))
        assert "/writes:" in e.value.scope
        clock.advance(16)  # 3 floods over 32 s: never 3 chats within 30 s
    assert not pipe.ledger.scopes.is_wide("a1", "messages.sendMessage")


async def test_widened_method_narrows_after_writes_to_other_chats_succeed() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=10, flood_widen_chats=2,
                                   flood_narrow_after=3)
    for n, chat in enumerate((-5, -6)):
        with pytest.raises(FloodWaitBlocked):
            await bounded(pipe.invoke(send_call(chat, random_id=n),
                                      Script(clock, [te.FloodWaitError(None, 20)])))
    assert pipe.ledger.scopes.is_wide("a1", "messages.sendMessage")
    clock.advance(21)
    ok = Script(clock)
    for uid in (300, 301):
        await bounded(pipe.invoke(send_call(uid), ok))
    assert pipe.ledger.scopes.is_wide("a1", "messages.sendMessage")  # 2 of 3
    await bounded(pipe.invoke(send_call(-5), ok))  # a flooded chat does not count
    assert pipe.ledger.scopes.is_wide("a1", "messages.sendMessage")
    await bounded(pipe.invoke(send_call(302), ok))
    assert not pipe.ledger.scopes.is_wide("a1", "messages.sendMessage")
    with pytest.raises(FloodWaitBlocked) as e:
        await bounded(pipe.invoke(send_call(-8, random_id=8),
                                  Script(clock, [te.FloodWaitError(None, 20)])))
    assert "/writes:" in e.value.scope  # per chat again


async def test_a_flood_at_the_configured_send_limit_is_account_wide() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=10, send_limits=((3, 1.0),))
    ok = Script(clock)
    for uid in (400, 401, 402):
        await bounded(pipe.invoke(send_call(uid), ok))
        clock.advance(0.2)
    with pytest.raises(FloodWaitBlocked) as e:
        await bounded(pipe.invoke(send_call(403, random_id=4),
                                  Script(clock, [te.FloodWaitError(None, 20)])))
    assert e.value.scope == "acct:a1/method:messages.sendMessage"


async def test_below_the_configured_send_limit_a_flood_stays_in_its_chat() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=10, send_limits=((3, 1.0),))
    ok = Script(clock)
    for uid in (400, 401, 402):
        await bounded(pipe.invoke(send_call(uid), ok))
        clock.advance(0.6)  # 3 sends over 1.2 s: never 3 within the 1.05 s window
    with pytest.raises(FloodWaitBlocked) as e:
        await bounded(pipe.invoke(send_call(-5, random_id=4),
                                  Script(clock, [te.FloodWaitError(None, 20)])))
    assert "/writes:" in e.value.scope


async def test_widen_chats_one_keeps_every_write_flood_account_wide() -> None:
    pipe, clock, _ = make_pipeline(max_flood_wait=10, flood_widen_chats=1)
    with pytest.raises(FloodWaitBlocked) as e:
        await bounded(pipe.invoke(send_call(-5), Script(clock, [te.FloodWaitError(None, 20)])))
    assert e.value.scope == "acct:a1/method:messages.sendMessage"


def test_chat_writes_are_sends_and_edits_into_a_known_chat() -> None:
    assert is_chat_write(send_call(-5))
    assert is_chat_write(edit_call(5))
    assert not is_chat_write(make_call("messages.getHistory", peer="peer:-5"))
    assert not is_chat_write(make_call("messages.editMessage"))  # no chat known


@pytest.mark.parametrize(("field", "value"), [
    ("flood_widen_chats", 0), ("flood_widen_chats", 2.5), ("flood_widen_window", 0),
    ("flood_widen_window", -1.0), ("flood_widen_window", float("inf")),
    ("flood_narrow_after", 0), ("flood_narrow_after", None),
])
def test_nonsensical_scope_settings_are_refused_naming_the_field(field: str,
                                                                 value: object) -> None:
    with pytest.raises(GuardConfigError) as e:
        GuardConfig(**{field: value})
    assert field in str(e.value)


def test_a_forward_is_a_write_into_the_chat_it_goes_to() -> None:
    request = functions.messages.ForwardMessagesRequest(
        types.InputPeerChat(9), [1, 2], types.InputPeerChat(4), random_id=[11, 12])
    method, peer, random_id = _tl.describe(request)
    assert (method, peer) == ("messages.forwardMessages", "peer:-4")  # to_peer, not from_peer
    call = make_call(method, peer=peer, random_id=random_id, request=request)
    assert is_chat_write(call)
