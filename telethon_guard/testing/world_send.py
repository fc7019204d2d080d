"""Sending: ``messages.sendMessage`` / ``sendMedia``, stored per (account, chat) with their
``random_id``; a ``random_id`` the account already used answers ``500 RANDOM_ID_DUPLICATE``
and stores nothing (Telegram's answer to a re-sent request that was already executed)."""

from __future__ import annotations

from typing import Any

from telethon import utils
from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import RequestInfo, RpcErrorReply
from .world_core import Handler, WorldCore
from .world_messages import ChannelHistory, channel_message
from .world_state import (
    MESSAGE_LENGTH_MAX,
    AccountState,
    SentMessage,
    UserRecord,
    access_hash,
    derive,
    to_datetime,
)

_PTS_LOG_MAX = 1000


class SendHandlers:
    """``messages.sendMessage`` and ``messages.sendMedia`` (uploaded or world documents)."""

    def __init__(self, world: WorldCore) -> None:
        self.w = world

    def table(self) -> dict[type, Handler]:
        f = functions.messages
        return {
            f.SendMessageRequest: self._messages_send_message,
            f.SendMediaRequest: self._messages_send_media,
        }

    def _check_send(self, info: RequestInfo, text: str, random_id: int | None,
                    media: bool = False) -> AccountState:
        acc = self.w.me(info)
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
        target = self.w.peer_of(info, req.peer)
        acc = self._check_send(info, req.message or "", req.random_id)
        return self._send(info, acc, target, req.message or "", req.random_id, None,
                          req.entities)

    def _messages_send_media(self, info: RequestInfo) -> TLObject:
        req: functions.messages.SendMediaRequest = info.request
        target = self.w.peer_of(info, req.peer)
        acc = self._check_send(info, req.message or "", req.random_id, media=True)
        media = self._media_of(req.media)
        return self._send(info, acc, target, req.message or "", req.random_id, media,
                          req.entities)

    def _media_of(self, media: TLObject) -> types.TypeMessageMedia:
        if isinstance(media, types.InputMediaUploadedDocument):
            f = media.file
            parts = getattr(f, "parts", 0)
            size = self.w.files.uploaded_size(f.id, parts)
            doc = types.Document(
                id=derive(self.w.config.seed, "uploaded", f.id, bits=62),
                access_hash=access_hash(self.w.config.seed, "uploaded", f.id),
                file_reference=b"\x01uploaded",
                date=to_datetime(self.w.now()),
                mime_type=media.mime_type or "application/octet-stream",
                size=size,
                dc_id=self.w.config.file_dc,
                attributes=list(media.attributes or []),
            )
            return types.MessageMediaDocument(document=doc)
        if isinstance(media, types.InputMediaDocument) and isinstance(
            media.id, types.InputDocument
        ) and media.id.id == self.w.document.id:
            return types.MessageMediaDocument(document=self.w.document)
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
        now = self.w.now()
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
            self.w.sent.append(SentMessage(uid, utils.get_peer_id(ch.peer()), random_id,
                                          msg.id, text, date, media))
            mine = self.w.view(target, msg.id, uid)
            return types.Updates(
                updates=[
                    types.UpdateMessageID(id=msg.id, random_id=random_id),
                    types.UpdateNewChannelMessage(message=mine, pts=target.top, pts_count=1),
                ],
                users=[self.w.user_tl(uid, uid)],
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
        self.w.sent.append(SentMessage(uid, target.id, random_id, mid, text, now, media))
        if media is not None:
            return types.Updates(
                updates=[
                    types.UpdateMessageID(id=mid, random_id=random_id),
                    types.UpdateNewMessage(message=msg, pts=acc.pts, pts_count=1),
                ],
                users=[self.w.user_tl(uid, uid), self.w.user_tl(target.id, uid)],
                chats=[],
                date=to_datetime(now),
                seq=0,
            )
        return types.UpdateShortSentMessage(
            id=mid, pts=acc.pts, pts_count=1, date=to_datetime(now), out=True,
            entities=entities or None,
        )
