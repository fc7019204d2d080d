"""Login handlers: ``auth.sendCode`` / ``signIn``, bot tokens, ``logOut``, and the
``auth.exportAuthorization`` / ``importAuthorization`` pair Telethon uses for other-DC senders.

A successful login or import binds ``info.auth.user_id`` (the auth key's state, shared by every
connection using that key) to the account.
"""

from __future__ import annotations

import re

from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import RequestInfo, RpcErrorReply
from .world_core import Handler, WorldCore
from .world_state import UserRecord, access_hash, valid_phone

_EXPORT_TOKENS_MAX = 10_000
_BOT_TOKEN_RE = re.compile(r"^([0-9]{1,15}):[A-Za-z0-9_-]{1,64}$")


class AuthHandlers:
    """``auth.*`` handlers; one user per phone number, the code is ``config.login_code``."""

    def __init__(self, world: WorldCore) -> None:
        self.w = world
        self.phones: dict[str, int] = {}
        self.code_hashes: dict[str, str] = {}
        # token -> (user id, target DC, auth key ids that imported it)
        self.export_tokens: dict[bytes, tuple[int, int, set[int]]] = {}

    def table(self) -> dict[type, Handler]:
        f = functions.auth
        return {
            f.SendCodeRequest: self._auth_send_code,
            f.SignInRequest: self._auth_sign_in,
            f.ImportBotAuthorizationRequest: self._auth_import_bot,
            f.LogOutRequest: self._auth_log_out,
            f.ExportAuthorizationRequest: self._auth_export,
            f.ImportAuthorizationRequest: self._auth_import,
        }

    def _auth_send_code(self, info: RequestInfo) -> TLObject:
        req: functions.auth.SendCodeRequest = info.request
        phone = req.phone_number.replace(" ", "")
        if not valid_phone(phone):
            raise RpcErrorReply(400, "PHONE_NUMBER_INVALID")
        code_hash = self.w.token("code", 8).hex()
        self.code_hashes[code_hash] = phone.lstrip("+")
        return types.auth.SentCode(
            type=types.auth.SentCodeTypeApp(length=len(self.w.config.login_code)),
            phone_code_hash=code_hash,
        )

    def _auth_sign_in(self, info: RequestInfo) -> TLObject:
        req: functions.auth.SignInRequest = info.request
        phone = req.phone_number.replace(" ", "").lstrip("+")
        if not req.phone_code_hash:
            raise RpcErrorReply(400, "PHONE_CODE_HASH_EMPTY")
        if self.code_hashes.get(req.phone_code_hash) != phone:
            raise RpcErrorReply(400, "PHONE_CODE_EXPIRED")
        if not req.phone_code:
            raise RpcErrorReply(400, "PHONE_CODE_EMPTY")
        if req.phone_code != self.w.config.login_code:
            raise RpcErrorReply(400, "PHONE_CODE_INVALID")
        del self.code_hashes[req.phone_code_hash]
        uid = self.phones.get(phone)
        if uid is None:  # an account registered by the server may be reached by its phone too
            uid = next((u.id for u in self.w.users.values() if u.phone == phone and not u.bot),
                       None)
        if uid is None:
            uid = self.w.register_account()
            self.w.users[uid].phone = phone
            self.phones[phone] = uid
        info.auth.user_id = uid
        return types.auth.Authorization(user=self.w.user_tl(uid, uid))

    def _auth_import_bot(self, info: RequestInfo) -> TLObject:
        req: functions.auth.ImportBotAuthorizationRequest = info.request
        m = _BOT_TOKEN_RE.match(req.bot_auth_token or "")
        if m is None or int(m.group(1)) == 0:
            raise RpcErrorReply(400, "ACCESS_TOKEN_INVALID")
        uid = int(m.group(1))
        rec = self.w.users.get(uid)
        if rec is None:
            self.w.users[uid] = UserRecord(
                id=uid,
                access_hash=access_hash(self.w.config.seed, "user", uid),
                first_name=f"Test Bot {uid}",
                username=f"test{uid}_bot",
                bot=True,
            )
            self.w.usernames[f"test{uid}_bot"] = ("user", uid)
        elif not rec.bot:
            raise RpcErrorReply(400, "ACCESS_TOKEN_INVALID")
        self.w.account(uid)
        info.auth.user_id = uid
        return types.auth.Authorization(user=self.w.user_tl(uid, uid))

    def _auth_log_out(self, info: RequestInfo) -> TLObject:
        info.auth.user_id = None
        return types.auth.LoggedOut()

    def _auth_export(self, info: RequestInfo) -> TLObject:
        req: functions.auth.ExportAuthorizationRequest = info.request
        uid = self.w.me(info).user_id
        known = {d.dc_id for d in self.w.dcs}
        if req.dc_id == info.dc_id or (known and req.dc_id not in known) or req.dc_id <= 0:
            raise RpcErrorReply(400, "DC_ID_INVALID")
        token = self.w.token("export", 128)
        self.export_tokens[token] = (uid, req.dc_id, set())
        if len(self.export_tokens) > _EXPORT_TOKENS_MAX:
            self.export_tokens.pop(next(iter(self.export_tokens)))
        return types.auth.ExportedAuthorization(id=uid, bytes=token)

    def _auth_import(self, info: RequestInfo) -> TLObject:
        req: functions.auth.ImportAuthorizationRequest = info.request
        entry = self.export_tokens.get(bytes(req.bytes))
        if entry is None:
            raise RpcErrorReply(400, "AUTH_BYTES_INVALID")
        uid, dc_id, used_by = entry
        key_id = info.auth.auth_key_id
        # Single use, except that the same auth key may repeat the import (Telethon re-sends
        # an unanswered request after a reconnect).
        if uid != req.id or dc_id != info.dc_id or (used_by and key_id not in used_by):
            raise RpcErrorReply(400, "AUTH_BYTES_INVALID")
        used_by.add(key_id)
        info.auth.user_id = uid
        return types.auth.Authorization(user=self.w.user_tl(uid, uid))
