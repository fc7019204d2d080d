"""Sending: ``messages.sendMessage`` / ``sendMedia`` / ``forwardMessages``, stored per
(account, chat) with their ``random_id``; a ``random_id`` the account already used answers
``500 RANDOM_ID_DUPLICATE`` and stores nothing (Telegram's answer to a re-sent request that was
already executed)."""

from __future__ import annotations

from typing import Any

from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import RequestInfo, RpcErrorReply
from .world_core import Handler, WorldCore
from .world_delivery import Delivery, Target
from .world_messages import ChannelHistory, private_message
from .world_state import (
    MESSAGE_LENGTH_MAX,
    AccountState,
    ChatRecord,
    access_hash,
    derive,
    to_datetime,
)
from .world_tl import TLBool


class SendHandlers:
    """``messages.sendMessage``, ``sendMedia`` (uploaded documents and photos, the world's
    document), ``forwardMessages`` and ``setTyping``."""

    def __init__(self, world: WorldCore) -> None:
        self.w = world
        self.delivery = Delivery(world)

    def table(self) -> dict[type, Handler]:
        f = functions.messages
        return {
            f.SendMessageRequest: self._messages_send_message,
            f.SendMediaRequest: self._messages_send_media,
            f.ForwardMessagesRequest: self._messages_forward_messages,
            f.SetTypingRequest: self._messages_set_typing,
        }

    # ---- checks (nothing is stored before all of them pass) ---------------------------------

    def _check_send(self, info: RequestInfo, target: Target,
                    random_ids: list[int], text: str | None, media: bool = False
                    ) -> AccountState:
        """Validate a send; ``text`` None skips the text checks (forwards)."""
        acc = self.w.me(info)
        if not random_ids or any(r is None for r in random_ids):
            raise RpcErrorReply(400, "RANDOM_ID_EMPTY")
        if len(set(random_ids)) != len(random_ids):
            raise RpcErrorReply(500, "RANDOM_ID_DUPLICATE")
        if text is not None and not media and not text.strip():
            raise RpcErrorReply(400, "MESSAGE_EMPTY")
        if text is not None and len(text) > MESSAGE_LENGTH_MAX:
            raise RpcErrorReply(400, "MEDIA_CAPTION_TOO_LONG" if media else "MESSAGE_TOO_LONG")
        if isinstance(target, ChannelHistory) and not target.channel.writable:
            raise RpcErrorReply(403, "CHAT_WRITE_FORBIDDEN")
        if any(r in acc.random_ids for r in random_ids):
            raise RpcErrorReply(500, "RANDOM_ID_DUPLICATE")
        return acc

    # ---- handlers ---------------------------------------------------------------------------

    def _messages_send_message(self, info: RequestInfo) -> TLObject:
        req: functions.messages.SendMessageRequest = info.request
        target = self.w.peer_of(info, req.peer)
        text = req.message or ""
        acc = self._check_send(info, target, [req.random_id], text)
        msg, update = self._store(info, acc, target, text, req.random_id, None, req.entities)
        if isinstance(update, types.UpdateNewMessage):
            return types.UpdateShortSentMessage(
                id=msg.id, pts=update.pts, pts_count=1, date=msg.date, out=True,
                entities=req.entities or None,
            )
        return self._updates(acc, target, [(req.random_id, update)])

    def _messages_send_media(self, info: RequestInfo) -> TLObject:
        req: functions.messages.SendMediaRequest = info.request
        target = self.w.peer_of(info, req.peer)
        text = req.message or ""
        acc = self._check_send(info, target, [req.random_id], text, media=True)
        media = self._media_of(req.media)
        _, update = self._store(info, acc, target, text, req.random_id, media, req.entities)
        return self._updates(acc, target, [(req.random_id, update)])

    def _messages_forward_messages(self, info: RequestInfo) -> TLObject:
        req: functions.messages.ForwardMessagesRequest = info.request
        source = self.w.peer_of(info, req.from_peer)
        target = self.w.peer_of(info, req.to_peer)
        ids = list(req.id or [])
        random_ids = list(req.random_id or [])
        if not ids or len(ids) > 100:
            raise RpcErrorReply(400, "MESSAGE_IDS_EMPTY" if not ids else "MESSAGE_ID_INVALID")
        if len(random_ids) != len(ids):
            raise RpcErrorReply(400, "RANDOM_ID_INVALID")
        acc = self._check_send(info, target, random_ids, None)
        originals = [self._original(acc, source, mid) for mid in ids]
        stored = []
        for rid, src in zip(random_ids, originals, strict=True):
            fwd = None if req.drop_author else self._fwd_header(source, src)
            _, update = self._store(info, acc, target, src.message or "", rid, src.media,
                                    src.entities, fwd_from=fwd)
            stored.append((rid, update))
        return self._updates(acc, target, stored)

    def _messages_set_typing(self, info: RequestInfo) -> TLObject:
        req: functions.messages.SetTypingRequest = info.request
        self.w.me(info)
        self.w.peer_of(info, req.peer)
        return TLBool(True)

    # ---- helpers ----------------------------------------------------------------------------

    def _original(self, acc: AccountState, source: Target, mid: int
                  ) -> types.Message:
        if isinstance(source, ChannelHistory):
            msg = source.get(mid)
        else:
            sent = acc.messages.get(mid)
            msg = None
            key = source.marked_id if isinstance(source, ChatRecord) else source.id
            if sent is not None and sent.peer == key:
                msg = private_message(sent)
        if msg is None:
            raise RpcErrorReply(400, "MESSAGE_ID_INVALID")
        return msg

    @staticmethod
    def _fwd_header(source: Target, src: types.Message
                    ) -> types.MessageFwdHeader:
        if isinstance(source, ChannelHistory) and not source.channel.megagroup:
            return types.MessageFwdHeader(date=src.date, from_id=source.channel.peer(),
                                          channel_post=src.id)
        return types.MessageFwdHeader(date=src.date, from_id=src.from_id)

    def _media_of(self, media: TLObject) -> types.TypeMessageMedia:
        cfg = self.w.config
        if isinstance(media, (types.InputMediaUploadedDocument, types.InputMediaUploadedPhoto)):
            f = media.file
            size = self.w.files.uploaded_size(f.id, getattr(f, "parts", 0))
            ident = derive(cfg.seed, "uploaded", f.id, bits=62)
            hash_ = access_hash(cfg.seed, "uploaded", f.id)
            date = to_datetime(self.w.now())
            if isinstance(media, types.InputMediaUploadedPhoto):
                photo = types.Photo(
                    id=ident, access_hash=hash_, file_reference=b"\x01uploaded", date=date,
                    sizes=[types.PhotoSize(type="x", w=1, h=1, size=size)], dc_id=cfg.file_dc,
                )
                return types.MessageMediaPhoto(photo=photo)
            doc = types.Document(
                id=ident, access_hash=hash_, file_reference=b"\x01uploaded", date=date,
                mime_type=media.mime_type or "application/octet-stream", size=size,
                dc_id=cfg.file_dc, attributes=list(media.attributes or []),
            )
            return types.MessageMediaDocument(document=doc)
        if isinstance(media, types.InputMediaDocument) and isinstance(
            media.id, types.InputDocument
        ) and media.id.id == self.w.document.id:
            return types.MessageMediaDocument(document=self.w.document)
        raise RpcErrorReply(400, "MEDIA_INVALID")

    def _store(
        self,
        info: RequestInfo,
        acc: AccountState,
        target: Target,
        text: str,
        random_id: int,
        media: types.TypeMessageMedia | None,
        entities: list[Any] | None,
        fwd_from: types.MessageFwdHeader | None = None,
    ) -> tuple[types.Message, TLObject]:
        """Store one message, deliver it to the other members and to the sender's other
        sessions (updates pushed, the sending auth key excluded); return it as the sender
        sees it and its new-message update."""
        now = self.w.now()
        uid = acc.user_id
        acc.random_ids.add(random_id)
        key = info.auth.auth_key_id
        if isinstance(target, ChannelHistory):
            sent = self.delivery.channel_store(target, uid, text, random_id=random_id,
                                               media=media, entities=entities, fwd_from=fwd_from)
            self.w.sent.append(sent)
            self.delivery.to_channel(target, sent.message_id, exclude_key=key)
            mine = self.w.view(target, sent.message_id, uid)
            return mine, types.UpdateNewChannelMessage(message=mine, pts=target.top,
                                                       pts_count=1)
        # private chat or basic group: the sender's common box, then every other member's
        chat_key = target.marked_id if isinstance(target, ChatRecord) else target.id
        sent, pts = self.delivery.box_store(acc, chat_key, uid, text, now, random_id=random_id,
                                            media=media, entities=entities, fwd_from=fwd_from)
        self.w.sent.append(sent)
        self.delivery.to_box(uid, target, text, now, media=media, entities=entities,
                             fwd_from=fwd_from, exclude_key=key)
        if uid in self.w.listeners():  # the sender's other sessions see its outgoing message
            self.w.push(uid, self.delivery.box_update(acc, sent, pts, "short"), key)
        msg = private_message(sent)
        return msg, types.UpdateNewMessage(message=msg, pts=pts, pts_count=1)

    def _updates(self, acc: AccountState, target: Target,
                 stored: list[tuple[int, TLObject]]) -> types.Updates:
        """``types.Updates`` with an ``UpdateMessageID`` per random_id, then the new messages."""
        uid = acc.user_id
        ids: list[TLObject] = [
            types.UpdateMessageID(id=u.message.id, random_id=rid)
            for rid, u in stored
        ]
        users = [self.w.user_tl(uid, uid)]
        chats: list[Any] = []
        if isinstance(target, ChannelHistory):
            chats.append(target.channel.to_tl())
        elif isinstance(target, ChatRecord):
            chats.append(target.to_tl(len(self.w.members())))
        elif target.id != uid:
            users.append(self.w.user_tl(target.id, uid))
        return types.Updates(
            updates=ids + [u for _, u in stored], users=users, chats=chats,
            date=to_datetime(self.w.now()), seq=0,
        )
