"""Editing: ``messages.editMessage`` of a message the account sent (its text only).

Checks as Telegram does (core.telegram.org/method/messages.editMessage): the chat must resolve
(``PEER_ID_INVALID`` & co.), the message must be one the calling account sent into that chat
(``400 MESSAGE_ID_INVALID``), and the new text must differ from the current one
(``400 MESSAGE_NOT_MODIFIED``, also for an empty text). The edit is stored: the sender's
message (``World.sent_messages()``, its history, ``get_messages``, a channel's history for
every member) shows the new text. Simplification: the incoming copies of a private-chat or
basic-group message in the other members' boxes keep the text they arrived with.
Answered like Telegram with ``Updates`` carrying ``updateEditMessage`` (private chats, basic
groups) or ``updateEditChannelMessage`` (channels) with the edited message (new text,
``edit_date``), so Telethon's ``client.edit_message`` returns that ``Message``. One
simplification: the edit takes no pts (``pts_count=0`` at the box's current pts; Telegram's takes
one), so other members get no update of the edit and a client already at that pts sees no gap.
Every edit is counted in ``server.log`` like any request.
"""

from __future__ import annotations

from telethon import utils
from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import RequestInfo, RpcErrorReply
from .world_core import Handler, WorldCore
from .world_messages import ChannelHistory, private_message, thaw_copy
from .world_state import ChatRecord, SentMessage, to_datetime


class EditHandlers:
    """``messages.editMessage`` (text only)."""

    def __init__(self, world: WorldCore) -> None:
        self.w = world
        self.texts: dict[tuple[int, int, int], str] = {}
        """Text of every edited message: ``(account, marked chat id, msg id) -> text``."""

    def table(self) -> dict[type, Handler]:
        return {functions.messages.EditMessageRequest: self._messages_edit_message}

    def _sent(self, uid: int, target: object, msg_id: int) -> SentMessage | None:
        """The message ``msg_id`` that account ``uid`` sent into ``target``, or ``None``."""
        if isinstance(target, ChannelHistory):
            gen = target.channel.generated
            if gen < msg_id <= target.top:
                posted = target.appended[msg_id - gen - 1]
                return posted if posted.account == uid else None
            return None
        boxed = self.w.account(uid).messages.get(msg_id)
        key = target.marked_id if isinstance(target, ChatRecord) else getattr(target, "id", None)
        if boxed is None or boxed.incoming or boxed.peer != key:
            return None
        return boxed

    def _messages_edit_message(self, info: RequestInfo) -> TLObject:
        req: functions.messages.EditMessageRequest = info.request
        acc = self.w.me(info)
        target = self.w.peer_of(info, req.peer)
        sent = self._sent(acc.user_id, target, req.id)
        if sent is None:
            raise RpcErrorReply(400, "MESSAGE_ID_INVALID")
        peer = (utils.get_peer_id(target.channel.peer()) if isinstance(target, ChannelHistory)
                else sent.peer)
        key = (acc.user_id, peer, req.id)
        text = req.message
        if not text or text == self.texts.get(key, sent.text):
            raise RpcErrorReply(400, "MESSAGE_NOT_MODIFIED")
        self.texts[key] = text
        sent.text = text  # stored: history, get_messages and sent_messages() show it
        if isinstance(target, ChannelHistory):
            target.forget(req.id)  # the channel's cached TL message had the old text
        date = to_datetime(self.w.now())
        update: TLObject
        chats: list[TLObject]
        if isinstance(target, ChannelHistory):
            msg = thaw_copy(self.w.view(target, req.id, acc.user_id))
            msg.message, msg.edit_date = text, date
            update = types.UpdateEditChannelMessage(message=msg, pts=target.top, pts_count=0)
            chats = [target.channel.to_tl()]
        else:
            msg = private_message(sent)
            msg.message, msg.edit_date = text, date
            update = types.UpdateEditMessage(message=msg, pts=acc.pts, pts_count=0)
            group = self.w.groups.get(-sent.peer) if sent.peer < 0 else None
            chats = [group.to_tl(len(self.w.members()))] if group is not None else []
        return types.Updates(updates=[update], users=self.w.users_of([msg], acc.user_id),
                             chats=chats, date=date, seq=0)


__all__ = ["EditHandlers"]
