"""The key scheme is spelled in one module (telethon_guard.keys) and nowhere else."""

from __future__ import annotations

import pathlib
import re

from telethon_guard import keys


def test_keys_follow_the_documented_scheme() -> None:
    assert keys.account_key("a") == "acct:a"
    assert keys.breaker_key("a", 2) == "acct:a/dc:2"
    assert keys.method_limit_key("a", 2, "messages.getHistory") == (
        "acct:a/dc:2/method:messages.getHistory")
    assert keys.transfers_key("a", 4) == "acct:a/dc:4/transfers"
    assert keys.method_flood_key("a", "m.x") == "acct:a/method:m.x"
    assert keys.slowmode_key("a", "peer:-5") == "acct:a/slowmode:peer:-5"
    assert keys.sends_key("a") == "acct:a/sends"
    assert keys.peer_limit_key("a", "peer:5") == "acct:a/peer:5"
    assert keys.pace_key("a", "m.x") == "acct:a/pace:m.x"
    assert keys.hash_tagged("acct:42/dc:2/x") == "{acct:42}/dc:2/x"
    assert keys.hash_tagged("acct:42") == "{acct:42}"


def test_no_other_library_module_writes_an_acct_key_by_hand() -> None:
    root = pathlib.Path(keys.__file__).parent
    hand_made = re.compile(r"""f["'][^"']*acct:\{""")
    offenders = [
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if p.name != "keys.py" and hand_made.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_idempotent_requests_are_reads_transfers_known_ones_or_carry_a_random_id() -> None:
    assert keys.is_idempotent("messages.getHistory")
    assert keys.is_idempotent("contacts.resolveUsername")
    assert keys.is_idempotent("upload.saveFilePart")
    assert keys.is_idempotent("ping") and keys.is_idempotent("messages.readHistory")
    assert keys.is_idempotent("messages.sendMessage", random_id=7)
    assert not keys.is_idempotent("messages.sendMessage")
    assert not keys.is_idempotent("auth.sendCode")
    assert not keys.is_idempotent("channels.createChannel")
    assert not keys.is_idempotent("messages.exportChatInvite")


def _marked(peer: object) -> str | None:
    """The peer key as Telethon marks ids (what ``_tl.peer_key`` spelled before its fast
    paths): ``"peer:<utils.get_peer_id(peer)>"`` of a copy (get_peer_id may rewrite an id)."""
    import copy

    from telethon import utils

    try:
        return f"peer:{utils.get_peer_id(copy.deepcopy(peer))}"
    except (TypeError, ValueError):
        return None


def test_peer_keys_are_telethons_marked_ids_for_every_peer_class() -> None:
    from telethon import functions, types

    from telethon_guard import _tl

    msg = types.InputPeerUser(1, 2)
    ids = [1, 5, 777000, 2**31, 9999999999, 10000000000, 1000000000077, 2**40, 0, -5, True]
    peers: list[object] = [types.InputPeerSelf(), types.InputPeerEmpty()]
    for ident in ids:
        peers += [types.InputPeerUser(ident, 3), types.InputUser(ident, 3),
                  types.PeerUser(ident), types.InputPeerUserFromMessage(msg, 4, ident),
                  types.InputUserFromMessage(msg, 4, ident), types.InputPeerChat(ident),
                  types.PeerChat(ident), types.InputPeerChannel(ident, 3),
                  types.InputChannel(ident, 3), types.PeerChannel(ident),
                  types.InputPeerChannelFromMessage(msg, 4, ident),
                  types.InputChannelFromMessage(msg, 4, ident)]
    assert {type(p) for p in peers} >= set(_tl._PEER_KEYS)  # every fast path checked
    for peer in peers:
        want = _marked(peer)
        for request in (
                functions.messages.SendMessageRequest(peer=peer, message="x", random_id=7),
                functions.messages.EditMessageRequest(peer=peer, id=1),
                functions.channels.GetFullChannelRequest(peer),
                functions.messages.ForwardMessagesRequest(
                    from_peer=types.InputPeerEmpty(), id=[1], to_peer=peer, random_id=[8]),
                functions.InvokeWithoutUpdatesRequest(
                    functions.messages.SendMessageRequest(peer=peer, message="x",
                                                          random_id=9))):
            assert _tl.peer_key(request) == want, (peer, request)
            method, key, rid = _tl.describe(request)
            assert key == want and method == _tl.method_name(request), (peer, request)
            assert rid == _tl.random_id_of(request)
    assert _tl.peer_key(types.InputPeerChannel(77, 5)) is None  # not a request: no field
    assert _tl.describe(functions.messages.SendMessageRequest(
        peer=types.InputPeerChannel(77, 5), message="x", random_id=7)) == (
        "messages.sendMessage", "peer:-1000000000077", 7)
    assert _tl.describe(functions.messages.ForwardMessagesRequest(
        from_peer=types.InputPeerEmpty(), id=[1, 2], to_peer=types.InputPeerChat(5),
        random_id=[8, 9])) == ("messages.forwardMessages", "peer:-5", 8)
    assert _tl.describe(functions.updates.GetStateRequest()) == ("updates.getState", None, None)
