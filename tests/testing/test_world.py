"""Unit tests of the test world: World.handle called directly with Telethon's TL requests.

Every result is serialized and read back with the request's own ``read_result``, which is
exactly what Telethon receives over the wire (no network here; end-to-end tests with real
clients are in test_world_e2e.py).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from telethon import utils
from telethon.extensions import BinaryReader
from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject, TLRequest

from telethon_guard._tl import method_name, peer_key, random_id_of
from telethon_guard.testing._types import AuthState, DcAddress, RequestInfo, RpcErrorReply
from telethon_guard.testing.world import World, WorldConfig, unsupported_error
from telethon_guard.testing.world_messages import history_window

_key_ids = itertools.count(1)


def make_world(**config: Any) -> World:
    world = World(WorldConfig(**config))
    world.set_dcs([DcAddress(1, "127.0.0.1", 10001), DcAddress(2, "127.0.0.1", 10002)])
    return world


def auth(dc_id: int = 1, user_id: int | None = None) -> AuthState:
    return AuthState(auth_key_id=next(_key_ids), auth_key=b"\1" * 256, dc_id=dc_id,
                     user_id=user_id)


async def call(world: World, request: TLRequest, state: AuthState, dc_id: int | None = None
               ) -> Any:
    """Run ``request`` through ``world.handle`` as the server does (the request serialized and
    decoded again, so ``None`` dates arrive as the epoch), serialize the result, and read it
    back with the request's own ``read_result`` (exactly what Telethon receives)."""
    request = BinaryReader(bytes(request)).tgread_object()
    info = RequestInfo(
        now=time.monotonic(), conn_id=1, dc_id=dc_id if dc_id is not None else state.dc_id,
        auth=state, msg_id=0, method=method_name(request), request=request, framing="full",
        peer=peer_key(request), random_id=random_id_of(request),
    )
    result = await world.handle(info)
    assert isinstance(result, TLObject)
    return request.read_result(BinaryReader(bytes(result)))


async def rpc_error(world: World, request: TLRequest, state: AuthState,
                    dc_id: int | None = None) -> RpcErrorReply:
    with pytest.raises(RpcErrorReply) as exc_info:
        await call(world, request, state, dc_id)
    return exc_info.value


def input_channel_peer(chat: Any) -> types.InputPeerChannel:
    return types.InputPeerChannel(chat.id, chat.access_hash)


def naive_window(ids: list[int], offset_id: int, add_offset: int, limit: int, max_id: int,
                 min_id: int) -> list[int]:
    """Telegram's getHistory window written the slow, obvious way (for cross-checking)."""
    desc = sorted((i for i in ids if (min_id <= 0 or i > min_id) and (max_id <= 0 or i < max_id)),
                  reverse=True)
    limit = min(limit, 100)
    if limit <= 0:
        return []
    p = 0
    if offset_id > 0:
        p = next((k for k, i in enumerate(desc) if i < offset_id), len(desc))
    start, end = p + add_offset, p + add_offset + limit
    return desc[max(start, 0):max(min(end, len(desc)), 0)]


async def history(world: World, state: AuthState, peer: Any, **kw: Any) -> Any:
    args = {"offset_id": 0, "offset_date": None, "add_offset": 0, "limit": 100, "max_id": 0,
            "min_id": 0, "hash": 0}
    args.update(kw)
    return await call(world, functions.messages.GetHistoryRequest(peer=peer, **args), state)


async def resolve(world: World, state: AuthState, name: str) -> Any:
    res = await call(world, functions.contacts.ResolveUsernameRequest(name), state)
    return (res.chats or res.users)[0]


async def logged_in(world: World, dc_id: int = 1) -> AuthState:
    return auth(dc_id, world.register_account())


# ---- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"history_size": -1},
        {"file_size": 0},
        {"file_dc": 0},
        {"login_code": ""},
        {"login_code": "12a45"},
        {"history_size": 10, "file_message_id": 11},
        {"history_step": 0},
        {"chat_history_size": True},
    ],
)
def test_bad_config_raises_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WorldConfig(**kwargs)


def test_set_dcs_rejects_duplicates_and_empty() -> None:
    world = World()
    with pytest.raises(ValueError):
        world.set_dcs([])
    with pytest.raises(ValueError):
        world.set_dcs([DcAddress(1, "127.0.0.1", 1), DcAddress(1, "127.0.0.1", 2)])


def test_ids_are_deterministic_per_seed() -> None:
    a, b, c = World(), World(), World(WorldConfig(seed=7))
    assert a.user_id("alice") == b.user_id("alice") != a.user_id("bob")
    assert a.channel_id("news") == b.channel_id("news") != c.channel_id("news")
    assert a.file_bytes() == b.file_bytes() != c.file_bytes()
    with pytest.raises(KeyError, match=r"no user named 'news'.*known: alice, bob, carol"):
        a.user_id("news")
    with pytest.raises(KeyError, match=r"no channel named 'nobody'.*known: .*news"):
        a.channel_id("nobody")
    with pytest.raises(TypeError, match="username must be a str"):
        a.user_id(42)  # type: ignore[arg-type]


# ---- connect sequence, users, unauthorized --------------------------------------------------


async def test_get_config_lists_every_dc_and_this_dc() -> None:
    world = make_world()
    cfg = await call(world, functions.help.GetConfigRequest(), auth(2), dc_id=2)
    assert cfg.this_dc == 2
    assert [(o.id, o.ip_address, o.port) for o in cfg.dc_options] == [
        (1, "127.0.0.1", 10001), (2, "127.0.0.1", 10002)]
    assert not any(o.ipv6 or o.cdn for o in cfg.dc_options)
    assert cfg.message_length_max == 4096
    nearest = await call(world, functions.help.GetNearestDcRequest(), auth(1))
    assert nearest.this_dc == 1


async def test_get_users_self_returns_the_account_with_is_self() -> None:
    world = make_world()
    state = await logged_in(world)
    users = await call(world, functions.users.GetUsersRequest([types.InputUserSelf()]), state)
    assert len(users) == 1 and users[0].id == state.user_id and users[0].is_self
    full = await call(world, functions.users.GetFullUserRequest(types.InputUserSelf()), state)
    assert full.full_user.id == state.user_id


async def test_register_account_with_existing_user_id_makes_it_an_account() -> None:
    world = make_world()
    alice = world.user_id("alice")
    assert world.register_account(alice) == alice
    users = await call(world, functions.users.GetUsersRequest([types.InputUserSelf()]),
                       auth(1, alice))
    assert users[0].username == "alice" and users[0].is_self
    with pytest.raises(ValueError):
        world.register_account(0)


@pytest.mark.parametrize(
    "request_",
    [
        functions.users.GetUsersRequest([types.InputUserSelf()]),
        functions.updates.GetStateRequest(),
        functions.contacts.ResolveUsernameRequest("news"),
        functions.auth.ExportAuthorizationRequest(2),
        functions.messages.GetStickersRequest("x", 0),  # unknown and unauthorized: 401 first
    ],
)
async def test_unauthorized_calls_answer_401(request_: TLRequest) -> None:
    err = await rpc_error(make_world(), request_, auth(1))
    assert (err.code, err.message) == (401, "AUTH_KEY_UNREGISTERED")


async def test_unknown_method_names_the_method() -> None:
    world = make_world()
    err = await rpc_error(world, functions.messages.GetStickersRequest("x", 0),
                          await logged_in(world))
    assert err.code == 400
    assert err.message == "METHOD_NOT_SUPPORTED_MESSAGES_GET_STICKERS"
    assert re.fullmatch(r"[A-Z0-9_]+", err.message)


async def test_state_and_empty_difference() -> None:
    world = make_world()
    state = await logged_in(world)
    st = await call(world, functions.updates.GetStateRequest(), state)
    diff = await call(world, functions.updates.GetDifferenceRequest(
        pts=st.pts, date=st.date, qts=st.qts), state)
    assert isinstance(diff, types.updates.DifferenceEmpty)


# ---- login ----------------------------------------------------------------------------------


async def test_send_code_sign_in_binds_the_auth_key_and_is_phone_keyed() -> None:
    world = make_world(login_code="24680")
    state = auth(1)
    sent = await call(world, functions.auth.SendCodeRequest(
        "+10000000000", 1, "hash", types.CodeSettings()), state)
    assert isinstance(sent, types.auth.SentCode) and sent.type.length == 5
    err = await rpc_error(world, functions.auth.SignInRequest(
        "10000000000", sent.phone_code_hash, "11111"), state)
    assert err.message == "PHONE_CODE_INVALID" and state.user_id is None
    res = await call(world, functions.auth.SignInRequest(
        "10000000000", sent.phone_code_hash, "24680"), state)
    assert res.user.is_self and state.user_id == res.user.id
    # the code hash is single use; a new login with the same phone is the same user
    err = await rpc_error(world, functions.auth.SignInRequest(
        "10000000000", sent.phone_code_hash, "24680"), auth(1))
    assert err.message == "PHONE_CODE_EXPIRED"
    other = auth(2)
    sent2 = await call(world, functions.auth.SendCodeRequest(
        "10000000000", 1, "hash", types.CodeSettings()), other)
    await call(world, functions.auth.SignInRequest(
        "10000000000", sent2.phone_code_hash, "24680"), other)
    assert other.user_id == state.user_id
    await call(world, functions.auth.LogOutRequest(), state)
    assert state.user_id is None


async def test_send_code_rejects_bad_phone() -> None:
    err = await rpc_error(make_world(), functions.auth.SendCodeRequest(
        "call me", 1, "hash", types.CodeSettings()), auth(1))
    assert err.message == "PHONE_NUMBER_INVALID"


async def test_bot_authorization() -> None:
    world = make_world()
    state = auth(1)
    res = await call(world, functions.auth.ImportBotAuthorizationRequest(
        0, 1, "hash", "123456:secret-token"), state)
    assert res.user.bot and res.user.id == 123456 and state.user_id == 123456
    err = await rpc_error(world, functions.auth.ImportBotAuthorizationRequest(
        0, 1, "hash", "not-a-token"), auth(1))
    assert err.message == "ACCESS_TOKEN_INVALID"


# ---- export / import authorization ------------------------------------------------------------


async def test_export_then_import_on_other_dc_binds_the_new_key() -> None:
    world = make_world()
    home = await logged_in(world, 1)
    exported = await call(world, functions.auth.ExportAuthorizationRequest(2), home)
    assert exported.id == home.user_id and len(exported.bytes) >= 64
    fresh = auth(2)
    res = await call(world, functions.auth.ImportAuthorizationRequest(
        exported.id, exported.bytes), fresh)
    assert fresh.user_id == home.user_id and res.user.id == home.user_id
    # the same key may repeat the import (a re-sent request); another key may not
    await call(world, functions.auth.ImportAuthorizationRequest(exported.id, exported.bytes),
               fresh)
    err = await rpc_error(world, functions.auth.ImportAuthorizationRequest(
        exported.id, exported.bytes), auth(2))
    assert err.message == "AUTH_BYTES_INVALID"


async def test_import_with_wrong_bytes_or_dc_fails() -> None:
    world = make_world()
    home = await logged_in(world, 1)
    exported = await call(world, functions.auth.ExportAuthorizationRequest(2), home)
    for req, dc in [
        (functions.auth.ImportAuthorizationRequest(exported.id, b"\0" * 128), 2),
        (functions.auth.ImportAuthorizationRequest(exported.id + 1, exported.bytes), 2),
        (functions.auth.ImportAuthorizationRequest(exported.id, exported.bytes), 1),
    ]:
        fresh = auth(dc)
        err = await rpc_error(world, req, fresh)
        assert (err.code, err.message) == (400, "AUTH_BYTES_INVALID")
        assert fresh.user_id is None
    for dc in (1, 3):
        err = await rpc_error(world, functions.auth.ExportAuthorizationRequest(dc), home)
        assert err.message == "DC_ID_INVALID"


# ---- resolve, channels, dialogs ---------------------------------------------------------------


async def test_resolve_username_users_and_channels() -> None:
    world = make_world()
    state = await logged_in(world)
    alice = await resolve(world, state, "alice")
    assert isinstance(alice, types.User) and alice.id == world.user_id("alice")
    assert not alice.is_self and alice.access_hash
    news = await resolve(world, state, "@News")
    assert isinstance(news, types.Channel) and news.broadcast and news.id == world.main_channel_id
    chat = await resolve(world, state, "chat_a")
    assert chat.megagroup
    err = await rpc_error(world, functions.contacts.ResolveUsernameRequest("nobody_here"), state)
    assert (err.code, err.message) == (400, "USERNAME_NOT_OCCUPIED")
    err = await rpc_error(world, functions.contacts.ResolveUsernameRequest("bad name!"), state)
    assert err.message == "USERNAME_INVALID"


async def test_full_channel_and_get_channels_check_access_hash() -> None:
    world = make_world(history_size=42)
    state = await logged_in(world)
    news = await resolve(world, state, "news")
    full = await call(world, functions.channels.GetFullChannelRequest(
        types.InputChannel(news.id, news.access_hash)), state)
    assert full.full_chat.id == news.id and full.full_chat.pts == 42
    chats = await call(world, functions.channels.GetChannelsRequest(
        [types.InputChannel(news.id, news.access_hash)]), state)
    assert [c.id for c in chats.chats] == [news.id]
    err = await rpc_error(world, functions.channels.GetFullChannelRequest(
        types.InputChannel(news.id, news.access_hash ^ 1)), state)
    assert err.message == "CHANNEL_INVALID"


async def test_dialogs_list_channels_and_private_chats() -> None:
    world = make_world(history_size=20)
    state = await logged_in(world)
    bob = await resolve(world, state, "bob")
    await call(world, functions.messages.SendMessageRequest(
        types.InputPeerUser(bob.id, bob.access_hash), "hello bob", random_id=1), state)
    res = await call(world, functions.messages.GetDialogsRequest(
        offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(), limit=100, hash=0),
        state)
    assert isinstance(res, types.messages.Dialogs)
    peers = {utils.get_peer_id(d.peer) for d in res.dialogs}
    assert utils.get_peer_id(types.PeerUser(bob.id)) in peers
    assert utils.get_peer_id(types.PeerChannel(world.main_channel_id)) in peers
    assert len(res.dialogs) == 6
    by_key = {(utils.get_peer_id(m.peer_id), m.id) for m in res.messages}
    for d in res.dialogs:  # every dialog's top message is present (Telethon needs it)
        assert (utils.get_peer_id(d.peer), d.top_message) in by_key
    sliced = await call(world, functions.messages.GetDialogsRequest(
        offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(), limit=2, hash=0),
        state)
    assert isinstance(sliced, types.messages.DialogsSlice) and sliced.count == 6
    assert len(sliced.dialogs) == 2
    peer_dialogs = await call(world, functions.messages.GetPeerDialogsRequest(
        [types.InputDialogPeer(types.InputPeerUser(bob.id, bob.access_hash))]), state)
    assert [d.top_message for d in peer_dialogs.dialogs] == [1]


# ---- history pagination -----------------------------------------------------------------------


async def test_history_first_page_is_newest_first_with_channel_messages() -> None:
    world = make_world(history_size=250)
    state = await logged_in(world)
    news = await resolve(world, state, "news")
    res = await history(world, state, input_channel_peer(news), limit=150)
    assert isinstance(res, types.messages.ChannelMessages)
    assert [m.id for m in res.messages] == list(range(250, 150, -1))  # capped at 100
    assert res.count == 250 and res.pts == 250
    assert [c.id for c in res.chats] == [news.id]
    assert all(m.peer_id == types.PeerChannel(news.id) for m in res.messages)
    dates = [m.date for m in res.messages]
    assert dates == sorted(dates, reverse=True)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"offset_id": 50, "limit": 10}, list(range(49, 39, -1))),
        ({"offset_id": 50, "add_offset": -5, "limit": 10}, list(range(54, 44, -1))),
        ({"offset_id": 1, "add_offset": -10, "limit": 10}, list(range(10, 0, -1))),
        ({"offset_id": 98, "add_offset": -10, "limit": 10}, [100, 99, 98]),  # cut at the top
        ({"offset_id": 3, "limit": 10}, [2, 1]),
        ({"offset_id": 1, "limit": 10}, []),
        ({"offset_id": 1000, "limit": 3}, [100, 99, 98]),
        ({"add_offset": 95, "limit": 10}, [5, 4, 3, 2, 1]),
        ({"add_offset": 100, "limit": 10}, []),
        ({"max_id": 20, "limit": 5}, [19, 18, 17, 16, 15]),
        ({"min_id": 97, "limit": 5}, [100, 99, 98]),
        ({"min_id": 10, "max_id": 15, "limit": 100}, [14, 13, 12, 11]),
        ({"limit": 0}, []),
        ({"limit": -5}, []),
    ],
)
async def test_history_offsets(kw: dict[str, int], expected: list[int]) -> None:
    world = make_world(history_size=100)
    state = await logged_in(world)
    news = await resolve(world, state, "news")
    res = await history(world, state, input_channel_peer(news), **kw)
    assert [m.id for m in res.messages] == expected


def test_history_window_matches_naive_definition() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        n = rng.randint(0, 60)
        ids = sorted(rng.sample(range(1, 200), n)) if rng.random() < 0.5 else list(
            range(1, n + 1))
        kw = {
            "offset_id": rng.choice([0, 0, rng.randint(0, 210)]),
            "add_offset": rng.choice([0, rng.randint(-120, 120)]),
            "limit": rng.choice([rng.randint(-2, 30), 100, 150]),
            "max_id": rng.choice([0, rng.randint(0, 210)]),
            "min_id": rng.choice([0, rng.randint(0, 210)]),
        }
        assert history_window(ids, **kw) == naive_window(ids, **kw), (ids, kw)


async def test_history_walks_like_telethon_forwards_and_in_reverse() -> None:
    """Replays _MessagesIter's request sequence: every id exactly once, both directions."""
    world = make_world(history_size=1234)
    state = await logged_in(world)
    peer = input_channel_peer(await resolve(world, state, "news"))
    seen: list[int] = []
    offset_id, offset_date = 0, None
    while True:
        res = await history(world, state, peer, offset_id=offset_id, offset_date=offset_date)
        if not res.messages:
            break
        seen.extend(m.id for m in res.messages)
        offset_id, offset_date = res.messages[-1].id, res.messages[-1].date
    assert seen == list(range(1234, 0, -1))

    seen = []
    offset_id = 1
    while True:
        res = await history(world, state, peer, offset_id=offset_id, add_offset=-100)
        if not res.messages:
            break
        batch = [m.id for m in reversed(res.messages)]
        seen.extend(batch)
        offset_id = batch[-1] + 1
    assert seen == list(range(1, 1235))


async def test_history_offset_date_when_no_offset_id() -> None:
    world = make_world(history_size=100, history_start=1_000_000, history_step=10)
    state = await logged_in(world)
    peer = input_channel_peer(await resolve(world, state, "news"))
    # message k is dated 1_000_000 + (k - 1) * 10; offset_date selects messages strictly older
    date = datetime.fromtimestamp(1_000_000 + 49 * 10, tz=timezone.utc)
    res = await history(world, state, peer, offset_date=date, limit=3)
    assert [m.id for m in res.messages] == [49, 48, 47]


async def test_file_message_carries_the_document() -> None:
    world = make_world(history_size=10, file_message_id=7, file_size=10_000, file_dc=2)
    state = await logged_in(world)
    peer = input_channel_peer(await resolve(world, state, "news"))
    res = await history(world, state, peer)
    with_media = [m for m in res.messages if m.media is not None]
    assert [m.id for m in with_media] == [7] == [world.file_message_id]
    doc = with_media[0].media.document
    assert (doc.size, doc.dc_id) == (10_000, 2) and doc.id == world.file_document().id


async def test_megagroup_history_includes_authors() -> None:
    world = make_world(chat_history_size=5)
    state = await logged_in(world)
    chat = await resolve(world, state, "chat_b")
    res = await history(world, state, input_channel_peer(chat))
    assert [m.id for m in res.messages] == [5, 4, 3, 2, 1]
    authors = {m.from_id.user_id for m in res.messages}
    assert authors <= {u.id for u in res.users} and len(authors) == 3


# ---- sending ----------------------------------------------------------------------------------


async def test_send_to_megagroup_answers_updates_and_stores_once() -> None:
    world = make_world(chat_history_size=3)
    state = await logged_in(world)
    chat = await resolve(world, state, "chat_a")
    peer = input_channel_peer(chat)
    req = functions.messages.SendMessageRequest(peer, "hello", random_id=777)
    res = await call(world, req, state)
    assert isinstance(res, types.Updates)
    mid = next(u for u in res.updates if isinstance(u, types.UpdateMessageID))
    new = next(u for u in res.updates if isinstance(u, types.UpdateNewChannelMessage))
    assert (mid.random_id, mid.id) == (777, 4) and new.message.id == 4
    assert new.message.out and new.message.message == "hello" and new.pts == 4
    assert new.message.from_id == types.PeerUser(state.user_id)
    err = await rpc_error(world, functions.messages.SendMessageRequest(
        peer, "hello again", random_id=777), state)
    assert (err.code, err.message) == (500, "RANDOM_ID_DUPLICATE")
    sent = world.sent_messages(account=state.user_id)
    assert [(s.random_id, s.text, s.message_id) for s in sent] == [(777, "hello", 4)]
    assert sent[0].peer == utils.get_peer_id(types.PeerChannel(chat.id))
    assert world.sent_messages(peer=sent[0].peer) == sent
    # the same random_id from another account is a different message
    other = await logged_in(world)
    await call(world, functions.messages.SendMessageRequest(peer, "mine", random_id=777), other)
    page = await history(world, other, peer, limit=2)
    assert [(m.id, bool(m.out)) for m in page.messages] == [(5, True), (4, False)]
    assert len(world.sent_messages()) == 2


async def test_send_to_user_answers_short_sent_message_and_updates_pts() -> None:
    world = make_world()
    state = await logged_in(world)
    alice = await resolve(world, state, "alice")
    peer = types.InputPeerUser(alice.id, alice.access_hash)
    st = await call(world, functions.updates.GetStateRequest(), state)
    res1 = await call(world, functions.messages.SendMessageRequest(peer, "a", random_id=1), state)
    res2 = await call(world, functions.messages.SendMessageRequest(
        types.InputPeerSelf(), "b", random_id=2), state)
    assert isinstance(res1, types.UpdateShortSentMessage)
    assert (res1.id, res1.pts, res1.pts_count) == (1, st.pts + 1, 1)
    assert (res2.id, res2.pts) == (2, st.pts + 2)
    hist = await history(world, state, peer)
    assert isinstance(hist, types.messages.Messages)
    assert [m.message for m in hist.messages] == ["a"]
    diff = await call(world, functions.updates.GetDifferenceRequest(
        pts=st.pts, date=st.date, qts=0), state)
    assert isinstance(diff, types.updates.Difference)
    assert [m.id for m in diff.new_messages] == [1, 2] and diff.state.pts == st.pts + 2
    got = await call(world, functions.messages.GetMessagesRequest(
        [types.InputMessageID(2), types.InputMessageID(99)]), state)
    assert got.messages[0].message == "b" and isinstance(got.messages[1], types.MessageEmpty)


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [("", 400, "MESSAGE_EMPTY"), ("x" * 4097, 400, "MESSAGE_TOO_LONG")],
)
async def test_send_rejects_bad_text(text: str, code: int, message: str) -> None:
    world = make_world()
    state = await logged_in(world)
    err = await rpc_error(world, functions.messages.SendMessageRequest(
        types.InputPeerSelf(), text, random_id=5), state)
    assert (err.code, err.message) == (code, message)
    assert world.sent_messages() == []


async def test_news_is_read_only_and_bad_peers_are_rejected() -> None:
    world = make_world(history_size=10)
    state = await logged_in(world)
    news = await resolve(world, state, "news")
    err = await rpc_error(world, functions.messages.SendMessageRequest(
        input_channel_peer(news), "x", random_id=1), state)
    assert (err.code, err.message) == (403, "CHAT_WRITE_FORBIDDEN")
    err = await rpc_error(world, functions.messages.SendMessageRequest(
        types.InputPeerUser(12345, 1), "x", random_id=2), state)
    assert err.message == "PEER_ID_INVALID"
    assert world.channel_top_id("news") == 10 and world.sent_messages() == []


async def test_channel_difference_returns_missed_messages() -> None:
    world = make_world(chat_history_size=2)
    a, b = await logged_in(world), await logged_in(world)
    chat = await resolve(world, a, "chat_c")
    peer = input_channel_peer(chat)
    for i in range(3):
        await call(world, functions.messages.SendMessageRequest(peer, f"m{i}", random_id=i), b)
    diff = await call(world, functions.updates.GetChannelDifferenceRequest(
        types.InputChannel(chat.id, chat.access_hash), types.ChannelMessagesFilterEmpty(),
        pts=2, limit=100), a)
    assert [m.message for m in diff.new_messages] == ["m0", "m1", "m2"] and diff.pts == 5
    assert diff.final
    empty = await call(world, functions.updates.GetChannelDifferenceRequest(
        types.InputChannel(chat.id, chat.access_hash), types.ChannelMessagesFilterEmpty(),
        pts=5, limit=100), a)
    assert isinstance(empty, types.updates.ChannelDifferenceEmpty) and empty.pts == 5


# ---- files ------------------------------------------------------------------------------------


def file_location(world: World) -> types.InputDocumentFileLocation:
    doc = world.file_document()
    return types.InputDocumentFileLocation(doc.id, doc.access_hash, doc.file_reference, "")


async def test_get_file_on_other_dc_answers_file_migrate() -> None:
    world = make_world(file_dc=2)
    state = await logged_in(world, 1)
    err = await rpc_error(world, functions.upload.GetFileRequest(
        file_location(world), 0, 4096), state)
    assert (err.code, err.message) == (303, "FILE_MIGRATE_2")


async def test_get_file_downloads_the_deterministic_bytes_in_telethon_chunks() -> None:
    size = 300 * 1024 + 123
    world = make_world(file_size=size, file_dc=2)
    home = await logged_in(world, 1)
    exported = await call(world, functions.auth.ExportAuthorizationRequest(2), home)
    state = auth(2)
    await call(world, functions.auth.ImportAuthorizationRequest(exported.id, exported.bytes),
               state)
    data = b""
    offset = 0
    while True:
        res = await call(world, functions.upload.GetFileRequest(
            file_location(world), offset, 128 * 1024), state)
        assert isinstance(res, types.upload.File)
        data += res.bytes
        if len(res.bytes) < 128 * 1024:
            break
        offset += 128 * 1024
    assert data == world.file_bytes() and len(data) == size
    assert len(set(data[:4096])) > 200  # not a constant pattern


@pytest.mark.parametrize(
    ("offset", "limit", "message"),
    [
        (100, 4096, "OFFSET_INVALID"),
        (0, 5000, "LIMIT_INVALID"),
        (0, 3 * 4096, "LIMIT_INVALID"),  # does not divide 1 MiB
        (0, 2 * 1024 * 1024, "LIMIT_INVALID"),
        (1024 * 1024 - 4096, 8192, "LIMIT_INVALID"),  # crosses a 1 MiB boundary
    ],
)
async def test_get_file_window_rules(offset: int, limit: int, message: str) -> None:
    world = make_world(file_dc=1)
    err = await rpc_error(world, functions.upload.GetFileRequest(
        file_location(world), offset, limit), await logged_in(world, 1))
    assert (err.code, err.message) == (400, message)


async def test_get_file_rejects_unknown_files() -> None:
    world = make_world(file_dc=1)
    state = await logged_in(world, 1)
    doc = world.file_document()
    for loc, message in [
        (types.InputDocumentFileLocation(doc.id + 1, doc.access_hash, doc.file_reference, ""),
         "FILE_ID_INVALID"),
        (types.InputDocumentFileLocation(doc.id, doc.access_hash, b"old", ""),
         "FILE_REFERENCE_EXPIRED"),
        (types.InputPeerPhotoFileLocation(types.InputPeerSelf(), 1), "LOCATION_INVALID"),
    ]:
        err = await rpc_error(world, functions.upload.GetFileRequest(loc, 0, 4096), state)
        assert err.message == message


async def test_large_file_ranges_without_holding_it() -> None:
    world = make_world(file_size=40 * 1024 * 1024, file_dc=1)
    state = await logged_in(world, 1)
    offset = 33 * 1024 * 1024
    res = await call(world, functions.upload.GetFileRequest(
        file_location(world), offset, 512 * 1024), state)
    again = World(WorldConfig(file_size=40 * 1024 * 1024)).core.files.read(offset, 512 * 1024)
    assert res.bytes == again and len(again) == 512 * 1024
    assert world.core.files._whole is None  # ranges are generated, the file is not kept


async def test_upload_parts_are_recorded_by_size_and_hash() -> None:
    world = make_world()
    state = await logged_in(world)
    ok = await call(world, functions.upload.SaveFilePartRequest(42, 0, b"a" * 1024), state)
    assert ok is True
    await call(world, functions.upload.SaveFilePartRequest(42, 1, b"bc"), state)
    parts = world.uploaded_parts(42)
    assert {i: p.size for i, p in parts.items()} == {0: 1024, 1: 2}
    assert parts[1].sha256 == hashlib.sha256(b"bc").hexdigest()
    assert await call(world, functions.upload.SaveBigFilePartRequest(43, 2, 3, b"x"), state)
    assert world.uploaded_parts(43)[2].size == 1
    for req, message in [
        (functions.upload.SaveFilePartRequest(44, 0, b""), "FILE_PART_EMPTY"),
        (functions.upload.SaveFilePartRequest(44, 0, b"x" * (512 * 1024 + 1)),
         "FILE_PART_TOO_BIG"),
        (functions.upload.SaveFilePartRequest(44, 4000, b"x"), "FILE_PART_INVALID"),
        (functions.upload.SaveBigFilePartRequest(44, 3, 3, b"x"), "FILE_PART_INVALID"),
        (functions.upload.SaveBigFilePartRequest(44, 0, 4001, b"x"), "FILE_PARTS_INVALID"),
    ]:
        err = await rpc_error(world, req, state)
        assert (err.code, err.message) == (400, message)
    assert world.uploaded_parts(44) == {}


async def test_send_media_with_uploaded_document() -> None:
    world = make_world()
    state = await logged_in(world)
    await call(world, functions.upload.SaveFilePartRequest(9, 0, b"z" * 2048), state)
    await call(world, functions.upload.SaveFilePartRequest(9, 1, b"z" * 10), state)
    media = types.InputMediaUploadedDocument(
        types.InputFile(9, 2, "f.bin", ""), "application/octet-stream",
        [types.DocumentAttributeFilename("f.bin")])
    res = await call(world, functions.messages.SendMediaRequest(
        types.InputPeerSelf(), media, "caption", random_id=11), state)
    new = next(u for u in res.updates if isinstance(u, types.UpdateNewMessage))
    assert new.message.media.document.size == 2058 and new.message.message == "caption"
    missing = types.InputMediaUploadedDocument(
        types.InputFile(9, 3, "f.bin", ""), "application/octet-stream", [])
    err = await rpc_error(world, functions.messages.SendMediaRequest(
        types.InputPeerSelf(), missing, "", random_id=12), state)
    assert err.message == "FILE_PARTS_INVALID"


def test_unsupported_error_names() -> None:
    assert unsupported_error("ping") == "METHOD_NOT_SUPPORTED_PING"
    assert unsupported_error("help.getCdnConfig") == "METHOD_NOT_SUPPORTED_HELP_GET_CDN_CONFIG"


async def test_forward_messages_stores_each_and_rejects_any_duplicate() -> None:
    world = make_world(history_size=30, chat_history_size=0)
    state = await logged_in(world)
    news = input_channel_peer(await resolve(world, state, "news"))
    chat = input_channel_peer(await resolve(world, state, "chat_b"))
    res = await call(world, functions.messages.ForwardMessagesRequest(
        from_peer=news, id=[5, 6], to_peer=chat, random_id=[101, 102]), state)
    id_updates = [u for u in res.updates if isinstance(u, types.UpdateMessageID)]
    assert [(u.random_id, u.id) for u in id_updates] == [(101, 1), (102, 2)]
    new = [u.message for u in res.updates if isinstance(u, types.UpdateNewChannelMessage)]
    assert [m.message for m in new] == ["@news message 5", "@news message 6"]
    assert new[0].fwd_from.channel_post == 5
    assert new[0].fwd_from.from_id == types.PeerChannel(world.main_channel_id)
    # one reused random_id in the batch: nothing of the batch is stored
    err = await rpc_error(world, functions.messages.ForwardMessagesRequest(
        from_peer=news, id=[7, 8], to_peer=chat, random_id=[103, 102]), state)
    assert (err.code, err.message) == (500, "RANDOM_ID_DUPLICATE")
    err = await rpc_error(world, functions.messages.ForwardMessagesRequest(
        from_peer=news, id=[31], to_peer=chat, random_id=[104]), state)
    assert err.message == "MESSAGE_ID_INVALID"
    assert [s.random_id for s in world.sent_messages()] == [101, 102]
    assert world.channel_top_id("chat_b") == 2


async def test_set_typing_and_photo_upload() -> None:
    world = make_world()
    state = await logged_in(world)
    bob = await resolve(world, state, "bob")
    peer = types.InputPeerUser(bob.id, bob.access_hash)
    assert await call(world, functions.messages.SetTypingRequest(
        peer, types.SendMessageTypingAction()), state) is True
    await call(world, functions.upload.SaveFilePartRequest(5, 0, b"p" * 100), state)
    res = await call(world, functions.messages.SendMediaRequest(
        peer, types.InputMediaUploadedPhoto(types.InputFile(5, 1, "p.jpg", "")), "",
        random_id=9), state)
    new = next(u for u in res.updates if isinstance(u, types.UpdateNewMessage))
    assert isinstance(new.message.media, types.MessageMediaPhoto)
    assert {u.id for u in res.users} == {state.user_id, bob.id}
    err = await rpc_error(world, functions.messages.SendMediaRequest(
        peer, types.InputMediaContact("1", "a", "b", ""), "", random_id=10), state)
    assert err.message == "MEDIA_INVALID"
    assert [s.random_id for s in world.sent_messages()] == [9]


async def test_sign_in_with_a_registered_accounts_phone_and_resolving_a_bot() -> None:
    world = make_world()
    account = world.register_account()
    me = await call(world, functions.users.GetUsersRequest([types.InputUserSelf()]),
                    auth(1, account))
    state = auth(1)
    sent = await call(world, functions.auth.SendCodeRequest(
        "+" + me[0].phone, 1, "hash", types.CodeSettings()), state)
    await call(world, functions.auth.SignInRequest(me[0].phone, sent.phone_code_hash, "12345"),
               state)
    assert state.user_id == account
    await call(world, functions.auth.ImportBotAuthorizationRequest(0, 1, "h", "777:tok"), auth(1))
    bot = await resolve(world, state, "test777_bot")
    assert bot.bot and bot.id == 777


def _odd_requests(world: World) -> list[TLRequest]:
    ch = world.core.channels[world.channel_id("chat_a")].channel
    good = types.InputPeerChannel(ch.id, ch.access_hash)
    f = functions
    return [
        f.messages.GetHistoryRequest(types.InputPeerEmpty(), 0, None, 0, 10, 0, 0, 0),
        f.messages.GetHistoryRequest(types.InputPeerChat(5), 0, None, 0, 10, 0, 0, 0),
        f.messages.GetHistoryRequest(good, 2**31 - 1, None, -(2**31), 2**31 - 1, 2**31 - 1,
                                     -(2**31), 0),
        f.messages.GetHistoryRequest(types.InputPeerSelf(), -5, None, 2**31 - 1, 100, -1, -1,
                                     0),
        f.messages.GetMessagesRequest([types.InputMessageReplyTo(1)]),
        f.channels.GetMessagesRequest(types.InputChannelEmpty(), [types.InputMessageID(1)]),
        f.channels.GetMessagesRequest(types.InputChannel(ch.id, ch.access_hash),
                                      [types.InputMessagePinned(), types.InputMessageID(-1)]),
        f.updates.GetChannelDifferenceRequest(types.InputChannel(ch.id, ch.access_hash),
                                              types.ChannelMessagesFilterEmpty(), -10, 0),
        f.updates.GetDifferenceRequest(pts=-1, date=None, qts=0),
        f.messages.GetDialogsRequest(None, 0, types.InputPeerUser(1, 2), -1, 0),
        f.messages.GetDialogsRequest(datetime(2000, 1, 1, tzinfo=timezone.utc), 5,
                                     types.InputPeerEmpty(), 100, 0, folder_id=1),
        f.messages.GetPeerDialogsRequest([types.InputDialogPeerFolder(1)]),
        f.users.GetUsersRequest([types.InputUserEmpty(), types.InputUser(1, 1)]),
        f.users.GetFullUserRequest(types.InputUserEmpty()),
        f.messages.SendMessageRequest(types.InputPeerChat(1), "x", random_id=1),
        f.messages.SendMediaRequest(good, types.InputMediaEmpty(), "", random_id=2),
        f.messages.ForwardMessagesRequest(types.InputPeerSelf(), [1], good, random_id=[3]),
        f.messages.ForwardMessagesRequest(good, [], good, random_id=[]),
        f.messages.ForwardMessagesRequest(good, [1, 2], good, random_id=[4]),
        f.upload.GetFileRequest(types.InputDocumentFileLocation(
            world.file_document().id, world.file_document().access_hash,
            world.file_document().file_reference, ""), 2**40, 4096),
        f.upload.GetFileRequest(types.InputDocumentFileLocation(1, 1, b"", "x"), -4096, 0),
        f.upload.SaveBigFilePartRequest(1, -1, 0, b"x"),
        f.auth.ImportAuthorizationRequest(0, b""),
        f.auth.SendCodeRequest("", 1, "", types.CodeSettings()),
        f.auth.SignInRequest("", "", None),
        f.auth.ImportBotAuthorizationRequest(0, 1, "", ""),
        f.contacts.ResolveUsernameRequest(""),
        f.channels.GetChannelsRequest([types.InputChannelEmpty()]),
        f.channels.ReadHistoryRequest(types.InputChannelEmpty(), 0),
        f.messages.ReadHistoryRequest(types.InputPeerEmpty(), 0),
        f.messages.SetTypingRequest(types.InputPeerEmpty(), types.SendMessageCancelAction()),
    ]


async def test_odd_inputs_answer_rpc_errors_never_crash() -> None:
    world = make_world(history_size=10, chat_history_size=3)
    state = await logged_in(world)
    for request in _odd_requests(world):
        try:
            await call(world, request, state)
        except RpcErrorReply as e:
            assert 300 <= e.code < 600 and re.fullmatch(r"[A-Z0-9_]+", e.message), request


async def test_huge_history_costs_only_the_page() -> None:
    """No O(history) work: a 100-million-message channel builds only what a call returns."""
    world = make_world(history_size=100_000_000, history_step=1)
    state = await logged_in(world)
    peer = input_channel_peer(await resolve(world, state, "news"))
    res = await history(world, state, peer, offset_id=50_000_001, limit=100)
    assert [m.id for m in res.messages] == list(range(50_000_000, 49_999_900, -1))
    date = res.messages[0].date
    res = await history(world, state, peer, offset_date=date, limit=1)
    assert [m.id for m in res.messages] == [49_999_999]
    built = len(world.core.channels[world.main_channel_id]._cache)
    assert built <= 100 + 2 * 64  # the page plus a binary search for offset_date


async def test_get_participants_search_and_paging() -> None:
    world = make_world()
    state = await logged_in(world)
    chat = await resolve(world, state, "chat_a")
    channel = types.InputChannel(chat.id, chat.access_hash)

    async def participants(flt: Any, offset: int = 0, limit: int = 200) -> Any:
        return await call(world, functions.channels.GetParticipantsRequest(
            channel, flt, offset, limit, 0), state)

    everyone = await participants(types.ChannelParticipantsRecent())
    ids = [p.user_id for p in everyone.participants]
    assert everyone.count == 4 and set(ids) == {state.user_id, *(
        world.user_id(n) for n in ("alice", "bob", "carol"))}
    assert [u.id for u in everyone.users] == ids
    page = await participants(types.ChannelParticipantsRecent(), offset=1, limit=2)
    assert [p.user_id for p in page.participants] == ids[1:3] and page.count == 4
    found = await participants(types.ChannelParticipantsSearch("CAR"))
    assert [u.username for u in found.users] == ["carol"] and found.count == 1
    assert (await participants(types.ChannelParticipantsKicked(""))).count == 0
    full = await call(world, functions.channels.GetFullChannelRequest(channel), state)
    assert full.full_chat.participants_count == 4
