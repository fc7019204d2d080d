"""Login requests: their FLOOD_WAIT scope (per bot token / phone, hashed) and the ledger never
waiting for a login flood (pure logic: fake clock, scripted sends)."""

from __future__ import annotations

import pytest
from telethon import errors as te
from telethon.tl import functions, types

from telethon_guard.call import CallInfo
from telethon_guard.clock import FakeClock
from telethon_guard.config import GuardConfig
from telethon_guard.errors import FloodWaitBlocked
from telethon_guard.flood import FloodLedger, scope_key, scopes_of
from telethon_guard.keys import LOGIN_METHODS, login_flood_key, method_flood_key
from telethon_guard.storage.memory import MemoryStorage

TOKEN = "4242:AAbbCC"


def bot_login() -> functions.auth.ImportBotAuthorizationRequest:
    return functions.auth.ImportBotAuthorizationRequest(0, 1, "hash", TOKEN)


def call_of(request: object, method: str, account: str = "key:01") -> CallInfo:
    return CallInfo(request=request, method=method, account=account, dc_id=2)


def test_a_bot_login_scope_is_per_token_whatever_the_account_and_hides_the_token() -> None:
    a = login_flood_key("key:01", "auth.importBotAuthorization", bot_login())
    b = login_flood_key("key:02", "auth.importBotAuthorization", bot_login())
    assert a == b and a.startswith("acct:bot-") and a.endswith(
        "/method:auth.importBotAuthorization")
    assert TOKEN not in a and "AAbbCC" not in a
    wrapped = functions.InvokeWithoutUpdatesRequest(bot_login())  # receive_updates=False
    assert login_flood_key("key:03", "auth.importBotAuthorization", wrapped) == a


def test_a_phone_login_scope_is_per_phone_number_spelled_any_way() -> None:
    settings = types.CodeSettings()
    k1 = login_flood_key("x", "auth.sendCode",
                         functions.auth.SendCodeRequest("+1 555 0100", 1, "h", settings))
    k2 = login_flood_key("y", "auth.sendCode",
                         functions.auth.SendCodeRequest("15550100", 1, "h", settings))
    assert k1 == k2 and k1.startswith("acct:phone-") and "5550100" not in k1
    other = login_flood_key("x", "auth.sendCode",
                            functions.auth.SendCodeRequest("15550101", 1, "h", settings))
    assert other != k1


def test_other_requests_keep_the_account_method_scope() -> None:
    req = functions.help.GetConfigRequest()
    assert login_flood_key("key:01", "help.getConfig", req) == method_flood_key(
        "key:01", "help.getConfig")
    call = call_of(req, "help.getConfig")
    assert scope_key(call, scopes_of(call)[0]) == "acct:key:01/method:help.getConfig"
    assert {"auth.sendCode", "auth.signIn", "auth.importBotAuthorization"} <= LOGIN_METHODS


async def test_the_ledger_raises_a_login_flood_at_once_whatever_max_flood_wait() -> None:
    clock = FakeClock()
    storage = MemoryStorage(clock)
    ledger = FloodLedger(GuardConfig(max_flood_wait=100_000, deadline=None), storage, clock)
    sent: list[str] = []

    async def send(call: CallInfo) -> object:
        sent.append(call.method)
        raise te.FloodWaitError(request=None, capture=1658)

    call = call_of(bot_login(), "auth.importBotAuthorization")
    with pytest.raises(FloodWaitBlocked) as info:
        await ledger.handle(call, send)
    assert info.value.from_server and sent == ["auth.importBotAuthorization"]
    assert clock.sleeps == []  # nothing slept
    with pytest.raises(FloodWaitBlocked) as again:  # a new auth key, the same token
        await ledger.handle(call_of(bot_login(), "auth.importBotAuthorization", "key:99"),
                            send)
    assert not again.value.from_server and sent == ["auth.importBotAuthorization"]
    assert again.value.retry_after == pytest.approx(1658)
