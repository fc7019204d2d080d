"""The world's update state: delivery to recipients' boxes, pts, and the difference answers.

Requests go through ``World.handle`` serialized and read back as Telethon reads them (the
helpers of ``test_world``); pushed updates are recorded by the world's public update sink.
"""

from __future__ import annotations

from typing import Any

import pytest
from telethon import utils
from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from telethon_guard.testing._types import AuthState
from telethon_guard.testing.world import UnknownPeerError, World
from tests.testing.test_world import auth, call, make_world, rpc_error


class Sink:
    """Records ``(user_id, updates, exclude_key)`` the world pushes."""

    def __init__(self, world: World) -> None:
        self.pushed: list[tuple[int, TLObject, int | None]] = []
        world.set_update_sink(self)

    def __call__(self, user_id: int, updates: TLObject, exclude_key: int | None) -> int:
        self.pushed.append((user_id, updates, exclude_key))
        return 1

    def to(self, user_id: int) -> list[TLObject]:
        return [u for uid, u, _ in self.pushed if uid == user_id]


def account(world: World, name: str) -> AuthState:
    uid = world.register_account(world.user_id(name))
    return auth(1, uid)


def peer_of(world: World, name: str) -> Any:
    target = world.resolve_peer(name)
    if hasattr(target, "channel"):
        ch = target.channel
        return types.InputPeerChannel(ch.id, ch.access_hash)
    return types.InputPeerUser(target.id, target.access_hash)


def channel_input(world: World, name: str) -> types.InputChannel:
    ch = world.resolve_peer(name).channel  # type: ignore[union-attr]
    return types.InputChannel(ch.id, ch.access_hash)


async def get_diff(world: World, state: AuthState, pts: int, **kw: Any) -> Any:
    return await call(world, functions.updates.GetDifferenceRequest(
        pts=pts, date=None, qts=0, **kw), state)


async def channel_diff(world: World, state: AuthState, name: str, pts: int, limit: int = 100
                       ) -> Any:
    return await call(world, functions.updates.GetChannelDifferenceRequest(
        channel_input(world, name), types.ChannelMessagesFilterEmpty(), pts, limit), state)


async def test_send_to_a_user_stores_the_recipients_copy_and_pushes_a_short_update() -> None:
    world = make_world()
    sink = Sink(world)
    alice, bob = account(world, "alice"), account(world, "bob")
    bob_pts = world.account_pts(bob.user_id)  # type: ignore[arg-type]
    res = await call(world, functions.messages.SendMessageRequest(
        peer_of(world, "bob"), "hi", random_id=7), alice)
    assert isinstance(res, types.UpdateShortSentMessage) and res.out
    # bob's copy, and alice's outgoing one for her other sessions (never the sending key)
    [(uid, upd, excluded), (own_uid, own, own_excluded)] = sink.pushed
    assert uid == bob.user_id and excluded == alice.auth_key_id
    assert own_uid == alice.user_id and own_excluded == alice.auth_key_id
    assert isinstance(own, types.UpdateShortMessage) and own.out and own.user_id == bob.user_id
    assert own.pts == res.pts and own.id == res.id
    assert isinstance(upd, types.UpdateShortMessage)
    assert (upd.user_id, upd.message, upd.pts, upd.pts_count, upd.out) == (
        alice.user_id, "hi", bob_pts + 1, 1, None)
    hist = await call(world, functions.messages.GetHistoryRequest(
        peer_of(world, "alice"), 0, None, 0, 10, 0, 0, 0), bob)
    [msg] = hist.messages
    assert (msg.id, msg.message, msg.out) == (upd.id, "hi", False)
    assert msg.from_id == types.PeerUser(alice.user_id)


async def test_group_and_channel_sends_reach_every_other_account() -> None:
    world = make_world()
    sink = Sink(world)
    alice, bob, carol = (account(world, n) for n in ("alice", "bob", "carol"))
    group = types.InputPeerChat(world.group_id("group"))
    await call(world, functions.messages.SendMessageRequest(group, "to group", random_id=1), alice)
    # every member account, and the sender's other sessions (its sending key excluded)
    assert sorted(uid for uid, _, _ in sink.pushed) == sorted(
        [alice.user_id, bob.user_id, carol.user_id])
    for uid, upd, excluded in sink.pushed:
        assert isinstance(upd, types.UpdateShortChatMessage) and excluded == alice.auth_key_id
        assert (upd.chat_id, upd.from_id, upd.message) == (
            world.group_id("group"), alice.user_id, "to group")
        assert bool(upd.out) == (uid == alice.user_id)
    sink.pushed.clear()
    await call(world, functions.messages.SendMessageRequest(
        peer_of(world, "chat_a"), "to chat_a", random_id=2), alice)
    # every account, the sending auth key excluded by the server (alice's other keys get it)
    assert sorted(uid for uid, _, _ in sink.pushed) == sorted(
        [alice.user_id, bob.user_id, carol.user_id])
    for uid, upd, excluded in sink.pushed:
        assert excluded == alice.auth_key_id
        assert isinstance(upd, types.Updates) and len(upd.chats) == 1
        [new] = upd.updates
        assert isinstance(new, types.UpdateNewChannelMessage)
        assert new.pts == world.channel_top_id("chat_a") and new.pts_count == 1
        assert bool(new.message.out) == (uid == alice.user_id)


async def test_post_full_form_and_gap() -> None:
    world = make_world()
    sink = Sink(world)
    bob = account(world, "bob")
    done = world.post("carol", "bob", "full one", form="full")
    [upd] = sink.to(bob.user_id)
    assert isinstance(upd, types.Updates)
    [new] = upd.updates
    assert isinstance(new, types.UpdateNewMessage) and new.pts == done.pts[bob.user_id]
    assert {u.id for u in upd.users} >= {bob.user_id, world.user_id("carol")}
    gap = world.post("carol", "bob", "gap", push=False)
    assert gap.pushed == 0 and gap.pts[bob.user_id] == done.pts[bob.user_id] + 1
    assert len(sink.pushed) == 1


async def test_account_difference_empty_difference_slice_and_too_long() -> None:
    world = make_world(difference_limit=2, pts_kept=5)
    bob = account(world, "bob")
    start = world.account_pts(bob.user_id)  # type: ignore[arg-type]
    empty = await get_diff(world, bob, start)
    assert isinstance(empty, types.updates.DifferenceEmpty)
    for i in range(3):
        world.post("carol", "bob", f"m{i}", push=False)
    sliced = await get_diff(world, bob, start)
    assert isinstance(sliced, types.updates.DifferenceSlice)
    assert [m.message for m in sliced.new_messages] == ["m0", "m1"]
    assert sliced.intermediate_state.pts == start + 2
    rest = await get_diff(world, bob, sliced.intermediate_state.pts)
    assert isinstance(rest, types.updates.Difference)
    assert [m.message for m in rest.new_messages] == ["m2"]
    assert rest.state.pts == start + 3
    assert world.user_id("carol") in {u.id for u in rest.users}
    limited = await get_diff(world, bob, start, pts_total_limit=2)
    assert isinstance(limited, types.updates.DifferenceTooLong) and limited.pts == start + 3
    for i in range(5):
        world.post("carol", "bob", f"n{i}", push=False)
    too_long = await get_diff(world, bob, start)  # the first events are no longer kept
    assert isinstance(too_long, types.updates.DifferenceTooLong) and too_long.pts == start + 8


async def test_group_messages_come_back_in_the_account_difference() -> None:
    world = make_world()
    bob = account(world, "bob")
    start = world.account_pts(bob.user_id)  # type: ignore[arg-type]
    world.post("alice", "group", "in the group", push=False)
    diff = await get_diff(world, bob, start)
    [msg] = diff.new_messages
    assert msg.peer_id == types.PeerChat(world.group_id("group"))
    assert [c.id for c in diff.chats] == [world.group_id("group")]


async def test_channel_difference_empty_page_final_too_long_and_bad_pts() -> None:
    world = make_world(channel_difference_page=2, channel_difference_timeout=7,
                       chat_history_size=3)
    bob = account(world, "bob")
    empty = await channel_diff(world, bob, "chat_a", 3)
    assert isinstance(empty, types.updates.ChannelDifferenceEmpty)
    assert (empty.pts, empty.final, empty.timeout) == (3, True, 7)
    for i in range(3):
        world.post("alice", "chat_a", f"c{i}", push=False)
    page = await channel_diff(world, bob, "chat_a", 3)
    assert isinstance(page, types.updates.ChannelDifference)
    assert (page.pts, bool(page.final), page.timeout) == (5, False, 7)
    assert [m.message for m in page.new_messages] == ["c0", "c1"]
    last = await channel_diff(world, bob, "chat_a", page.pts)
    assert (last.pts, last.final, [m.message for m in last.new_messages]) == (6, True, ["c2"])
    too_long = await channel_diff(world, bob, "chat_a", 1, limit=2)
    assert isinstance(too_long, types.updates.ChannelDifferenceTooLong)
    assert too_long.final and too_long.timeout == 7 and too_long.dialog.pts == 6
    assert too_long.messages[0].id == 6
    err = await rpc_error(world, functions.updates.GetChannelDifferenceRequest(
        channel_input(world, "chat_a"), types.ChannelMessagesFilterEmpty(), 99, 100), bob)
    assert (err.code, err.message) == (400, "PERSISTENT_TIMESTAMP_INVALID")


def test_post_rejects_bad_input_with_the_reason() -> None:
    world = make_world()
    world.register_account(world.user_id("bob"))
    with pytest.raises(UnknownPeerError, match=r"unknown peer 'chat_z'.*channels"):
        world.post("alice", "chat_z", "x")
    with pytest.raises(UnknownPeerError, match="unknown peer 'mallory'"):
        world.post("mallory", "bob", "x")
    with pytest.raises(UnknownPeerError, match="not a user"):
        world.post("chat_a", "bob", "x")
    with pytest.raises(ValueError, match="from_user is required"):
        world.post(None, "bob", "x")
    with pytest.raises(ValueError, match="same user"):
        world.post("bob", "bob", "x")
    with pytest.raises(ValueError, match="4096"):
        world.post("alice", "bob", "x" * 4097)
    with pytest.raises(UnknownPeerError):
        world.resolve_peer(utils.get_peer_id(types.PeerChannel(12345)))
    assert world.resolve_peer(-world.group_id("group")).id == world.group_id("group")
