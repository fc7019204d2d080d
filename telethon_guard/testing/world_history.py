"""Reading messages: ``messages.getHistory`` (Telegram's offset semantics, see
:func:`~.world_messages.history_window`), ``messages.getMessages``, ``channels.getMessages``
(the update gaps are :mod:`.world_updates`)."""

from __future__ import annotations

from typing import Any

from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import RequestInfo
from .world_core import Handler, WorldCore
from .world_messages import ChannelHistory, first_id_before, history_window, private_message
from .world_state import ChatRecord, unix_time


class HistoryHandlers:
    """Message reading handlers; O(limit) work per call whatever the history size."""

    def __init__(self, world: WorldCore) -> None:
        self.w = world

    def table(self) -> dict[type, Handler]:
        f = functions
        return {
            f.messages.GetHistoryRequest: self._messages_get_history,
            f.messages.GetMessagesRequest: self._messages_get_messages,
            f.channels.GetMessagesRequest: self._channels_get_messages,
        }

    def _messages_get_history(self, info: RequestInfo) -> TLObject:
        req: functions.messages.GetHistoryRequest = info.request
        acc = self.w.me(info)
        viewer = acc.user_id
        target = self.w.peer_of(info, req.peer)
        offset_id = req.offset_id
        if isinstance(target, ChannelHistory):
            hist = target
            ids: Any = hist.ids
            if not offset_id and unix_time(req.offset_date) > 0:
                offset_id = first_id_before(ids, hist.date_of, unix_time(req.offset_date))
            page = history_window(ids, offset_id=offset_id, add_offset=req.add_offset,
                                  limit=req.limit, max_id=req.max_id, min_id=req.min_id)
            msgs: list[Any] = [self.w.view(hist, i, viewer) for i in page]
            return types.messages.ChannelMessages(
                pts=hist.top, count=hist.top, messages=msgs, topics=[],
                chats=[hist.channel.to_tl()], users=self.w.users_of(msgs, viewer),
            )
        chat_ids = acc.private.get(
            target.marked_id if isinstance(target, ChatRecord) else target.id, [])
        if not offset_id and unix_time(req.offset_date) > 0:
            offset_id = first_id_before(
                chat_ids, lambda i: acc.messages[i].date, unix_time(req.offset_date)
            )
        page = history_window(chat_ids, offset_id=offset_id, add_offset=req.add_offset,
                              limit=req.limit, max_id=req.max_id, min_id=req.min_id)
        msgs = [private_message(acc.messages[i]) for i in page]
        users = self.w.users_of(msgs, viewer)
        if viewer not in {u.id for u in users}:
            users.append(self.w.user_tl(viewer, viewer))
        chats: list[Any] = ([target.to_tl(len(self.w.members()))]
                            if isinstance(target, ChatRecord) else [])
        if len(page) == len(chat_ids):
            return types.messages.Messages(messages=msgs, topics=[], chats=chats, users=users)
        return types.messages.MessagesSlice(
            count=len(chat_ids), messages=msgs, topics=[], chats=chats, users=users
        )

    def _messages_get_messages(self, info: RequestInfo) -> TLObject:
        req: functions.messages.GetMessagesRequest = info.request
        acc = self.w.me(info)
        msgs: list[Any] = []
        for im in req.id:
            mid = im.id if isinstance(im, types.InputMessageID) else 0
            sent = acc.messages.get(mid)
            msgs.append(private_message(sent) if sent is not None
                        else types.MessageEmpty(id=mid, peer_id=None))
        users = self.w.users_of(msgs, acc.user_id)
        return types.messages.Messages(messages=msgs, topics=[], chats=[], users=users)

    def _channels_get_messages(self, info: RequestInfo) -> TLObject:
        req: functions.channels.GetMessagesRequest = info.request
        viewer = self.w.me(info).user_id
        hist = self.w.channel_of(req.channel)
        msgs: list[Any] = []
        for im in req.id:
            mid = getattr(im, "id", 0) if isinstance(im, types.InputMessageID) else 0
            if hist.get(mid) is None:
                msgs.append(types.MessageEmpty(id=mid, peer_id=hist.channel.peer()))
            else:
                msgs.append(self.w.view(hist, mid, viewer))
        return types.messages.ChannelMessages(
            pts=hist.top, count=len(msgs), messages=msgs, topics=[],
            chats=[hist.channel.to_tl()], users=self.w.users_of(msgs, viewer),
        )
