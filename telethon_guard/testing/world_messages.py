"""Message histories of the test world and Telegram's ``messages.getHistory`` pagination.

A channel's history is ids ``1..top`` without gaps: ``generated`` messages built on demand
(cheap, cached in a bounded dict) followed by the messages accounts sent. A private chat's
history is the sorted list of ids that account used in it. Both are served by
:func:`history_window`, which does O(log n + limit) work per call.
"""

from __future__ import annotations

import bisect
import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence

from telethon.tl import types

from .world_state import HISTORY_PAGE_MAX, ChannelRecord, SentMessage, to_datetime

_CACHE_MAX = 2_000  # built messages kept per channel (about 2.5 KB each)


def history_window(
    ids: Sequence[int],
    *,
    offset_id: int,
    add_offset: int,
    limit: int,
    max_id: int,
    min_id: int,
) -> list[int]:
    """Ids one ``messages.getHistory`` call returns, newest first.

    ``ids`` is ascending. Semantics (Telegram's, see core.telegram.org/api/offsets):
    ``min_id``/``max_id`` (when > 0) keep only ``min_id < id < max_id``; within that, the
    window starts at the first message older than ``offset_id`` (the newest one when
    ``offset_id`` is 0), moved by ``add_offset`` (negative = towards newer messages), and holds
    at most ``limit`` messages (capped at 100; a window reaching past the newest message is cut,
    as Telegram does, so ``add_offset=-limit`` walks forward). ``limit <= 0`` returns nothing.
    """
    limit = min(limit, HISTORY_PAGE_MAX)
    if limit <= 0:
        return []
    lo = bisect.bisect_right(ids, min_id) if min_id > 0 else 0
    hi = bisect.bisect_left(ids, max_id) if max_id > 0 else len(ids)
    n = hi - lo
    if n <= 0:
        return []
    if offset_id > 0:
        # descending index of the first message with id < offset_id
        cut = min(hi, max(lo, bisect.bisect_left(ids, offset_id)))
        start = hi - cut
    else:
        start = 0
    start += add_offset
    end = start + limit
    start = max(start, 0)
    end = min(end, n)
    if end <= start:
        return []
    # descending position k maps to ascending index hi - 1 - k
    return [ids[hi - 1 - k] for k in range(start, end)]


def first_id_before(ids: Sequence[int], date_of: Callable[[int], int], offset_date: int) -> int:
    """Smallest id that is not older than ``offset_date`` (an ``offset_id`` equivalent).

    ``date_of`` must be non-decreasing along ``ids``; returns ``ids[-1] + 1`` when every message
    is older, ``ids[0]`` (or 1) when none is.
    """
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if date_of(ids[mid]) < offset_date:
            lo = mid + 1
        else:
            hi = mid
    if lo >= len(ids):
        return (ids[-1] + 1) if ids else 1
    return ids[lo]


class ChannelHistory:
    """Messages of one channel: ids ``1..generated`` built on demand, then sent ones.

    Sent messages are kept as :class:`SentMessage` records; TL messages are built when read
    and cached (bounded LRU, serialized bytes included, see :func:`freeze`).
    """

    __slots__ = ("_cache", "_make", "appended", "channel")

    def __init__(
        self, channel: ChannelRecord, make: Callable[[ChannelRecord, int], types.Message]
    ) -> None:
        self.channel = channel
        self._make = make
        self._cache: OrderedDict[int, types.Message] = OrderedDict()
        self.appended: list[SentMessage] = []

    @property
    def top(self) -> int:
        """Newest message id (also the channel's pts: one pts per new message)."""
        return self.channel.generated + len(self.appended)

    @property
    def ids(self) -> range:
        return range(1, self.top + 1)

    def sender_of(self, msg_id: int) -> int | None:
        """Account that sent message ``msg_id`` (``None`` for generated messages)."""
        k = msg_id - self.channel.generated - 1
        return self.appended[k].account if 0 <= k < len(self.appended) else None

    def get(self, msg_id: int) -> types.Message | None:
        """Message ``msg_id`` as stored (read-only; ``out`` unset), or ``None``."""
        if msg_id <= 0 or msg_id > self.top:
            return None
        msg = self._cache.get(msg_id)
        if msg is not None:
            self._cache.move_to_end(msg_id)
            return msg
        gen = self.channel.generated
        if msg_id > gen:
            sent = self.appended[msg_id - gen - 1]
            msg = channel_message(self.channel, msg_id, date=sent.date, text=sent.text,
                                  from_user=sent.account, media=sent.media,
                                  entities=sent.entities)
            msg.fwd_from = sent.fwd_from
        else:
            msg = self._make(self.channel, msg_id)
        freeze(msg)
        self._cache[msg_id] = msg
        if len(self._cache) > _CACHE_MAX:
            self._cache.popitem(last=False)
        return msg

    def forget(self, msg_id: int) -> None:
        """Drop the cached TL form of ``msg_id`` (its stored record changed: an edit)."""
        self._cache.pop(msg_id, None)

    def date_of(self, msg_id: int) -> int:
        """Unix date of message ``msg_id`` (which must exist)."""
        gen = self.channel.generated
        if msg_id > gen:
            return self.appended[msg_id - gen - 1].date
        msg = self.get(msg_id)
        assert msg is not None and msg.date is not None
        return int(msg.date.timestamp())

    def append(self, sent: SentMessage) -> None:
        """Store ``sent`` as the next message (``sent.message_id`` must be ``top + 1``)."""
        if sent.message_id != self.top + 1:
            raise ValueError(f"message id {sent.message_id} is not {self.top + 1}")
        self.appended.append(sent)


def box_peer(marked_id: int) -> types.PeerUser | types.PeerChat:
    """The peer of a common-box chat from its marked id (users > 0, basic groups < 0)."""
    return types.PeerUser(marked_id) if marked_id > 0 else types.PeerChat(-marked_id)


def private_message(sent: SentMessage) -> types.Message:
    """A common-box message (private chat or basic group) as the box's account sees it:
    ``out`` for what it sent, ``from_id`` the sender."""
    return types.Message(
        id=sent.message_id, peer_id=box_peer(sent.peer), date=to_datetime(sent.date),
        message=sent.text, out=not sent.incoming or None, from_id=types.PeerUser(sent.account),
        fwd_from=sent.fwd_from, media=sent.media, entities=sent.entities or None,
    )


def freeze(msg: types.Message) -> types.Message:
    """Serialize ``msg`` once and make later serializations return those bytes.

    Telethon's serializer costs about 10 us per message; history pages repeat the same
    messages, so stored messages carry their bytes. Stored messages are read-only: use
    :func:`thaw_copy` to change one.
    """
    data = msg._bytes()
    msg.__dict__["_bytes"] = lambda: data
    return msg


def thaw_copy(msg: types.Message) -> types.Message:
    """A shallow copy of a stored message that serializes its own (possibly changed) fields."""
    dup = copy.copy(msg)
    dup.__dict__.pop("_bytes", None)
    return dup


def channel_message(
    channel: ChannelRecord,
    msg_id: int,
    *,
    date: int,
    text: str,
    from_user: int | None,
    media: types.TypeMessageMedia | None = None,
    out: bool = False,
    entities: list[types.TypeMessageEntity] | None = None,
) -> types.Message:
    """A message in ``channel`` as Telegram sends it (``post`` in broadcasts)."""
    return types.Message(
        id=msg_id,
        peer_id=types.PeerChannel(channel.id),
        date=to_datetime(date),
        message=text,
        out=out or None,
        post=(not channel.megagroup) or None,
        from_id=types.PeerUser(from_user) if (channel.megagroup and from_user) else None,
        media=media,
        entities=entities or None,
        views=1 if not channel.megagroup else None,
        forwards=0 if not channel.megagroup else None,
    )
