"""Delivering new messages: the recipients' copies, their pts, and the updates pushed to them.

Telegram keeps two kinds of message boxes (core.telegram.org/api/updates): each account's
*common box* holds its private chats and basic groups (one message id space and one ``pts``,
one pts per new message), and each channel or megagroup has its own box (the channel's
``pts``, here equal to its newest message id). A message sent into a private chat or a basic
group is stored once per member account (each with its own id and pts); a channel message is
stored once.

After storing, the world hands every recipient account its update through the *update sink*
the server installs (:meth:`WorldCore.push`): ``updateShortMessage`` /
``updateShortChatMessage`` for a text message in the common box (``form="short"``, what
Telegram sends when the message fits), else ``updates`` holding ``updateNewMessage`` or
``updateNewChannelMessage`` with the users and chats it mentions. A message stored with
``push=False`` still takes its pts: that is an update gap the client must fill with
``updates.getDifference`` / ``updates.getChannelDifference``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from telethon import utils
from telethon.tl import types
from telethon.tl.tlobject import TLObject

from .world_core import WorldCore
from .world_messages import ChannelHistory, private_message
from .world_state import (
    MESSAGE_LENGTH_MAX,
    AccountState,
    ChatRecord,
    SentMessage,
    UserRecord,
    to_datetime,
)

Form = Literal["short", "full"]
Target = UserRecord | ChannelHistory | ChatRecord


class UnknownPeerError(ValueError):
    """A user, channel or group name or id that does not exist in the test world."""


@dataclass(frozen=True)
class Delivered:
    """What storing one new message did.

    Attributes:
        peer: Telethon's marked id of the chat (a user id for a private chat, as seen by the
            recipient: the sender's id; ``-id`` for a basic group; ``-100...`` for a channel).
        message_ids: account user id -> the message's id in that account's box (for a channel:
            the one channel message id, for every account).
        pts: account user id -> the pts the message took in that account's common box; for a
            channel: ``{0: channel pts}``.
        pushed: connections the update was written to (0 for a gap).
    """

    peer: int
    message_ids: dict[int, int] = field(default_factory=dict)
    pts: dict[int, int] = field(default_factory=dict)
    pushed: int = 0


class Delivery:
    """Stores new messages in the boxes of their recipients and pushes their updates."""

    def __init__(self, world: WorldCore) -> None:
        self.w = world

    # ---- naming -----------------------------------------------------------------------------

    def _known(self) -> str:
        w = self.w
        users = sorted(n for n, (kind, _) in w.usernames.items() if kind == "user")
        channels = sorted(n for n, (kind, _) in w.usernames.items() if kind == "channel")
        return (f"users {', '.join(users)} (or an account's user id), channels "
                f"{', '.join(channels)}, basic groups {', '.join(sorted(w.group_names))}")

    def resolve_peer(self, peer: str | int) -> Target:
        """See :meth:`~.world.World.resolve_peer`."""
        w = self.w
        if isinstance(peer, str):
            name = peer.strip().lower().lstrip("@")
            entry = w.usernames.get(name)
            if entry is not None:
                kind, eid = entry
                return w.users[eid] if kind == "user" else w.channels[eid]
            if name in w.group_names:
                return w.groups[w.group_names[name]]
        elif isinstance(peer, int) and not isinstance(peer, bool):
            if peer > 0 and peer in w.users:
                return w.users[peer]
            if peer < 0:
                bare, kind = utils.resolve_id(peer)
                if kind is types.PeerChannel and bare in w.channels:
                    return w.channels[bare]
                if kind is types.PeerChat and bare in w.groups:
                    return w.groups[bare]
        else:
            raise UnknownPeerError(f"a peer is a name (str) or an id (int), got {peer!r}")
        raise UnknownPeerError(f"unknown peer {peer!r}: this world has {self._known()}")

    def resolve_user(self, user: str | int) -> UserRecord:
        """The user ``user`` names (username or user id); :class:`UnknownPeerError` else."""
        target = self.resolve_peer(user)
        if not isinstance(target, UserRecord):
            raise UnknownPeerError(f"{user!r} is a chat, not a user (a message needs a user "
                                   f"as its author)")
        return target

    def post(self, from_user: str | int | None, to_peer: str | int, text: str, *,
             push: bool = True, form: Form = "short") -> Delivered:
        """See :meth:`~.world.World.post`."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty str, got {text!r}")
        if len(text) > MESSAGE_LENGTH_MAX:
            raise ValueError(f"text must be at most {MESSAGE_LENGTH_MAX} characters "
                             f"(Telegram's message_length_max), got {len(text)}")
        if form not in ("short", "full"):
            raise ValueError(f"form must be 'short' or 'full', got {form!r}")
        target = self.resolve_peer(to_peer)
        sender = None if from_user is None else self.resolve_user(from_user)
        if isinstance(target, ChannelHistory):
            sent = self.channel_store(target, sender.id if sender is not None else 0, text)
            return self.to_channel(target, sent.message_id, push=push)
        if sender is None:
            raise ValueError(f"from_user is required for a message to {to_peer!r} "
                             f"(a private chat or basic group has an author)")
        if isinstance(target, UserRecord) and target.id == sender.id:
            raise ValueError(f"from_user and to_peer are the same user ({to_peer!r})")
        own = self.w.accounts.get(sender.id)
        if own is None and not self.receivers(sender.id, target):
            raise ValueError(f"neither {from_user!r} nor {to_peer!r} is an account: no box "
                             f"would hold the message (make one with server.session(user id))")
        now = self.w.now()
        done = self.to_box(sender.id, target, text, now, push=push, form=form)
        if own is None:
            return done
        key = target.marked_id if isinstance(target, ChatRecord) else target.id
        sent, pts = self.box_store(own, key, sender.id, text, now)
        pushed = done.pushed
        if push:  # written "from another device": the author's own sessions see it too
            pushed += self.w.push(own.user_id, self.box_update(own, sent, pts, form))
        ids = {**done.message_ids, own.user_id: sent.message_id}
        return Delivered(done.peer, ids, {**done.pts, own.user_id: pts}, pushed)

    # ---- the common box ---------------------------------------------------------------------

    def box_store(self, acc: AccountState, chat_key: int, sender: int, text: str, date: int,
                  *, random_id: int = 0, media: Any = None, entities: Any = None,
                  fwd_from: Any = None, incoming: bool = False) -> tuple[SentMessage, int]:
        """Store one message in ``acc``'s common box under chat ``chat_key`` (marked id);
        return it and the pts it took. Keeps the newest ``WorldConfig.pts_kept`` pts."""
        mid = acc.next_message_id
        acc.next_message_id += 1
        acc.pts += 1
        sent = SentMessage(sender, chat_key, random_id, mid, text, date, media, entities or None,
                           fwd_from, incoming)
        acc.messages[mid] = sent
        acc.private.setdefault(chat_key, []).append(mid)
        log = acc.pts_log
        log[acc.pts] = mid
        kept = self.w.config.pts_kept
        while len(log) > kept:
            log.pop(next(iter(log)))
        return sent, acc.pts

    def receivers(self, sender: int, target: UserRecord | ChatRecord
                  ) -> list[tuple[AccountState, int]]:
        """``(account, chat key in its box)`` of every account receiving a message ``sender``
        sends to ``target`` (the sender excluded; users that are not accounts have no box)."""
        accounts = self.w.accounts
        if isinstance(target, ChatRecord):
            return [(acc, target.marked_id) for uid, acc in sorted(accounts.items())
                    if uid != sender]
        acc = accounts.get(target.id)
        if acc is None or target.id == sender:
            return []
        return [(acc, sender)]

    def to_box(self, sender: int, target: UserRecord | ChatRecord, text: str, date: int, *,
               media: Any = None, entities: Any = None, fwd_from: Any = None, push: bool = True,
               form: Form = "short", exclude_key: int | None = None) -> Delivered:
        """Give every receiving account its incoming copy (and push its update when
        ``push``); returns what was delivered."""
        peer = target.marked_id if isinstance(target, ChatRecord) else sender
        out = Delivered(peer)
        pushed = 0
        listening = self.w.listeners() if push else set()
        for acc, key in self.receivers(sender, target):
            sent, pts = self.box_store(acc, key, sender, text, date, media=media,
                                       entities=entities, fwd_from=fwd_from, incoming=True)
            out.message_ids[acc.user_id] = sent.message_id
            out.pts[acc.user_id] = pts
            if push and acc.user_id in listening:
                pushed += self.w.push(acc.user_id, self.box_update(acc, sent, pts, form),
                                      exclude_key)
        return Delivered(out.peer, out.message_ids, out.pts, pushed)

    def box_update(self, acc: AccountState, sent: SentMessage, pts: int, form: Form) -> TLObject:
        """The update Telegram pushes for a new common-box message of ``acc``."""
        date = to_datetime(sent.date)
        out = None if sent.incoming else True
        if form == "short" and sent.media is None:
            if sent.peer > 0:
                return types.UpdateShortMessage(
                    id=sent.message_id, user_id=sent.peer, message=sent.text, pts=pts,
                    pts_count=1, date=date, out=out, fwd_from=sent.fwd_from,
                    entities=sent.entities)
            return types.UpdateShortChatMessage(
                id=sent.message_id, from_id=sent.account, chat_id=-sent.peer, message=sent.text,
                pts=pts, pts_count=1, date=date, out=out, fwd_from=sent.fwd_from,
                entities=sent.entities)
        msg = private_message(sent)
        return types.Updates(
            updates=[types.UpdateNewMessage(message=msg, pts=pts, pts_count=1)],
            users=self.users_for(acc.user_id, [msg]), chats=self.chats_for([msg]), date=date,
            seq=0)

    # ---- channels ---------------------------------------------------------------------------

    def channel_store(self, hist: ChannelHistory, sender: int, text: str, *, random_id: int = 0,
                      media: Any = None, entities: Any = None, fwd_from: Any = None
                      ) -> SentMessage:
        """Append one message to ``hist`` (it takes the channel's next pts)."""
        now = self.w.now()
        date = max(now, hist.date_of(hist.top)) if hist.top else now
        sent = SentMessage(sender, utils.get_peer_id(hist.channel.peer()), random_id,
                           hist.top + 1, text, date, media, entities or None, fwd_from)
        hist.append(sent)
        return sent

    def to_channel(self, hist: ChannelHistory, msg_id: int, *, push: bool = True,
                   exclude_key: int | None = None) -> Delivered:
        """Push ``updateNewChannelMessage`` of message ``msg_id`` to every account (every
        account is a member of every channel of the world)."""
        peer = utils.get_peer_id(hist.channel.peer())
        accounts = sorted(self.w.accounts)
        pushed = 0
        if push:
            chat = hist.channel.to_tl()
            listening = self.w.listeners()
            for uid in accounts:
                if uid not in listening:
                    continue
                msg = self.w.view(hist, msg_id, uid)
                upd = types.Updates(
                    updates=[types.UpdateNewChannelMessage(message=msg, pts=msg_id, pts_count=1)],
                    users=self.users_for(uid, [msg]), chats=[chat], date=msg.date, seq=0)
                pushed += self.w.push(uid, upd, exclude_key)
        return Delivered(peer, dict.fromkeys(accounts, msg_id), {0: msg_id}, pushed)

    # ---- entities ---------------------------------------------------------------------------

    def users_for(self, viewer: int, msgs: list[Any]) -> list[types.User]:
        """Users ``msgs`` mention, and ``viewer`` itself (Telegram always includes it)."""
        users = self.w.users_of(msgs, viewer)
        if viewer in self.w.users and viewer not in {u.id for u in users}:
            users.append(self.w.user_tl(viewer, viewer))
        return users

    def chats_for(self, msgs: list[Any]) -> list[Any]:
        """Basic groups and channels ``msgs`` are in."""
        out: dict[int, Any] = {}
        for m in msgs:
            pid = getattr(m, "peer_id", None)
            if isinstance(pid, types.PeerChat) and pid.chat_id in self.w.groups:
                out[-pid.chat_id] = self.w.groups[pid.chat_id].to_tl(len(self.w.members()))
            elif isinstance(pid, types.PeerChannel) and pid.channel_id in self.w.channels:
                out[pid.channel_id] = self.w.channels[pid.channel_id].channel.to_tl()
        return list(out.values())
