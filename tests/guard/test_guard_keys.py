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
