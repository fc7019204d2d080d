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
  ``chat_history_size`` messages, writable by every account;
* basic group ``group`` (no username: :meth:`World.group_id`), every user a member.

New messages are delivered like Telegram delivers them (:mod:`.world_delivery`): a message sent
to a private chat or a basic group is also stored in every other member account's box, and
every recipient account gets its update through the update sink the server installs
(:meth:`World.set_update_sink`). :meth:`World.post` stores a message from anyone (pushed, or
with ``push=False`` an update gap); ``updates.getDifference`` / ``getChannelDifference``
answer from the same history (:mod:`.world_updates`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import AuthState, DcAddress, RequestInfo, RpcErrorReply
from .world_auth import AuthHandlers
from .world_chats import ChatHandlers
from .world_core import Handler, UpdateSink, WorldCore
from .world_delivery import Delivered, Delivery, Form, Target, UnknownPeerError
from .world_edit import EditHandlers
from .world_files import UploadedPart
from .world_history import HistoryHandlers
from .world_send import SendHandlers
from .world_state import (
    BASIC_GROUPS,
    CHAT_CHANNELS,
    DIRECTORY_USERS,
    MAIN_CHANNEL,
    MESSAGE_LENGTH_MAX,
    SentMessage,
    WorldConfig,
    to_datetime,
)
from .world_tl import TLBool, TLVector
from .world_transfer import TransferHandlers
from .world_updates import UpdateHandlers

__all__ = [
    "BASIC_GROUPS",
    "CHAT_CHANNELS",
    "DIRECTORY_USERS",
    "MAIN_CHANNEL",
    "Delivered",
    "SentMessage",
    "TLBool",
    "TLVector",
    "UnknownPeerError",
    "UploadedPart",
    "World",
    "WorldConfig",
    "new_auth_state",
    "unsupported_error",
]

_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_UNAUTHORIZED_OK = frozenset({"help.getConfig", "help.getNearestDc", "help.getCdnConfig"})


def unsupported_error(method: str) -> str:
    """``METHOD_NOT_SUPPORTED_<METHOD>`` for an unknown method, e.g.
    ``messages.getHistory`` -> ``METHOD_NOT_SUPPORTED_MESSAGES_GET_HISTORY``."""
    ident = re.sub(r"[^A-Za-z0-9]+", "_", _CAMEL_RE.sub("_", method)).strip("_").upper()
    return "METHOD_NOT_SUPPORTED_" + (ident or "UNKNOWN")


class World:
    """The test world: state shared by every DC and connection, and its RPC handlers.

    :meth:`handle` is the only entry point the server uses. Handlers are synchronous and do
    O(limit) work (nothing proportional to the history size). See the module docstring for
    the cast; :attr:`core` holds the tables.
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config if config is not None else WorldConfig()
        if not isinstance(self.config, WorldConfig):
            raise ValueError(f"config must be a WorldConfig, got {type(self.config).__name__}")
        self.core = WorldCore(self.config)
        self.auth = AuthHandlers(self.core)
        self._handlers: dict[type, Handler] = {
            functions.help.GetConfigRequest: self._help_get_config,
            functions.help.GetNearestDcRequest: self._help_get_nearest_dc,
            functions.users.GetUsersRequest: self._users_get_users,
            functions.users.GetFullUserRequest: self._users_get_full_user,
        }
        self.delivery = Delivery(self.core)
        for group in (self.auth, ChatHandlers(self.core), HistoryHandlers(self.core),
                      SendHandlers(self.core), EditHandlers(self.core),
                      TransferHandlers(self.core), UpdateHandlers(self.core)):
            self._handlers.update(group.table())

    # ---- public helpers -------------------------------------------------------------------

    def set_dcs(self, dcs: list[DcAddress]) -> None:
        """Addresses of the server's DCs; ``help.getConfig`` lists exactly these.

        Raises ``ValueError`` for an empty list or duplicate DC ids."""
        if not dcs:
            raise ValueError("set_dcs needs at least one DcAddress")
        ids = [d.dc_id for d in dcs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate DC ids in {ids}")
        self.core.dcs = list(dcs)

    @property
    def dcs(self) -> list[DcAddress]:
        return list(self.core.dcs)

    def register_account(self, user_id: int | None = None) -> int:
        """Create (or reuse) a logged-in account and return its user id.

        ``None`` allocates the next id from ``WorldConfig.first_account_id``; an existing
        user's id (e.g. ``world.user_id("alice")``) makes that user an account. Raises
        ``ValueError`` for an id that is not a positive int below 2**52."""
        return self.core.register_account(user_id)

    def user_id(self, username: str) -> int:
        """Id of directory user ``username`` (``alice``, ``bob``, ``carol``); ``KeyError`` else."""
        return self.core.user_id(username)

    def channel_id(self, username: str) -> int:
        """Bare id of channel ``username`` (``news``, ``chat_a``..``chat_d``); ``KeyError`` else.

        Telethon's marked id is ``-1000000000000 - id``."""
        return self.core.channel_id(username)

    @property
    def main_channel_id(self) -> int:
        """Bare id of ``@news``."""
        return self.core.channel_id(MAIN_CHANNEL)

    @property
    def file_message_id(self) -> int:
        """Id of the ``@news`` message carrying the document (0 if the history is empty)."""
        return self.core.file_message_id

    def file_document(self) -> types.Document:
        """The ``types.Document`` of the downloadable file (``dc_id = config.file_dc``)."""
        return self.core.document

    def file_bytes(self) -> bytes:
        """The complete content of the downloadable file (``config.file_size`` bytes)."""
        return self.core.files.whole()

    def uploaded_parts(self, file_id: int) -> dict[int, UploadedPart]:
        """Parts stored by ``upload.save(Big)FilePart`` for ``file_id``: index -> size, sha256."""
        return self.core.files.parts(file_id)

    def sent_messages(
        self, account: int | None = None, peer: int | None = None
    ) -> list[SentMessage]:
        """Messages stored by ``messages.sendMessage`` / ``sendMedia``, oldest first.

        ``account`` filters by sender user id, ``peer`` by Telethon's marked peer id
        (``utils.get_peer_id``: a user id, or ``-100...`` for channels)."""
        return [
            s for s in self.core.sent
            if (account is None or s.account == account) and (peer is None or s.peer == peer)
        ]

    def channel_top_id(self, username: str) -> int:
        """Newest message id (= the channel's pts) of channel ``username``."""
        return self.core.channels[self.core.channel_id(username)].top

    def group_id(self, name: str) -> int:
        """Id of basic group ``name`` (``group``); ``KeyError`` else. Telethon reaches it as
        ``types.PeerChat(id)`` (marked id ``-id``)."""
        return self.core.group_id(name)

    def account_pts(self, user_id: int) -> int:
        """Current pts of account ``user_id``'s common box; ``KeyError`` if not an account."""
        return self.core.accounts[user_id].pts

    # ---- updates ----------------------------------------------------------------------------

    def set_update_sink(self, sink: UpdateSink | None,
                        listeners: Callable[[], set[int]] | None = None) -> None:
        """Install ``sink(user_id, updates, exclude_auth_key_id) -> connections reached``, the
        way new-message updates leave the world (the server installs its own on start);
        ``None``: updates are not pushed (the messages are still stored with their pts).
        ``listeners()``, if given, returns the accounts that can receive updates now: updates
        are built only for those (default: every account)."""
        self.core.update_sink = sink
        self.core.update_listeners = listeners

    def resolve_peer(self, peer: str | int) -> Target:
        """The user, channel or basic group ``peer`` names: a username (``"alice"``,
        ``"@news"``), a basic group name (``"group"``), a user id, or Telethon's marked id of
        a channel (``-100...``) or group (``-id``).

        Raises:
            UnknownPeerError: (a ``ValueError``) nothing of this world has that name or id.
        """
        return self.delivery.resolve_peer(peer)

    def post(self, from_user: str | int | None, to_peer: str | int, text: str, *,
             push: bool = True, form: Form = "short") -> Delivered:
        """Store a new message ``from_user`` wrote in ``to_peer`` and deliver it.

        ``to_peer``: a user (a private chat: the message goes to that user's box if it is an
        account, and to ``from_user``'s box, as outgoing, if that is an account), the basic
        group, or a channel (``from_user`` may be ``None`` there: a post without author).
        ``push=False`` stores it and takes its pts without pushing: an update gap.
        ``form``: ``"short"`` sends ``updateShortMessage`` / ``updateShortChatMessage`` to the
        common boxes, ``"full"`` sends ``updates`` with ``updateNewMessage`` (channels always
        get ``updates`` with ``updateNewChannelMessage``).

        Raises:
            UnknownPeerError: ``from_user`` or ``to_peer`` is not of this world.
            ValueError: empty or too long ``text`` (over 4096 characters), a bad ``form``, no
                ``from_user`` for a private chat or group, a message to oneself, or no
                account involved (nobody has a box that would hold it).
        """
        return self.delivery.post(from_user, to_peer, text, push=push, form=form)

    # ---- entry point ----------------------------------------------------------------------

    async def handle(self, info: RequestInfo) -> TLObject:
        """Execute ``info.request``; return its TL result or raise :class:`RpcErrorReply`.

        Unauthorized keys (``info.auth.user_id is None``) may only call ``help.getConfig``,
        ``help.getNearestDc``, ``help.getCdnConfig`` and ``auth.*`` except
        ``auth.exportAuthorization``; anything else answers ``401 AUTH_KEY_UNREGISTERED`` like
        Telegram. Unknown methods answer ``400 METHOD_NOT_SUPPORTED_<METHOD>``.
        """
        return self.handle_sync(info)

    def handle_sync(self, info: RequestInfo) -> TLObject:
        """:meth:`handle` without the coroutine (no handler awaits anything)."""
        if info.auth.user_id is None and not self._allowed_unauthorized(info.method):
            raise RpcErrorReply(401, "AUTH_KEY_UNREGISTERED")
        handler = self._handlers.get(type(info.request))
        if handler is None:
            raise RpcErrorReply(400, unsupported_error(info.method))
        return handler(info)

    @staticmethod
    def _allowed_unauthorized(method: str) -> bool:
        if method in _UNAUTHORIZED_OK:
            return True
        return method.startswith("auth.") and method != "auth.exportAuthorization"

    # ---- help / users / updates.getState --------------------------------------------------

    def _help_get_config(self, info: RequestInfo) -> TLObject:
        now = self.core.now()
        dcs = self.core.dcs or [DcAddress(info.dc_id, "127.0.0.1", 443)]
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
        viewer = self.core.me(info).user_id
        out: list[Any] = []
        for u in req.id:
            rec = self.core.user_of(info, u)
            if rec is not None:
                out.append(rec.to_tl(viewer))
        return TLVector(out)

    def _users_get_full_user(self, info: RequestInfo) -> TLObject:
        req: functions.users.GetFullUserRequest = info.request
        viewer = self.core.me(info).user_id
        rec = self.core.user_of(info, req.id)
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


def new_auth_state(dc_id: int, user_id: int | None = None, key_id: int = 1) -> AuthState:
    """An :class:`AuthState` for calling :meth:`World.handle` directly (tests, tools)."""
    return AuthState(auth_key_id=key_id, auth_key=b"\0" * 256, dc_id=dc_id, user_id=user_id)
