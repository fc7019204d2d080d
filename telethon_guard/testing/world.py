"""The world of the local fake Telegram: RPC handlers answering Telethon's requests.

:class:`World` receives one :class:`~telethon_guard.testing._types.RequestInfo` per request
(wrappers already removed by the server) and returns the Telegram-shaped TL object, or raises
:class:`~telethon_guard.testing._types.RpcErrorReply`. One world is shared by every DC and
connection of a server.

The cast (ids are deterministic for a given ``WorldConfig.seed``; see :meth:`World.user_id` and
:meth:`World.channel_id`):

* accounts: created by :meth:`World.register_account` (pre-shared sessions), ``auth.signIn``
  (one user per phone number, code ``WorldConfig.login_code``) or
  ``auth.importBotAuthorization`` (bot id = the number before ``:`` in the token);
* directory users ``@alice``, ``@bob``, ``@carol``;
* ``@news``: broadcast channel with ``history_size`` messages (ids ``1..history_size``), message
  ``file_message_id`` carrying the downloadable document stored on ``file_dc``; read-only
  (``403 CHAT_WRITE_FORBIDDEN``);
* ``@chat_a``, ``@chat_b``, ``@chat_c`` megagroups and ``@chat_d`` broadcast channel, each with
  ``chat_history_size`` messages, writable by every account.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from telethon import utils
from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import AuthState, DcAddress, RequestInfo, RpcErrorReply
from .world_files import FileStore, UploadedPart
from .world_messages import (
    ChannelHistory,
    channel_message,
    first_id_before,
    history_window,
    thaw_copy,
)
from .world_state import (
    CHAT_CHANNELS,
    DIRECTORY_USERS,
    HISTORY_PAGE_MAX,
    MAIN_CHANNEL,
    MESSAGE_LENGTH_MAX,
    AccountState,
    ChannelRecord,
    SentMessage,
    UserRecord,
    WorldConfig,
    access_hash,
    derive,
    to_datetime,
    username_id,
    valid_phone,
)
from .world_tl import TLBool, TLVector

__all__ = [
    "CHAT_CHANNELS",
    "DIRECTORY_USERS",
    "MAIN_CHANNEL",
    "SentMessage",
    "UploadedPart",
    "World",
    "WorldConfig",
]

_PTS_LOG_MAX = 1000
_EXPORT_TOKENS_MAX = 10_000
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")
_BOT_TOKEN_RE = re.compile(r"^([0-9]{1,15}):[A-Za-z0-9_-]{1,64}$")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

Handler = Callable[[RequestInfo], TLObject]


def unsupported_error(method: str) -> str:
    """``METHOD_NOT_SUPPORTED_<METHOD>`` for an unknown method, e.g.
    ``messages.getHistory`` -> ``METHOD_NOT_SUPPORTED_MESSAGES_GET_HISTORY``."""
    ident = re.sub(r"[^A-Za-z0-9]+", "_", _CAMEL_RE.sub("_", method)).strip("_").upper()
    return "METHOD_NOT_SUPPORTED_" + (ident or "UNKNOWN")


class World:
    """State and RPC handlers of the test world; see the module docstring for the cast.

    :meth:`handle` is the only entry point the server uses. Handlers are synchronous and do
    O(limit) work (no per-request work proportional to the history size).
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config if config is not None else WorldConfig()
        cfg = self.config
        self._dcs: list[DcAddress] = []
        self._users: dict[int, UserRecord] = {}
        self._usernames: dict[str, tuple[str, int]] = {}
        self._channels: dict[int, ChannelHistory] = {}
        self._accounts: dict[int, AccountState] = {}
        self._phones: dict[str, int] = {}
        self._code_hashes: dict[str, str] = {}
        self._export_tokens: dict[bytes, tuple[int, int, set[int]]] = {}
        self._sent: list[SentMessage] = []
        self._next_account_id = cfg.first_account_id
        self._counter = 0
        self.files = FileStore(cfg.seed, cfg.file_size)
        self._document = types.Document(
            id=derive(cfg.seed, "document", bits=62),
            access_hash=access_hash(cfg.seed, "document", 1),
            file_reference=b"\x01world-file",
            date=to_datetime(cfg.history_start),
            mime_type="application/octet-stream",
            size=cfg.file_size,
            dc_id=cfg.file_dc,
            attributes=[types.DocumentAttributeFilename(file_name="world.bin")],
        )
        for name in DIRECTORY_USERS:
            uid = username_id(cfg.seed, "user", name)
            self._users[uid] = UserRecord(
                id=uid,
                access_hash=access_hash(cfg.seed, "user", uid),
                first_name=name.capitalize(),
                username=name,
            )
            self._usernames[name] = ("user", uid)
        self._add_channel(MAIN_CHANNEL, "News", megagroup=False, generated=cfg.history_size,
                          writable=False)
        for name in CHAT_CHANNELS:
            self._add_channel(name, name.replace("_", " ").title(),
                              megagroup=name != "chat_d", generated=cfg.chat_history_size,
                              writable=True)
        self._handlers: dict[type, Handler] = self._build_handlers()

    # ---- public helpers -------------------------------------------------------------------

    def set_dcs(self, dcs: list[DcAddress]) -> None:
        """Addresses of the server's DCs; ``help.getConfig`` lists exactly these."""
        if not dcs:
            raise ValueError("set_dcs needs at least one DcAddress")
        ids = [d.dc_id for d in dcs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate DC ids in {ids}")
        self._dcs = list(dcs)

    @property
    def dcs(self) -> list[DcAddress]:
        return list(self._dcs)

    def register_account(self, user_id: int | None = None) -> int:
        """Create (or reuse) a logged-in account and return its user id.

        ``user_id`` None allocates the next id from ``WorldConfig.first_account_id``; an
        existing user's id (e.g. ``world.user_id("alice")``) makes that user an account.
        Raises ``ValueError`` for a non-positive id.
        """
        if user_id is None:
            while self._next_account_id in self._users:
                self._next_account_id += 1
            user_id = self._next_account_id
            self._next_account_id += 1
        if not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id < 2**52:
            raise ValueError(f"user_id must be a positive int below 2**52, got {user_id!r}")
        if user_id not in self._users:
            n = user_id - self.config.first_account_id + 1
            self._users[user_id] = UserRecord(
                id=user_id,
                access_hash=access_hash(self.config.seed, "user", user_id),
                first_name="Test",
                last_name=f"Account {n}" if n > 0 else str(user_id),
                phone=f"999{user_id % 10**7:07d}",
            )
        self._account(user_id)
        return user_id

    def user_id(self, username: str) -> int:
        """Id of directory user ``username`` (``alice``, ``bob``, ``carol``); ``KeyError`` else."""
        kind, eid = self._usernames[username.lower().lstrip("@")]
        if kind != "user":
            raise KeyError(username)
        return eid

    def channel_id(self, username: str) -> int:
        """Bare id of channel ``username`` (``news``, ``chat_a``..``chat_d``); ``KeyError`` else.

        Telethon's marked id is ``-1000000000000 - id``."""
        kind, eid = self._usernames[username.lower().lstrip("@")]
        if kind != "channel":
            raise KeyError(username)
        return eid

    @property
    def main_channel_id(self) -> int:
        return self.channel_id(MAIN_CHANNEL)

    @property
    def file_message_id(self) -> int:
        """Id of the ``@news`` message carrying the document (0 if the history is empty)."""
        return self.config.file_message_id if self.config.history_size > 0 else 0

    def file_document(self) -> types.Document:
        """The ``types.Document`` of the downloadable file."""
        return self._document

    def file_bytes(self) -> bytes:
        """The complete content of the downloadable file (``file_size`` bytes)."""
        return self.files.whole()

    def uploaded_parts(self, file_id: int) -> dict[int, UploadedPart]:
        """Parts stored by ``upload.save(Big)FilePart`` for ``file_id``: index -> size, sha256."""
        return self.files.parts(file_id)

    def sent_messages(
        self, account: int | None = None, peer: int | None = None
    ) -> list[SentMessage]:
        """Messages stored by ``messages.sendMessage``/``sendMedia``, oldest first.

        ``account`` filters by sender user id, ``peer`` by Telethon's marked peer id
        (``utils.get_peer_id``: user id, or ``-100...`` for channels)."""
        return [
            s for s in self._sent
            if (account is None or s.account == account) and (peer is None or s.peer == peer)
        ]

    def channel_top_id(self, username: str) -> int:
        """Newest message id (= pts) of channel ``username``."""
        return self._channels[self.channel_id(username)].top

    # ---- entry point ----------------------------------------------------------------------

    async def handle(self, info: RequestInfo) -> TLObject:
        """Execute ``info.request``; return its TL result or raise :class:`RpcErrorReply`.

        Unauthorized keys may only call ``help.getConfig``, ``help.getNearestDc``,
        ``help.getCdnConfig`` and ``auth.*`` (except ``auth.exportAuthorization``); anything
        else answers ``401 AUTH_KEY_UNREGISTERED`` like Telegram. Unknown methods answer
        ``400 METHOD_NOT_SUPPORTED_<METHOD>``.
        """
        return self.handle_sync(info)

    def handle_sync(self, info: RequestInfo) -> TLObject:
        """Synchronous :meth:`handle` (no handler awaits anything)."""
        if info.auth.user_id is None and not self._allowed_unauthorized(info.method):
            raise RpcErrorReply(401, "AUTH_KEY_UNREGISTERED")
        handler = self._handlers.get(type(info.request))
        if handler is None:
            raise RpcErrorReply(400, unsupported_error(info.method))
        return handler(info)

    @staticmethod
    def _allowed_unauthorized(method: str) -> bool:
        if method in ("help.getConfig", "help.getNearestDc", "help.getCdnConfig"):
            return True
        return method.startswith("auth.") and method != "auth.exportAuthorization"

    def _build_handlers(self) -> dict[type, Handler]:
        f = functions
        return {
            f.help.GetConfigRequest: self._help_get_config,
            f.help.GetNearestDcRequest: self._help_get_nearest_dc,
            f.users.GetUsersRequest: self._users_get_users,
            f.users.GetFullUserRequest: self._users_get_full_user,
            f.updates.GetStateRequest: self._updates_get_state,
            f.updates.GetDifferenceRequest: self._updates_get_difference,
            f.updates.GetChannelDifferenceRequest: self._updates_get_channel_difference,
            f.auth.SendCodeRequest: self._auth_send_code,
            f.auth.SignInRequest: self._auth_sign_in,
            f.auth.ImportBotAuthorizationRequest: self._auth_import_bot,
            f.auth.LogOutRequest: self._auth_log_out,
            f.auth.ExportAuthorizationRequest: self._auth_export,
            f.auth.ImportAuthorizationRequest: self._auth_import,
            f.contacts.ResolveUsernameRequest: self._contacts_resolve_username,
            f.messages.GetHistoryRequest: self._messages_get_history,
            f.messages.SendMessageRequest: self._messages_send_message,
            f.messages.SendMediaRequest: self._messages_send_media,
            f.messages.GetMessagesRequest: self._messages_get_messages,
            f.messages.GetDialogsRequest: self._messages_get_dialogs,
            f.messages.GetPeerDialogsRequest: self._messages_get_peer_dialogs,
            f.messages.ReadHistoryRequest: self._messages_read_history,
            f.channels.GetMessagesRequest: self._channels_get_messages,
            f.channels.GetFullChannelRequest: self._channels_get_full_channel,
            f.channels.GetChannelsRequest: self._channels_get_channels,
            f.channels.ReadHistoryRequest: self._channels_read_history,
            f.upload.GetFileRequest: self._upload_get_file,
            f.upload.SaveFilePartRequest: self._upload_save_file_part,
            f.upload.SaveBigFilePartRequest: self._upload_save_big_file_part,
        }

    # ---- building blocks ------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.config.clock())

    def _account(self, user_id: int) -> AccountState:
        acc = self._accounts.get(user_id)
        if acc is None:
            acc = self._accounts[user_id] = AccountState(user_id=user_id)
        return acc

    def _me(self, info: RequestInfo) -> AccountState:
        uid = info.auth.user_id
        if uid is None:  # guarded by handle(); kept for direct callers
            raise RpcErrorReply(401, "AUTH_KEY_UNREGISTERED")
        if uid not in self._users:
            self.register_account(uid)
        return self._account(uid)

    def _add_channel(
        self, username: str, title: str, *, megagroup: bool, generated: int, writable: bool
    ) -> None:
        cid = username_id(self.config.seed, "channel", username)
        rec = ChannelRecord(
            id=cid,
            access_hash=access_hash(self.config.seed, "channel", cid),
            title=title,
            username=username,
            megagroup=megagroup,
            generated=generated,
            writable=writable,
            created=self.config.history_start - 86_400,
        )
        self._channels[cid] = ChannelHistory(rec, self._generate_message)
        self._usernames[username] = ("channel", cid)

    def _generate_message(self, channel: ChannelRecord, msg_id: int) -> types.Message:
        cfg = self.config
        media = None
        if channel.username == MAIN_CHANNEL and msg_id == self.file_message_id:
            media = types.MessageMediaDocument(document=self._document)
        author = None
        if channel.megagroup:
            author = self.user_id(DIRECTORY_USERS[(msg_id - 1) % len(DIRECTORY_USERS)])
        return channel_message(
            channel,
            msg_id,
            date=cfg.history_start + (msg_id - 1) * cfg.history_step,
            text=f"@{channel.username} message {msg_id}",
            from_user=author,
            media=media,
        )

    def _user_tl(self, uid: int, viewer: int | None) -> types.User:
        return self._users[uid].to_tl(viewer)

    def _peer_of(self, info: RequestInfo, peer: TLObject) -> UserRecord | ChannelHistory:
        """Resolve an InputPeer; ``400 PEER_ID_INVALID`` / ``CHANNEL_INVALID`` when unknown."""
        if isinstance(peer, types.InputPeerSelf):
            return self._users[self._me(info).user_id]
        if isinstance(peer, types.InputPeerUser):
            user = self._users.get(peer.user_id)
            if user is None or user.access_hash != peer.access_hash:
                raise RpcErrorReply(400, "PEER_ID_INVALID")
            return user
        if isinstance(peer, types.InputPeerChannel):
            return self._channel_of(types.InputChannel(peer.channel_id, peer.access_hash))
        if isinstance(peer, types.InputPeerUserFromMessage):
            user = self._users.get(peer.user_id)
            if user is None:
                raise RpcErrorReply(400, "PEER_ID_INVALID")
            return user
        if isinstance(peer, types.InputPeerChannelFromMessage):
            hist = self._channels.get(peer.channel_id)
            if hist is None:
                raise RpcErrorReply(400, "CHANNEL_INVALID")
            return hist
        raise RpcErrorReply(400, "PEER_ID_INVALID")

    def _channel_of(self, channel: TLObject) -> ChannelHistory:
        if isinstance(channel, types.InputPeerChannel):
            channel = types.InputChannel(channel.channel_id, channel.access_hash)
        if isinstance(channel, types.InputChannel):
            hist = self._channels.get(channel.channel_id)
            if hist is not None and hist.channel.access_hash == channel.access_hash:
                return hist
        elif isinstance(channel, types.InputChannelFromMessage):
            hist = self._channels.get(channel.channel_id)
            if hist is not None:
                return hist
        raise RpcErrorReply(400, "CHANNEL_INVALID")

    def _user_of(self, info: RequestInfo, user: TLObject) -> UserRecord | None:
        if isinstance(user, types.InputUserSelf):
            return self._users[self._me(info).user_id]
        if isinstance(user, types.InputUser):
            rec = self._users.get(user.user_id)
            if rec is not None and rec.access_hash == user.access_hash:
                return rec
        elif isinstance(user, types.InputUserFromMessage):
            return self._users.get(user.user_id)
        return None

    def _state(self, acc: AccountState) -> types.updates.State:
        return types.updates.State(
            pts=acc.pts, qts=0, date=to_datetime(self._now()), seq=0, unread_count=0
        )

    def _token(self, kind: str, size: int) -> bytes:
        self._counter += 1
        out = b""
        i = 0
        while len(out) < size:
            out += derive(self.config.seed, kind, self._counter, i).to_bytes(8, "big")
            i += 1
        return out[:size]

    # ---- help / users / updates -----------------------------------------------------------

    def _help_get_config(self, info: RequestInfo) -> TLObject:
        now = self._now()
        dcs = self._dcs or [DcAddress(info.dc_id, "127.0.0.1", 443)]
        return types.Config(
            date=to_datetime(now),
            expires=to_datetime(now + 3600),
            test_mode=False,
            this_dc=info.dc_id,
            dc_options=[types.DcOption(id=d.dc_id, ip_address=d.host, port=d.port) for d in dcs],
            dc_txt_domain_name="localhost",
            chat_size_max=200,
            megagroup_size_max=200_000,
            forwarded_count_max=100,
            online_update_period_ms=210_000,
            offline_blur_timeout_ms=5_000,
            offline_idle_timeout_ms=30_000,
            online_cloud_timeout_ms=300_000,
            notify_cloud_delay_ms=30_000,
            notify_default_delay_ms=1_500,
            push_chat_period_ms=60_000,
            push_chat_limit=2,
            edit_time_limit=172_800,
            revoke_time_limit=2_147_483_647,
            revoke_pm_time_limit=2_147_483_647,
            rating_e_decay=2_419_200,
            stickers_recent_limit=200,
            channels_read_media_period=604_800,
            call_receive_timeout_ms=20_000,
            call_ring_timeout_ms=90_000,
            call_connect_timeout_ms=30_000,
            call_packet_timeout_ms=10_000,
            me_url_prefix="https://t.me/",
            caption_length_max=1024,
            message_length_max=MESSAGE_LENGTH_MAX,
            webfile_dc_id=info.dc_id,
        )

    def _help_get_nearest_dc(self, info: RequestInfo) -> TLObject:
        return types.NearestDc(country="US", this_dc=info.dc_id, nearest_dc=info.dc_id)

    def _users_get_users(self, info: RequestInfo) -> TLObject:
        req: functions.users.GetUsersRequest = info.request
        viewer = self._me(info).user_id
        out: list[Any] = []
        for u in req.id:
            rec = self._user_of(info, u)
            if rec is not None:
                out.append(rec.to_tl(viewer))
        return TLVector(out)

    def _users_get_full_user(self, info: RequestInfo) -> TLObject:
        req: functions.users.GetFullUserRequest = info.request
        viewer = self._me(info).user_id
        rec = self._user_of(info, req.id)
        if rec is None:
            raise RpcErrorReply(400, "USER_ID_INVALID")
        return types.users.UserFull(
            full_user=types.UserFull(
                id=rec.id,
                settings=types.PeerSettings(),
                notify_settings=types.PeerNotifySettings(),
                common_chats_count=0,
                about=f"Test user {rec.first_name}",
            ),
            chats=[],
            users=[rec.to_tl(viewer)],
        )

    def _updates_get_state(self, info: RequestInfo) -> TLObject:
        return self._state(self._me(info))

    def _updates_get_difference(self, info: RequestInfo) -> TLObject:
        req: functions.updates.GetDifferenceRequest = info.request
        acc = self._me(info)
        now = to_datetime(self._now())
        if req.pts >= acc.pts:
            return types.updates.DifferenceEmpty(date=now, seq=0)
        missing = range(max(req.pts, 0) + 1, acc.pts + 1)
        if any(p not in acc.pts_log for p in missing):
            return types.updates.DifferenceTooLong(pts=acc.pts)
        messages = [acc.pts_log[p] for p in missing]
        peers = {m.peer_id.user_id for m in messages if isinstance(m.peer_id, types.PeerUser)}
        peers.add(acc.user_id)
        return types.updates.Difference(
            new_messages=messages,
            new_encrypted_messages=[],
            other_updates=[],
            chats=[],
            users=[self._user_tl(u, acc.user_id) for u in sorted(peers) if u in self._users],
            state=self._state(acc),
        )

    def _updates_get_channel_difference(self, info: RequestInfo) -> TLObject:
        req: functions.updates.GetChannelDifferenceRequest = info.request
        viewer = self._me(info).user_id
        hist = self._channel_of(req.channel)
        top = hist.top
        if req.pts >= top:
            return types.updates.ChannelDifferenceEmpty(pts=top, final=True)
        start = max(req.pts, 0)
        end = min(top, start + max(1, min(req.limit, HISTORY_PAGE_MAX)))
        msgs = [self._view(hist, i, viewer) for i in range(start + 1, end + 1)]
        return types.updates.ChannelDifference(
            pts=end,
            new_messages=msgs,
            other_updates=[],
            chats=[hist.channel.to_tl()],
            users=self._users_of(msgs, viewer),
            final=end == top or None,
        )

    # ---- auth -----------------------------------------------------------------------------

    def _auth_send_code(self, info: RequestInfo) -> TLObject:
        req: functions.auth.SendCodeRequest = info.request
        phone = req.phone_number.replace(" ", "")
        if not valid_phone(phone):
            raise RpcErrorReply(400, "PHONE_NUMBER_INVALID")
        code_hash = self._token("code", 8).hex()
        self._code_hashes[code_hash] = phone.lstrip("+")
        return types.auth.SentCode(
            type=types.auth.SentCodeTypeApp(length=len(self.config.login_code)),
            phone_code_hash=code_hash,
        )

    def _auth_sign_in(self, info: RequestInfo) -> TLObject:
        req: functions.auth.SignInRequest = info.request
        phone = req.phone_number.replace(" ", "").lstrip("+")
        if not req.phone_code_hash:
            raise RpcErrorReply(400, "PHONE_CODE_HASH_EMPTY")
        if self._code_hashes.get(req.phone_code_hash) != phone:
            raise RpcErrorReply(400, "PHONE_CODE_EXPIRED")
        if not req.phone_code:
            raise RpcErrorReply(400, "PHONE_CODE_EMPTY")
        if req.phone_code != self.config.login_code:
            raise RpcErrorReply(400, "PHONE_CODE_INVALID")
        del self._code_hashes[req.phone_code_hash]
        uid = self._phones.get(phone)
        if uid is None:
            uid = self.register_account()
            self._users[uid].phone = phone
            self._phones[phone] = uid
        info.auth.user_id = uid
        return types.auth.Authorization(user=self._user_tl(uid, uid))

    def _auth_import_bot(self, info: RequestInfo) -> TLObject:
        req: functions.auth.ImportBotAuthorizationRequest = info.request
        m = _BOT_TOKEN_RE.match(req.bot_auth_token or "")
        if m is None or int(m.group(1)) == 0:
            raise RpcErrorReply(400, "ACCESS_TOKEN_INVALID")
        uid = int(m.group(1))
        rec = self._users.get(uid)
        if rec is None:
            self._users[uid] = UserRecord(
                id=uid,
                access_hash=access_hash(self.config.seed, "user", uid),
                first_name=f"Test Bot {uid}",
                username=f"test{uid}_bot",
                bot=True,
            )
        elif not rec.bot:
            raise RpcErrorReply(400, "ACCESS_TOKEN_INVALID")
        self._account(uid)
        info.auth.user_id = uid
        return types.auth.Authorization(user=self._user_tl(uid, uid))

    def _auth_log_out(self, info: RequestInfo) -> TLObject:
        info.auth.user_id = None
        return types.auth.LoggedOut()

    def _auth_export(self, info: RequestInfo) -> TLObject:
        req: functions.auth.ExportAuthorizationRequest = info.request
        uid = self._me(info).user_id
        known = {d.dc_id for d in self._dcs}
        if req.dc_id == info.dc_id or (known and req.dc_id not in known) or req.dc_id <= 0:
            raise RpcErrorReply(400, "DC_ID_INVALID")
        token = self._token("export", 128)
        self._export_tokens[token] = (uid, req.dc_id, set())
        if len(self._export_tokens) > _EXPORT_TOKENS_MAX:
            self._export_tokens.pop(next(iter(self._export_tokens)))
        return types.auth.ExportedAuthorization(id=uid, bytes=token)

    def _auth_import(self, info: RequestInfo) -> TLObject:
        req: functions.auth.ImportAuthorizationRequest = info.request
        entry = self._export_tokens.get(bytes(req.bytes))
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
        return types.auth.Authorization(user=self._user_tl(uid, uid))

    # ---- contacts / channels --------------------------------------------------------------

    def _contacts_resolve_username(self, info: RequestInfo) -> TLObject:
        req: functions.contacts.ResolveUsernameRequest = info.request
        viewer = self._me(info).user_id
        name = (req.username or "").lstrip("@")
        if not _USERNAME_RE.match(name):
            raise RpcErrorReply(400, "USERNAME_INVALID")
        entry = self._usernames.get(name.lower())
        if entry is None:
            raise RpcErrorReply(400, "USERNAME_NOT_OCCUPIED")
        kind, eid = entry
        if kind == "user":
            return types.contacts.ResolvedPeer(
                peer=types.PeerUser(eid), chats=[], users=[self._user_tl(eid, viewer)]
            )
        ch = self._channels[eid].channel
        return types.contacts.ResolvedPeer(peer=ch.peer(), chats=[ch.to_tl()], users=[])

    def _channels_get_full_channel(self, info: RequestInfo) -> TLObject:
        req: functions.channels.GetFullChannelRequest = info.request
        self._me(info)
        hist = self._channel_of(req.channel)
        ch = hist.channel
        top = hist.top
        return types.messages.ChatFull(
            full_chat=types.ChannelFull(
                id=ch.id,
                about=f"Test {'group' if ch.megagroup else 'channel'} @{ch.username}",
                read_inbox_max_id=top,
                read_outbox_max_id=top,
                unread_count=0,
                chat_photo=types.PhotoEmpty(id=0),
                notify_settings=types.PeerNotifySettings(),
                bot_info=[],
                pts=top,
                participants_count=len(self._accounts) + len(DIRECTORY_USERS),
            ),
            chats=[ch.to_tl()],
            users=[],
        )

    def _channels_get_channels(self, info: RequestInfo) -> TLObject:
        req: functions.channels.GetChannelsRequest = info.request
        self._me(info)
        chats = [self._channel_of(c).channel.to_tl() for c in req.id]
        return types.messages.Chats(chats=chats)

    def _channels_read_history(self, info: RequestInfo) -> TLObject:
        req: functions.channels.ReadHistoryRequest = info.request
        self._me(info)
        self._channel_of(req.channel)
        return TLBool(True)

    def _channels_get_messages(self, info: RequestInfo) -> TLObject:
        req: functions.channels.GetMessagesRequest = info.request
        viewer = self._me(info).user_id
        hist = self._channel_of(req.channel)
        msgs: list[Any] = []
        for im in req.id:
            mid = getattr(im, "id", 0) if isinstance(im, types.InputMessageID) else 0
            if hist.get(mid) is None:
                msgs.append(types.MessageEmpty(id=mid, peer_id=hist.channel.peer()))
            else:
                msgs.append(self._view(hist, mid, viewer))
        return types.messages.ChannelMessages(
            pts=hist.top, count=len(msgs), messages=msgs, topics=[],
            chats=[hist.channel.to_tl()], users=self._users_of(msgs, viewer),
        )

    # ---- messages -------------------------------------------------------------------------

    def _view(self, hist: ChannelHistory, msg_id: int, viewer: int) -> types.Message:
        """Message ``msg_id`` of ``hist`` as ``viewer`` sees it (``out`` for its own)."""
        msg = hist.get(msg_id)
        assert msg is not None
        gen = hist.channel.generated
        if msg_id > gen and hist.senders[msg_id - gen - 1] == viewer:
            mine = thaw_copy(msg)
            mine.out = True
            return mine
        return msg

    def _users_of(self, msgs: list[Any], viewer: int) -> list[types.User]:
        ids: dict[int, None] = {}
        for m in msgs:
            fid = getattr(m, "from_id", None)
            if isinstance(fid, types.PeerUser):
                ids[fid.user_id] = None
            pid = getattr(m, "peer_id", None)
            if isinstance(pid, types.PeerUser):
                ids[pid.user_id] = None
        return [self._user_tl(u, viewer) for u in ids if u in self._users]

    def _messages_get_history(self, info: RequestInfo) -> TLObject:
        req: functions.messages.GetHistoryRequest = info.request
        acc = self._me(info)
        viewer = acc.user_id
        target = self._peer_of(info, req.peer)
        offset_id = req.offset_id
        if isinstance(target, ChannelHistory):
            hist = target
            ids: Any = hist.ids
            if not offset_id and _unix(req.offset_date) > 0:
                offset_id = first_id_before(ids, hist.date_of, _unix(req.offset_date))
            page = history_window(ids, offset_id=offset_id, add_offset=req.add_offset,
                                  limit=req.limit, max_id=req.max_id, min_id=req.min_id)
            msgs: list[Any] = [self._view(hist, i, viewer) for i in page]
            return types.messages.ChannelMessages(
                pts=hist.top, count=hist.top, messages=msgs, topics=[],
                chats=[hist.channel.to_tl()], users=self._users_of(msgs, viewer),
            )
        chat_ids = acc.private.get(target.id, [])
        if not offset_id and _unix(req.offset_date) > 0:
            offset_id = first_id_before(
                chat_ids, lambda i: _unix(acc.messages[i].date), _unix(req.offset_date)
            )
        page = history_window(chat_ids, offset_id=offset_id, add_offset=req.add_offset,
                              limit=req.limit, max_id=req.max_id, min_id=req.min_id)
        msgs = [acc.messages[i] for i in page]
        users = self._users_of(msgs, viewer)
        if viewer not in {u.id for u in users}:
            users.append(self._user_tl(viewer, viewer))
        if len(page) == len(chat_ids):
            return types.messages.Messages(messages=msgs, topics=[], chats=[], users=users)
        return types.messages.MessagesSlice(
            count=len(chat_ids), messages=msgs, topics=[], chats=[], users=users
        )

    def _messages_get_messages(self, info: RequestInfo) -> TLObject:
        req: functions.messages.GetMessagesRequest = info.request
        acc = self._me(info)
        msgs: list[Any] = []
        for im in req.id:
            mid = im.id if isinstance(im, types.InputMessageID) else 0
            m = acc.messages.get(mid)
            msgs.append(m if m is not None else types.MessageEmpty(id=mid, peer_id=None))
        users = self._users_of(msgs, acc.user_id)
        return types.messages.Messages(messages=msgs, topics=[], chats=[], users=users)

    def _check_send(self, info: RequestInfo, text: str, random_id: int | None,
                    media: bool = False) -> AccountState:
        acc = self._me(info)
        if random_id is None:
            raise RpcErrorReply(400, "RANDOM_ID_EMPTY")
        if not media and not text.strip():
            raise RpcErrorReply(400, "MESSAGE_EMPTY")
        if len(text) > MESSAGE_LENGTH_MAX:
            raise RpcErrorReply(400, "MEDIA_CAPTION_TOO_LONG" if media else "MESSAGE_TOO_LONG")
        if random_id in acc.random_ids:
            raise RpcErrorReply(500, "RANDOM_ID_DUPLICATE")
        return acc

    def _messages_send_message(self, info: RequestInfo) -> TLObject:
        req: functions.messages.SendMessageRequest = info.request
        target = self._peer_of(info, req.peer)
        acc = self._check_send(info, req.message or "", req.random_id)
        return self._send(info, acc, target, req.message or "", req.random_id, None,
                          req.entities)

    def _messages_send_media(self, info: RequestInfo) -> TLObject:
        req: functions.messages.SendMediaRequest = info.request
        target = self._peer_of(info, req.peer)
        acc = self._check_send(info, req.message or "", req.random_id, media=True)
        media = self._media_of(req.media)
        return self._send(info, acc, target, req.message or "", req.random_id, media,
                          req.entities)

    def _media_of(self, media: TLObject) -> types.TypeMessageMedia:
        if isinstance(media, types.InputMediaUploadedDocument):
            f = media.file
            parts = getattr(f, "parts", 0)
            size = self.files.uploaded_size(f.id, parts)
            doc = types.Document(
                id=derive(self.config.seed, "uploaded", f.id, bits=62),
                access_hash=access_hash(self.config.seed, "uploaded", f.id),
                file_reference=b"\x01uploaded",
                date=to_datetime(self._now()),
                mime_type=media.mime_type or "application/octet-stream",
                size=size,
                dc_id=self.config.file_dc,
                attributes=list(media.attributes or []),
            )
            return types.MessageMediaDocument(document=doc)
        if isinstance(media, types.InputMediaDocument) and isinstance(
            media.id, types.InputDocument
        ) and media.id.id == self._document.id:
            return types.MessageMediaDocument(document=self._document)
        raise RpcErrorReply(400, "MEDIA_INVALID")

    def _send(
        self,
        info: RequestInfo,
        acc: AccountState,
        target: UserRecord | ChannelHistory,
        text: str,
        random_id: int,
        media: types.TypeMessageMedia | None,
        entities: list[Any] | None,
    ) -> TLObject:
        now = self._now()
        uid = acc.user_id
        if isinstance(target, ChannelHistory):
            ch = target.channel
            if not ch.writable:
                raise RpcErrorReply(403, "CHAT_WRITE_FORBIDDEN")
            date = max(now, target.date_of(target.top)) if target.top else now

            def build(mid: int) -> types.Message:
                return channel_message(ch, mid, date=date, text=text, from_user=uid,
                                       media=media, entities=entities)

            msg = target.append(build)
            target.senders.append(uid)
            acc.random_ids.add(random_id)
            self._sent.append(SentMessage(uid, utils.get_peer_id(ch.peer()), random_id,
                                          msg.id, text, date, media))
            mine = self._view(target, msg.id, uid)
            return types.Updates(
                updates=[
                    types.UpdateMessageID(id=msg.id, random_id=random_id),
                    types.UpdateNewChannelMessage(message=mine, pts=target.top, pts_count=1),
                ],
                users=[self._user_tl(uid, uid)],
                chats=[ch.to_tl()],
                date=to_datetime(date),
                seq=0,
            )
        # private chat: the account's common message id and pts sequences
        mid = acc.next_message_id
        acc.next_message_id += 1
        acc.pts += 1
        msg = types.Message(
            id=mid,
            peer_id=types.PeerUser(target.id),
            date=to_datetime(now),
            message=text,
            out=True,
            from_id=types.PeerUser(uid),
            media=media,
            entities=entities or None,
        )
        acc.messages[mid] = msg
        acc.private.setdefault(target.id, []).append(mid)
        acc.pts_log[acc.pts] = msg
        if len(acc.pts_log) > _PTS_LOG_MAX:
            acc.pts_log.pop(next(iter(acc.pts_log)))
        acc.random_ids.add(random_id)
        self._sent.append(SentMessage(uid, target.id, random_id, mid, text, now, media))
        if media is not None:
            return types.Updates(
                updates=[
                    types.UpdateMessageID(id=mid, random_id=random_id),
                    types.UpdateNewMessage(message=msg, pts=acc.pts, pts_count=1),
                ],
                users=[self._user_tl(uid, uid), self._user_tl(target.id, uid)],
                chats=[],
                date=to_datetime(now),
                seq=0,
            )
        return types.UpdateShortSentMessage(
            id=mid, pts=acc.pts, pts_count=1, date=to_datetime(now), out=True,
            entities=entities or None,
        )

    def _dialogs_of(self, acc: AccountState) -> list[tuple[int, types.Dialog, Any, Any]]:
        """(sort date, Dialog, top message, entity) for every chat of ``acc``, newest first."""
        viewer = acc.user_id
        out: list[tuple[int, types.Dialog, Any, Any]] = []
        for hist in self._channels.values():
            top = hist.top
            if top == 0:
                continue
            msg = self._view(hist, top, viewer)
            out.append((_unix(msg.date), self._dialog(hist.channel.peer(), top, hist.top), msg,
                        hist.channel.to_tl()))
        for peer_id, ids in acc.private.items():
            msg = acc.messages[ids[-1]]
            out.append((_unix(msg.date), self._dialog(types.PeerUser(peer_id), ids[-1], None),
                        msg, self._user_tl(peer_id, viewer)))
        out.sort(key=lambda d: (d[0], utils.get_peer_id(d[1].peer)), reverse=True)
        return out

    @staticmethod
    def _dialog(peer: Any, top: int, pts: int | None) -> types.Dialog:
        return types.Dialog(
            peer=peer, top_message=top, read_inbox_max_id=top, read_outbox_max_id=top,
            unread_count=0, unread_mentions_count=0, unread_reactions_count=0,
            unread_poll_votes_count=0, notify_settings=types.PeerNotifySettings(), pts=pts,
        )

    def _dialogs_result(self, viewer: int, rows: list[tuple[int, types.Dialog, Any, Any]]
                        ) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        dialogs = [r[1] for r in rows]
        msgs = [r[2] for r in rows]
        chats = [r[3] for r in rows if isinstance(r[3], types.Channel)]
        users = {u.id: u for u in self._users_of(msgs, viewer)}
        for r in rows:
            if isinstance(r[3], types.User):
                users[r[3].id] = r[3]
        users.setdefault(viewer, self._user_tl(viewer, viewer))
        return dialogs, msgs, chats, list(users.values())

    def _messages_get_dialogs(self, info: RequestInfo) -> TLObject:
        req: functions.messages.GetDialogsRequest = info.request
        acc = self._me(info)
        rows = [] if req.folder_id else self._dialogs_of(acc)
        total = len(rows)
        if _unix(req.offset_date) > 0:  # a date of 0 (epoch) on the wire means none
            cut = _unix(req.offset_date)
            try:
                offset_peer = utils.get_peer_id(req.offset_peer)
            except (TypeError, ValueError):
                offset_peer = None
            rows = [
                r for r in rows
                if r[0] < cut or (r[0] == cut and offset_peer is not None
                                  and utils.get_peer_id(r[1].peer) < offset_peer)
            ]
        limit = max(0, min(req.limit, HISTORY_PAGE_MAX))
        page = rows[:limit]
        dialogs, msgs, chats, users = self._dialogs_result(acc.user_id, page)
        if len(page) == total:
            return types.messages.Dialogs(dialogs=dialogs, messages=msgs, chats=chats,
                                          users=users)
        return types.messages.DialogsSlice(count=total, dialogs=dialogs, messages=msgs,
                                           chats=chats, users=users)

    def _messages_get_peer_dialogs(self, info: RequestInfo) -> TLObject:
        req: functions.messages.GetPeerDialogsRequest = info.request
        acc = self._me(info)
        wanted: set[int] = set()
        for p in req.peers:
            target = self._peer_of(info, getattr(p, "peer", p))
            wanted.add(target.channel.id if isinstance(target, ChannelHistory) else target.id)
        rows = [r for r in self._dialogs_of(acc)
                if getattr(r[1].peer, "channel_id", getattr(r[1].peer, "user_id", None))
                in wanted]
        dialogs, msgs, chats, users = self._dialogs_result(acc.user_id, rows)
        return types.messages.PeerDialogs(dialogs=dialogs, messages=msgs, chats=chats,
                                          users=users, state=self._state(acc))

    def _messages_read_history(self, info: RequestInfo) -> TLObject:
        req: functions.messages.ReadHistoryRequest = info.request
        acc = self._me(info)
        self._peer_of(info, req.peer)
        return types.messages.AffectedMessages(pts=acc.pts, pts_count=0)

    # ---- files ----------------------------------------------------------------------------

    def _upload_get_file(self, info: RequestInfo) -> TLObject:
        req: functions.upload.GetFileRequest = info.request
        self._me(info)
        loc = req.location
        doc = self._document
        if not isinstance(loc, types.InputDocumentFileLocation) or loc.thumb_size:
            raise RpcErrorReply(400, "LOCATION_INVALID")
        if loc.id != doc.id or loc.access_hash != doc.access_hash:
            raise RpcErrorReply(400, "FILE_ID_INVALID")
        if bytes(loc.file_reference) != doc.file_reference:
            raise RpcErrorReply(400, "FILE_REFERENCE_EXPIRED")
        if info.dc_id != self.config.file_dc:
            raise RpcErrorReply(303, f"FILE_MIGRATE_{self.config.file_dc}")
        FileStore.check_download_window(req.offset, req.limit, bool(req.precise))
        return types.upload.File(
            type=types.storage.FileUnknown(),
            mtime=self.config.history_start,
            bytes=self.files.read(req.offset, req.limit),
        )

    def _upload_save_file_part(self, info: RequestInfo) -> TLObject:
        req: functions.upload.SaveFilePartRequest = info.request
        self._me(info)
        self.files.save_part(req.file_id, req.file_part, bytes(req.bytes))
        return TLBool(True)

    def _upload_save_big_file_part(self, info: RequestInfo) -> TLObject:
        req: functions.upload.SaveBigFilePartRequest = info.request
        self._me(info)
        self.files.save_part(req.file_id, req.file_part, bytes(req.bytes),
                             total_parts=req.file_total_parts)
        return TLBool(True)


def _unix(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    return int(value.timestamp())


def new_auth_state(dc_id: int, user_id: int | None = None, key_id: int = 1) -> AuthState:
    """An :class:`AuthState` for calling :meth:`World.handle` directly (tests, tools)."""
    return AuthState(auth_key_id=key_id, auth_key=b"\0" * 256, dc_id=dc_id, user_id=user_id)
