"""Update state and gaps: ``updates.getState``, ``updates.getDifference`` and
``updates.getChannelDifference``, answered from the real history.

Shapes follow core.telegram.org/api/updates and the methods' pages, as Telethon 1.45's
``MessageBox`` reads them:

* account difference (common box: private chats and basic groups): ``differenceEmpty`` when
  the client's pts is current; ``difference`` with every missed message and the final
  ``state``; ``differenceSlice`` with at most ``WorldConfig.difference_limit`` messages and an
  ``intermediate_state`` (the client asks again); ``differenceTooLong`` when the client is
  further behind than the events kept (``WorldConfig.pts_kept``) or than its
  ``pts_total_limit``.
* channel difference: ``channelDifferenceEmpty`` (``final``); ``channelDifference`` with at
  most ``WorldConfig.channel_difference_page`` messages, ``final`` only when it reaches the
  newest pts; ``channelDifferenceTooLong`` (with the ``dialog`` carrying the current pts and
  the newest messages) when the client is behind by more than the request's ``limit``.
  Every channel answer carries ``timeout`` (``WorldConfig.channel_difference_timeout``).
  A pts ahead of the channel's answers ``400 PERSISTENT_TIMESTAMP_INVALID``.
"""

from __future__ import annotations

from typing import Any

from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import RequestInfo, RpcErrorReply
from .world_core import Handler, WorldCore
from .world_delivery import Delivery
from .world_messages import private_message
from .world_state import to_datetime

TOO_LONG_MESSAGES = 10
"""Newest messages a ``channelDifferenceTooLong`` carries (Telegram sends "the latest")."""


class UpdateHandlers:
    """``updates.getState``, ``updates.getDifference``, ``updates.getChannelDifference``."""

    def __init__(self, world: WorldCore) -> None:
        self.w = world
        self.delivery = Delivery(world)

    def table(self) -> dict[type, Handler]:
        f = functions.updates
        return {
            f.GetStateRequest: self._get_state,
            f.GetDifferenceRequest: self._get_difference,
            f.GetChannelDifferenceRequest: self._get_channel_difference,
        }

    def _get_state(self, info: RequestInfo) -> TLObject:
        return self.w.state_of(self.w.me(info))

    def _get_difference(self, info: RequestInfo) -> TLObject:
        req: functions.updates.GetDifferenceRequest = info.request
        acc = self.w.me(info)
        cfg = self.w.config
        if req.pts >= acc.pts:
            return types.updates.DifferenceEmpty(date=to_datetime(self.w.now()), seq=0)
        start = max(req.pts, 0)
        behind = acc.pts - start
        limit = req.pts_total_limit
        if (limit is not None and behind > limit) or (start + 1) not in acc.pts_log:
            return types.updates.DifferenceTooLong(pts=acc.pts)
        end = min(acc.pts, start + cfg.difference_limit)
        msgs: list[Any] = [private_message(acc.messages[acc.pts_log[p]])
                           for p in range(start + 1, end + 1)]
        users = self.delivery.users_for(acc.user_id, msgs)
        chats = self.delivery.chats_for(msgs)
        if end < acc.pts:
            state = types.updates.State(pts=end, qts=0, date=msgs[-1].date, seq=0,
                                        unread_count=0)
            return types.updates.DifferenceSlice(
                new_messages=msgs, new_encrypted_messages=[], other_updates=[], chats=chats,
                users=users, intermediate_state=state)
        return types.updates.Difference(
            new_messages=msgs, new_encrypted_messages=[], other_updates=[], chats=chats,
            users=users, state=self.w.state_of(acc))

    def _get_channel_difference(self, info: RequestInfo) -> TLObject:
        req: functions.updates.GetChannelDifferenceRequest = info.request
        viewer = self.w.me(info).user_id
        hist = self.w.channel_of(req.channel)
        cfg = self.w.config
        timeout = cfg.channel_difference_timeout
        top = hist.top
        if req.pts > top:
            raise RpcErrorReply(400, "PERSISTENT_TIMESTAMP_INVALID")
        if req.pts <= 0:
            raise RpcErrorReply(400, "PERSISTENT_TIMESTAMP_EMPTY")
        if req.pts == top:
            return types.updates.ChannelDifferenceEmpty(pts=top, final=True, timeout=timeout)
        chat = hist.channel.to_tl()
        if top - req.pts > max(1, req.limit):
            newest = range(max(1, top - TOO_LONG_MESSAGES + 1), top + 1)
            msgs: list[Any] = [self.w.view(hist, i, viewer) for i in reversed(newest)]
            dialog = types.Dialog(
                peer=hist.channel.peer(), top_message=top, read_inbox_max_id=top,
                read_outbox_max_id=top, unread_count=0, unread_mentions_count=0,
                unread_reactions_count=0, unread_poll_votes_count=0,
                notify_settings=types.PeerNotifySettings(), pts=top)
            return types.updates.ChannelDifferenceTooLong(
                dialog=dialog, messages=msgs, chats=[chat],
                users=self.w.users_of(msgs, viewer), final=True, timeout=timeout)
        end = min(top, req.pts + min(cfg.channel_difference_page, max(1, req.limit)))
        msgs = [self.w.view(hist, i, viewer) for i in range(req.pts + 1, end + 1)]
        return types.updates.ChannelDifference(
            pts=end, new_messages=msgs, other_updates=[], chats=[chat],
            users=self.w.users_of(msgs, viewer), final=(end == top) or None, timeout=timeout)
