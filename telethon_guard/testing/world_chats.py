"""Chat-level handlers: usernames, channel info, dialogs and read receipts."""

from __future__ import annotations

import re
from typing import Any

from telethon import utils
from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import RequestInfo, RpcErrorReply
from .world_core import Handler, WorldCore
from .world_messages import ChannelHistory, box_peer, private_message
from .world_state import HISTORY_PAGE_MAX, AccountState, ChatRecord, to_datetime, unix_time
from .world_tl import TLBool

_USERNAME_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")

DialogRow = tuple[int, types.Dialog, Any, Any]  # (sort date, dialog, top message, entity)


class ChatHandlers:
    """``contacts.resolveUsername``, ``channels.getFullChannel`` / ``getChannels`` /
    ``getParticipants`` / ``readHistory``, ``messages.getDialogs`` / ``getPeerDialogs`` /
    ``getChats`` / ``readHistory``."""

    def __init__(self, world: WorldCore) -> None:
        self.w = world

    def table(self) -> dict[type, Handler]:
        f = functions
        return {
            f.contacts.ResolveUsernameRequest: self._contacts_resolve_username,
            f.channels.GetFullChannelRequest: self._channels_get_full_channel,
            f.channels.GetChannelsRequest: self._channels_get_channels,
            f.channels.ReadHistoryRequest: self._channels_read_history,
            f.channels.GetParticipantsRequest: self._channels_get_participants,
            f.messages.ReadHistoryRequest: self._messages_read_history,
            f.messages.GetDialogsRequest: self._messages_get_dialogs,
            f.messages.GetPeerDialogsRequest: self._messages_get_peer_dialogs,
            f.messages.GetChatsRequest: self._messages_get_chats,
        }

    def _messages_get_chats(self, info: RequestInfo) -> TLObject:
        """Basic groups by id; ``400 CHAT_ID_INVALID`` for an unknown one."""
        req: functions.messages.GetChatsRequest = info.request
        self.w.me(info)
        members = len(self.w.members())
        chats: list[Any] = []
        for chat_id in req.id:
            group = self.w.groups.get(chat_id)
            if group is None:
                raise RpcErrorReply(400, "CHAT_ID_INVALID")
            chats.append(group.to_tl(members))
        return types.messages.Chats(chats=chats)

    def _contacts_resolve_username(self, info: RequestInfo) -> TLObject:
        req: functions.contacts.ResolveUsernameRequest = info.request
        viewer = self.w.me(info).user_id
        name = (req.username or "").lstrip("@")
        if not _USERNAME_RE.match(name):
            raise RpcErrorReply(400, "USERNAME_INVALID")
        entry = self.w.usernames.get(name.lower())
        if entry is None:
            raise RpcErrorReply(400, "USERNAME_NOT_OCCUPIED")
        kind, eid = entry
        if kind == "user":
            return types.contacts.ResolvedPeer(
                peer=types.PeerUser(eid), chats=[], users=[self.w.user_tl(eid, viewer)]
            )
        ch = self.w.channels[eid].channel
        return types.contacts.ResolvedPeer(peer=ch.peer(), chats=[ch.to_tl()], users=[])

    def _channels_get_full_channel(self, info: RequestInfo) -> TLObject:
        req: functions.channels.GetFullChannelRequest = info.request
        self.w.me(info)
        hist = self.w.channel_of(req.channel)
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
                participants_count=len(self.w.members()),
            ),
            chats=[ch.to_tl()],
            users=[],
        )

    def _channels_get_channels(self, info: RequestInfo) -> TLObject:
        req: functions.channels.GetChannelsRequest = info.request
        self.w.me(info)
        chats = [self.w.channel_of(c).channel.to_tl() for c in req.id]
        return types.messages.Chats(chats=chats)

    def _channels_get_participants(self, info: RequestInfo) -> TLObject:
        """Members are the directory users and every account, ordered by user id.

        ``ChannelParticipantsSearch(q)`` matches names and usernames (case-insensitive);
        banned/kicked/admin/bot filters are empty; at most 200 per call (Telegram's cap).
        """
        req: functions.channels.GetParticipantsRequest = info.request
        viewer = self.w.me(info).user_id
        hist = self.w.channel_of(req.channel)
        members = self.w.members()
        flt = req.filter
        if isinstance(flt, types.ChannelParticipantsSearch) and flt.q:
            q = flt.q.lower()
            members = [u for u in members if any(
                q in (x or "").lower() for x in (u.first_name, u.last_name, u.username))]
        elif not isinstance(flt, (types.ChannelParticipantsRecent,
                                  types.ChannelParticipantsSearch)):
            members = []
        page = members[max(req.offset, 0):max(req.offset, 0) + max(0, min(req.limit, 200))]
        joined = to_datetime(hist.channel.created)
        return types.channels.ChannelParticipants(
            count=len(members),
            participants=[types.ChannelParticipant(user_id=u.id, date=joined) for u in page],
            chats=[],
            users=[u.to_tl(viewer) for u in page],
        )

    def _channels_read_history(self, info: RequestInfo) -> TLObject:
        req: functions.channels.ReadHistoryRequest = info.request
        self.w.me(info)
        self.w.channel_of(req.channel)
        return TLBool(True)

    def _messages_read_history(self, info: RequestInfo) -> TLObject:
        req: functions.messages.ReadHistoryRequest = info.request
        acc = self.w.me(info)
        self.w.peer_of(info, req.peer)
        return types.messages.AffectedMessages(pts=acc.pts, pts_count=0)

    def _dialogs_of(self, acc: AccountState) -> list[DialogRow]:
        """(sort date, Dialog, top message, entity) for every chat of ``acc``, newest first."""
        viewer = acc.user_id
        out: list[DialogRow] = []
        for hist in self.w.channels.values():
            top = hist.top
            if top == 0:
                continue
            msg = self.w.view(hist, top, viewer)
            out.append((unix_time(msg.date), self._dialog(hist.channel.peer(), top, hist.top), msg,
                        hist.channel.to_tl()))
        for peer_id, ids in acc.private.items():
            msg = private_message(acc.messages[ids[-1]])
            entity: Any = (self.w.user_tl(peer_id, viewer) if peer_id > 0 else
                           self.w.groups[-peer_id].to_tl(len(self.w.members())))
            out.append((unix_time(msg.date), self._dialog(box_peer(peer_id), ids[-1], None),
                        msg, entity))
        out.sort(key=lambda d: (d[0], utils.get_peer_id(d[1].peer)), reverse=True)
        return out

    @staticmethod
    def _dialog(peer: Any, top: int, pts: int | None) -> types.Dialog:
        return types.Dialog(
            peer=peer, top_message=top, read_inbox_max_id=top, read_outbox_max_id=top,
            unread_count=0, unread_mentions_count=0, unread_reactions_count=0,
            unread_poll_votes_count=0, notify_settings=types.PeerNotifySettings(), pts=pts,
        )

    def _dialogs_result(self, viewer: int, rows: list[DialogRow]
                        ) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        dialogs = [r[1] for r in rows]
        msgs = [r[2] for r in rows]
        chats = [r[3] for r in rows if isinstance(r[3], (types.Channel, types.Chat))]
        users = {u.id: u for u in self.w.users_of(msgs, viewer)}
        for r in rows:
            if isinstance(r[3], types.User):
                users[r[3].id] = r[3]
        users.setdefault(viewer, self.w.user_tl(viewer, viewer))
        return dialogs, msgs, chats, list(users.values())

    def _messages_get_dialogs(self, info: RequestInfo) -> TLObject:
        req: functions.messages.GetDialogsRequest = info.request
        acc = self.w.me(info)
        rows = [] if req.folder_id else self._dialogs_of(acc)
        total = len(rows)
        if unix_time(req.offset_date) > 0:  # a date of 0 (epoch) on the wire means none
            cut = unix_time(req.offset_date)
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
        acc = self.w.me(info)
        wanted: set[int] = set()  # marked peer ids
        for p in req.peers:
            target = self.w.peer_of(info, getattr(p, "peer", p))
            wanted.add(utils.get_peer_id(target.channel.peer()) if isinstance(
                target, ChannelHistory) else target.marked_id if isinstance(
                target, ChatRecord) else target.id)
        rows = [r for r in self._dialogs_of(acc) if utils.get_peer_id(r[1].peer) in wanted]
        dialogs, msgs, chats, users = self._dialogs_result(acc.user_id, rows)
        return types.messages.PeerDialogs(dialogs=dialogs, messages=msgs, chats=chats,
                                          users=users, state=self.w.state_of(acc))

