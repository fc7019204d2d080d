"""Configuration and the cast of the test world: accounts, directory users and channels.

Everything here is deterministic given :attr:`WorldConfig.seed`: ids, access hashes and the
generated history do not change between runs, so a test can hard-code what it expects.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from telethon.tl import types

# Telegram's own numbers (help.getConfig on the production DCs, layer 2xx).
MESSAGE_LENGTH_MAX = 4096
"""Longest text ``messages.sendMessage`` accepts (``config.message_length_max``)."""
HISTORY_PAGE_MAX = 100
"""``messages.getHistory`` never returns more than 100 messages per call."""

DIRECTORY_USERS: tuple[str, ...] = ("alice", "bob", "carol")
"""Usernames of the users every account can resolve (not logged in anywhere by default)."""
MAIN_CHANNEL = "news"
"""Username of the broadcast channel holding ``history_size`` messages and the file."""
CHAT_CHANNELS: tuple[str, ...] = ("chat_a", "chat_b", "chat_c", "chat_d")
"""Usernames of the chats accounts can write to: ``chat_a``..``chat_c`` are megagroups,
``chat_d`` a broadcast channel every account administers (its posts have ``post=True``)."""
BASIC_GROUPS: tuple[str, ...] = ("group",)
"""Names of the basic (small) groups: every user and account is a member. Basic groups have no
username in Telegram: clients reach them by id (``World.group_id("group")``, Telethon's
``types.PeerChat(id)`` or marked id ``-id``). Their messages live in each member account's
common box (account pts), like private chats."""

_PHONE_RE = re.compile(r"^\+?[0-9]{5,15}$")


@dataclass
class WorldConfig:
    """Settings of the test world; validated at construction (``ValueError`` on bad values).

    Attributes:
        history_size: messages in the main channel ``@news`` (ids ``1..history_size``).
        file_size: bytes of the deterministic downloadable file (``World.file_bytes()``).
        file_dc: DC id storing the file; ``upload.getFile`` elsewhere answers
            ``303 FILE_MIGRATE_<file_dc>`` (like Telegram for a document on another DC).
        file_message_id: id of the ``@news`` message carrying the file as a document
            (ignored when ``history_size`` is 0).
        login_code: the code ``auth.signIn`` accepts after ``auth.sendCode``.
        chat_history_size: generated messages already present in each ``chat_*`` channel.
        seed: seeds ids' access hashes, file bytes and exported-authorization tokens.
        history_start: Unix time (seconds) of message 1; message ``k`` is dated
            ``history_start + (k - 1) * history_step``.
        history_step: seconds between two generated messages (> 0).
        first_account_id: user id given to the first account created without an explicit id.
        clock: wall clock (Unix seconds) for ``date`` fields of new objects.
        difference_limit: most messages one ``updates.getDifference`` returns; more pending
            give ``updates.differenceSlice`` (with ``intermediate_state``) and the client asks
            again. Telegram's own page size is not documented; 100 keeps slices easy to test.
        pts_kept: account-box events (pts) kept per account for ``updates.getDifference``; a
            client further behind (or behind by more than the request's ``pts_total_limit``)
            gets ``updates.differenceTooLong`` (core.telegram.org/method/updates.getDifference).
        channel_difference_page: most messages one ``updates.getChannelDifference`` returns
            before answering ``final=False`` (the client asks again from the returned pts).
            A client behind by more than the request's ``limit`` gets
            ``updates.channelDifferenceTooLong``, as Telegram documents.
        channel_difference_timeout: the ``timeout`` (seconds) of channel differences: how long
            the client may wait before asking again without an update.
    """

    history_size: int = 5000
    file_size: int = 256 * 1024
    file_dc: int = 2
    file_message_id: int = 1
    login_code: str = "12345"
    chat_history_size: int = 10
    seed: int = 0
    history_start: int = 1_600_000_000
    history_step: int = 60
    first_account_id: int = 500_000_001
    clock: Callable[[], float] = field(default=time.time, repr=False)
    difference_limit: int = 100
    pts_kept: int = 1000
    channel_difference_page: int = 100
    channel_difference_timeout: int = 30

    def __post_init__(self) -> None:
        _check_int("history_size", self.history_size, 0, 100_000_000)
        # 4000 parts of 512 KiB is the largest file Telegram accepts (about 2000 MiB).
        _check_int("file_size", self.file_size, 1, 4000 * 512 * 1024)
        _check_int("file_dc", self.file_dc, 1, 1000)
        if self.history_size > 0:
            _check_int("file_message_id", self.file_message_id, 1, self.history_size)
        if not (isinstance(self.login_code, str) and self.login_code.isdigit()
                and 1 <= len(self.login_code) <= 10):
            raise ValueError(f"login_code must be 1..10 decimal digits, got {self.login_code!r}")
        _check_int("chat_history_size", self.chat_history_size, 0, 1_000_000)
        _check_int("seed", self.seed, -(2**63), 2**63 - 1)
        _check_int("history_start", self.history_start, 0, 2**31 - 1)
        _check_int("history_step", self.history_step, 1, 86_400)
        if self.history_start + self.history_size * self.history_step >= 2**31:
            raise ValueError("history_start + history_size * history_step overflows int32 dates")
        _check_int("first_account_id", self.first_account_id, 1, 2**40)
        if not callable(self.clock):
            raise ValueError("clock must be a callable returning Unix seconds")
        _check_int("difference_limit", self.difference_limit, 1, 100_000)
        _check_int("pts_kept", self.pts_kept, 1, 1_000_000)
        _check_int("channel_difference_page", self.channel_difference_page, 1, 100_000)
        _check_int("channel_difference_timeout", self.channel_difference_timeout, 1, 86_400)


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


def derive(seed: int, *parts: object, bits: int = 64) -> int:
    """Deterministic non-negative integer of ``bits`` bits from ``seed`` and ``parts``."""
    h = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") >> (64 - bits)


def access_hash(seed: int, kind: str, entity_id: int) -> int:
    """Signed 64-bit access hash of an entity (one value for every viewer, unlike Telegram)."""
    value = derive(seed, "access_hash", kind, entity_id)
    return value - 2**64 if value >= 2**63 else value


def username_id(seed: int, kind: str, name: str) -> int:
    """Deterministic id for a directory user (``1e8..2e8``) or channel (``1e9..2e9``)."""
    base = 100_000_000 if kind == "user" else 1_000_000_000
    span = 100_000_000 if kind == "user" else 1_000_000_000
    return base + derive(seed, "id", kind, name) % span


def to_datetime(unix: float) -> datetime:
    return datetime.fromtimestamp(int(unix), tz=timezone.utc)


def unix_time(value: object) -> int:
    """Unix seconds of a TL date (``datetime``, number or ``None``; ``None`` is 0)."""
    if value is None:
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, datetime):
        return int(value.timestamp())
    raise TypeError(f"not a date: {value!r}")


def valid_phone(phone: str) -> bool:
    return bool(_PHONE_RE.match(phone))


@dataclass
class UserRecord:
    """A user of the world (a directory user, a logged-in account or a bot)."""

    id: int
    access_hash: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    phone: str | None = None
    bot: bool = False

    def to_tl(self, viewer: int | None) -> types.User:
        """The ``types.User`` as ``viewer`` sees it (``is_self`` when it is the viewer)."""
        is_self = viewer == self.id
        return types.User(
            id=self.id,
            is_self=is_self or None,
            bot=self.bot or None,
            bot_nochats=None,
            access_hash=self.access_hash,
            first_name=self.first_name,
            last_name=self.last_name,
            username=self.username,
            phone=self.phone if is_self else None,
            status=types.UserStatusRecently() if not self.bot else None,
            bot_info_version=1 if self.bot else None,
        )


@dataclass
class ChannelRecord:
    """A channel or megagroup: generated messages ``1..generated`` then sent ones."""

    id: int
    access_hash: int
    title: str
    username: str
    megagroup: bool
    generated: int
    writable: bool
    created: int  # Unix time

    def to_tl(self) -> types.Channel:
        return types.Channel(
            id=self.id,
            title=self.title,
            photo=types.ChatPhotoEmpty(),
            date=to_datetime(self.created),
            broadcast=not self.megagroup or None,
            megagroup=self.megagroup or None,
            access_hash=self.access_hash,
            username=self.username,
            participants_count=None,
            admin_rights=types.ChatAdminRights(post_messages=True) if (
                self.writable and not self.megagroup) else None,
        )

    def peer(self) -> types.PeerChannel:
        return types.PeerChannel(self.id)


@dataclass
class ChatRecord:
    """A basic group: every user is a member; its messages live in the accounts' boxes."""

    id: int
    title: str
    created: int  # Unix time

    def to_tl(self, members: int) -> types.Chat:
        return types.Chat(id=self.id, title=self.title, photo=types.ChatPhotoEmpty(),
                          participants_count=members, date=to_datetime(self.created), version=1)

    def peer(self) -> types.PeerChat:
        return types.PeerChat(self.id)

    @property
    def marked_id(self) -> int:
        """Telethon's marked id of the group (``-id``), the key of its box entries."""
        return -self.id


@dataclass(slots=True)
class SentMessage:
    """What an account sent (``World.sent_messages()``), also the stored form of the message.

    ``peer`` is Telethon's marked id of the chat (a user id, ``-id`` for basic groups, or
    ``-100...`` for channels); ``date`` is Unix seconds. ``incoming`` marks a copy received by
    the account whose box holds it (``account`` is then the sender, ``out`` is unset). Kept
    compact (no TL message object) so memory stays small under long send benchmarks; messages
    are rebuilt from it on demand.
    """

    account: int
    peer: int
    random_id: int
    message_id: int
    text: str
    date: int
    media: types.TypeMessageMedia | None = None
    entities: list[types.TypeMessageEntity] | None = None
    fwd_from: types.MessageFwdHeader | None = None
    incoming: bool = False


@dataclass
class AccountState:
    """Per-account counters: the common box (private chats and basic groups share one message
    id space and one pts; one pts per new message)."""

    user_id: int
    pts: int = 1
    next_message_id: int = 1
    random_ids: set[int] = field(default_factory=set)
    # pts -> box message id, for updates.getDifference (bounded by WorldConfig.pts_kept)
    pts_log: dict[int, int] = field(default_factory=dict)
    # chats of the box: marked peer id (user id, -group id) -> ascending message ids;
    # message id -> the message (sent or received)
    private: dict[int, list[int]] = field(default_factory=dict)
    messages: dict[int, SentMessage] = field(default_factory=dict)
