"""Shared state of the test world and the helpers every handler group uses.

:class:`WorldCore` holds the tables (users, channels, accounts, what was sent, the file) and
resolves Telethon's input objects against them, raising Telegram's errors for unknown or
forged ones. Handler groups (``world_auth``, ``world_chats``, ``world_history``, ``world_send``,
``world_transfer``) keep a reference to one core; :class:`~.world.World` wires them together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telethon.tl import types
from telethon.tl.tlobject import TLObject

from ._types import DcAddress, RequestInfo, RpcErrorReply
from .world_files import FileStore
from .world_messages import ChannelHistory, channel_message, thaw_copy
from .world_state import (
    BASIC_GROUPS,
    CHAT_CHANNELS,
    DIRECTORY_USERS,
    MAIN_CHANNEL,
    AccountState,
    ChannelRecord,
    ChatRecord,
    SentMessage,
    UserRecord,
    WorldConfig,
    access_hash,
    derive,
    to_datetime,
    username_id,
)

Handler = Callable[[RequestInfo], TLObject]
UpdateSink = Callable[[int, TLObject, "int | None"], int]
"""``sink(user_id, updates, exclude_auth_key_id) -> connections written to``: installed by the
server (:meth:`WorldCore.push`)."""


class WorldCore:
    """Tables of the world and lookups shared by all handler groups (one per World)."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        cfg = config
        self.dcs: list[DcAddress] = []
        self.users: dict[int, UserRecord] = {}
        self.usernames: dict[str, tuple[str, int]] = {}
        self.channels: dict[int, ChannelHistory] = {}
        self.groups: dict[int, ChatRecord] = {}
        self.group_names: dict[str, int] = {}
        self.update_sink: UpdateSink | None = None
        self.update_listeners: Callable[[], set[int]] | None = None
        self.accounts: dict[int, AccountState] = {}
        self.sent: list[SentMessage] = []
        self._next_account_id = cfg.first_account_id
        self._counter = 0
        self.files = FileStore(cfg.seed, cfg.file_size)
        self.document = types.Document(
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
            self.users[uid] = UserRecord(
                id=uid,
                access_hash=access_hash(cfg.seed, "user", uid),
                first_name=name.capitalize(),
                username=name,
            )
            self.usernames[name] = ("user", uid)
        self._add_channel(MAIN_CHANNEL, "News", megagroup=False, generated=cfg.history_size,
                          writable=False)
        for name in CHAT_CHANNELS:
            self._add_channel(name, name.replace("_", " ").title(),
                              megagroup=name != "chat_d", generated=cfg.chat_history_size,
                              writable=True)

        for name in BASIC_GROUPS:
            gid = username_id(cfg.seed, "group", name)
            self.groups[gid] = ChatRecord(id=gid, title=name.replace("_", " ").title(),
                                          created=cfg.history_start - 86_400)
            self.group_names[name] = gid

    def push(self, user_id: int, updates: TLObject, exclude_key: int | None = None) -> int:
        """Hand ``updates`` for account ``user_id`` to the server's update sink (every
        connection receiving updates for that account, except auth key ``exclude_key``);
        returns the connections written to (0 without a server)."""
        sink = self.update_sink
        return 0 if sink is None else sink(user_id, updates, exclude_key)

    def listeners(self) -> set[int]:
        """Accounts that can receive pushed updates now (every account without a listener
        function; nothing is built for the others)."""
        if self.update_sink is None:
            return set()
        fn = self.update_listeners
        return set(self.accounts) if fn is None else fn()

    def group_id(self, name: str) -> int:
        """Id of basic group ``name`` (``group``); ``KeyError`` else."""
        return self.group_names[name.lower().lstrip("@")]

    def register_account(self, user_id: int | None = None) -> int:
        """Create (or reuse) a logged-in account and return its user id.

        ``user_id`` None allocates the next id from ``WorldConfig.first_account_id``; an
        existing user's id (e.g. ``world.user_id("alice")``) makes that user an account.
        Raises ``ValueError`` for a non-positive id.
        """
        if user_id is None:
            while self._next_account_id in self.users:
                self._next_account_id += 1
            user_id = self._next_account_id
            self._next_account_id += 1
        if not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id < 2**52:
            raise ValueError(f"user_id must be a positive int below 2**52, got {user_id!r}")
        if user_id not in self.users:
            n = user_id - self.config.first_account_id + 1
            self.users[user_id] = UserRecord(
                id=user_id,
                access_hash=access_hash(self.config.seed, "user", user_id),
                first_name="Test",
                last_name=f"Account {n}" if n > 0 else str(user_id),
                phone=f"999{user_id % 10**7:07d}",
            )
        self.account(user_id)
        return user_id

    def user_id(self, username: str) -> int:
        """Id of directory user ``username`` (``alice``, ``bob``, ``carol``); ``KeyError`` else."""
        return self._directory_id(username, "user")

    def channel_id(self, username: str) -> int:
        """Bare id of channel ``username`` (``news``, ``chat_a``..``chat_d``); ``KeyError`` else.

        Telethon's marked id is ``-1000000000000 - id``."""
        return self._directory_id(username, "channel")

    def _directory_id(self, username: str, kind: str) -> int:
        """Id of ``username`` if it names a ``kind`` ("user" / "channel"); a ``KeyError`` that
        lists the known names of that kind otherwise."""
        if not isinstance(username, str):
            raise TypeError(f"username must be a str, got {type(username).__name__}")
        found = self.usernames.get(username.lower().lstrip("@"))
        if found is None or found[0] != kind:
            known = ", ".join(sorted(n for n, (k, _) in self.usernames.items() if k == kind))
            raise KeyError(f"no {kind} named {username!r} in the test world (known: {known})")
        return found[1]

    @property
    def file_message_id(self) -> int:
        """Id of the ``@news`` message carrying the document (0 if the history is empty)."""
        return self.config.file_message_id if self.config.history_size > 0 else 0

    def members(self) -> list[UserRecord]:
        """Members of every channel: directory users and accounts (bots too), by user id."""
        return [u for u in sorted(self.users.values(), key=lambda u: u.id)
                if not u.bot or u.id in self.accounts]

    def now(self) -> int:
        """Wall-clock Unix seconds (``config.clock``) for ``date`` fields."""
        return int(self.config.clock())

    def account(self, user_id: int) -> AccountState:
        """Counters of account ``user_id`` (created on first use)."""
        acc = self.accounts.get(user_id)
        if acc is None:
            acc = self.accounts[user_id] = AccountState(user_id=user_id)
        return acc

    def me(self, info: RequestInfo) -> AccountState:
        """The calling account; ``401 AUTH_KEY_UNREGISTERED`` when the key is not logged in."""
        uid = info.auth.user_id
        if uid is None:  # guarded by handle(); kept for direct callers
            raise RpcErrorReply(401, "AUTH_KEY_UNREGISTERED")
        if uid not in self.users:
            self.register_account(uid)
        return self.account(uid)

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
        self.channels[cid] = ChannelHistory(rec, self._generate_message)
        self.usernames[username] = ("channel", cid)

    def _generate_message(self, channel: ChannelRecord, msg_id: int) -> types.Message:
        cfg = self.config
        media = None
        if channel.username == MAIN_CHANNEL and msg_id == self.file_message_id:
            media = types.MessageMediaDocument(document=self.document)
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

    def user_tl(self, uid: int, viewer: int | None) -> types.User:
        """``types.User`` of ``uid`` as ``viewer`` sees it; ``KeyError`` if unknown."""
        return self.users[uid].to_tl(viewer)

    def peer_of(self, info: RequestInfo, peer: TLObject
                ) -> UserRecord | ChannelHistory | ChatRecord:
        """Resolve an InputPeer; ``400 PEER_ID_INVALID`` / ``CHANNEL_INVALID`` /
        ``CHAT_ID_INVALID`` when unknown."""
        if isinstance(peer, types.InputPeerChat):
            group = self.groups.get(peer.chat_id)
            if group is None:
                raise RpcErrorReply(400, "CHAT_ID_INVALID")
            return group
        if isinstance(peer, types.InputPeerSelf):
            return self.users[self.me(info).user_id]
        if isinstance(peer, types.InputPeerUser):
            user = self.users.get(peer.user_id)
            if user is None or user.access_hash != peer.access_hash:
                raise RpcErrorReply(400, "PEER_ID_INVALID")
            return user
        if isinstance(peer, types.InputPeerChannel):
            return self.channel_of(types.InputChannel(peer.channel_id, peer.access_hash))
        if isinstance(peer, types.InputPeerUserFromMessage):
            user = self.users.get(peer.user_id)
            if user is None:
                raise RpcErrorReply(400, "PEER_ID_INVALID")
            return user
        if isinstance(peer, types.InputPeerChannelFromMessage):
            hist = self.channels.get(peer.channel_id)
            if hist is None:
                raise RpcErrorReply(400, "CHANNEL_INVALID")
            return hist
        raise RpcErrorReply(400, "PEER_ID_INVALID")

    def channel_of(self, channel: TLObject) -> ChannelHistory:
        """Resolve an InputChannel; ``400 CHANNEL_INVALID`` if unknown or the hash is wrong."""
        if isinstance(channel, types.InputPeerChannel):
            channel = types.InputChannel(channel.channel_id, channel.access_hash)
        if isinstance(channel, types.InputChannel):
            hist = self.channels.get(channel.channel_id)
            if hist is not None and hist.channel.access_hash == channel.access_hash:
                return hist
        elif isinstance(channel, types.InputChannelFromMessage):
            hist = self.channels.get(channel.channel_id)
            if hist is not None:
                return hist
        raise RpcErrorReply(400, "CHANNEL_INVALID")

    def user_of(self, info: RequestInfo, user: TLObject) -> UserRecord | None:
        """Resolve an InputUser; ``None`` if unknown or the access hash is wrong."""
        if isinstance(user, types.InputUserSelf):
            return self.users[self.me(info).user_id]
        if isinstance(user, types.InputUser):
            rec = self.users.get(user.user_id)
            if rec is not None and rec.access_hash == user.access_hash:
                return rec
        elif isinstance(user, types.InputUserFromMessage):
            return self.users.get(user.user_id)
        return None

    def state_of(self, acc: AccountState) -> types.updates.State:
        """``updates.State`` of ``acc`` (its common pts; qts and seq are always 0)."""
        return types.updates.State(
            pts=acc.pts, qts=0, date=to_datetime(self.now()), seq=0, unread_count=0
        )

    def token(self, kind: str, size: int) -> bytes:
        """``size`` fresh bytes, deterministic given the seed and the call order."""
        self._counter += 1
        out = b""
        i = 0
        while len(out) < size:
            out += derive(self.config.seed, kind, self._counter, i).to_bytes(8, "big")
            i += 1
        return out[:size]

    def view(self, hist: ChannelHistory, msg_id: int, viewer: int) -> types.Message:
        """Message ``msg_id`` of ``hist`` as ``viewer`` sees it (``out`` for its own)."""
        msg = hist.get(msg_id)
        assert msg is not None
        if hist.sender_of(msg_id) == viewer:
            mine = thaw_copy(msg)
            mine.out = True
            return mine
        return msg

    def users_of(self, msgs: list[Any], viewer: int) -> list[types.User]:
        """Users referenced by ``msgs`` (authors and private-chat peers), for result lists."""
        ids: dict[int, None] = {}
        for m in msgs:
            fid = getattr(m, "from_id", None)
            if isinstance(fid, types.PeerUser):
                ids[fid.user_id] = None
            pid = getattr(m, "peer_id", None)
            if isinstance(pid, types.PeerUser):
                ids[pid.user_id] = None
        return [self.user_tl(u, viewer) for u in ids if u in self.users]
