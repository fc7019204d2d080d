"""Scope any request rule to chosen chats: :class:`OnPeers`.

A rule's own scope is an account and a DC; ``OnPeers`` adds "only requests about these chats"
around any request rule, e.g. a FLOOD_WAIT on one channel's ``updates.getChannelDifference``
while every other channel's difference is answered::

    news = utils.get_peer_id(types.PeerChannel(server.world.channel_id("news")))
    OnPeers(news, ErrorOnCalls("updates.getChannelDifference", 420, "FLOOD_WAIT_6"))

The chat of a request is ``RequestInfo.peer`` (its ``peer`` or ``channel`` field, spelled as
:func:`telethon_guard._tl.peer_key`, marked ids: ``-100...`` channels, ``-id`` basic groups,
user ids). Requests without a chat (``updates.getDifference``, ``help.getConfig``) never match.
"""

from __future__ import annotations

import random
from collections.abc import Collection

from telethon_guard.testing._types import Action, ConnectInfo, RequestInfo
from telethon_guard.testing.faults_base import Rule, peer_spec

__all__ = ["OnPeers"]


class OnPeers(Rule):
    """``rule``, applied only to requests about ``peers`` (marked ids or ``"peer:<id>"``).

    ``fired`` is the wrapped rule's count. Connection hooks and timed actions have no chat,
    so the wrapped rule's ``on_connect`` / ``due`` are not consulted: wrap request rules.

    Raises:
        ValueError: ``peers`` empty or not marked ids; ``rule`` not a request ``Rule``.
    """

    def __init__(self, peers: Collection[int | str] | int | str, rule: Rule) -> None:
        if not isinstance(rule, Rule):
            raise ValueError(f"OnPeers wraps a Rule, got {rule!r}")
        if rule.timed:
            raise ValueError(f"OnPeers cannot scope timed rules (they have no chat): {rule!r}")
        if isinstance(peers, (int, str)):
            peers = [peers]
        keys = frozenset(peer_spec(p) for p in peers)
        if not keys:
            raise ValueError("OnPeers needs at least one peer")
        super().__init__(account=rule.account, dc=rule.dc)
        self.peers = keys
        self.rule = rule

    @property
    def fired(self) -> int:
        """How many times the wrapped rule acted."""
        return self.rule.fired

    @fired.setter
    def fired(self, value: int) -> None:
        # Rule.__init__ sets 0; the count lives on the wrapped rule.
        pass

    def bind(self, rng: random.Random, t0: float) -> None:
        self.rule.bind(rng, t0)

    def applies(self, info: RequestInfo) -> bool:
        return info.peer in self.peers and self.rule.applies(info)

    def observe(self, info: RequestInfo) -> None:
        self.rule.observe(info)

    def check(self, info: RequestInfo) -> list[Action]:
        return self.rule.check(info)

    def commit(self, info: RequestInfo) -> None:
        self.rule.commit(info)

    def on_connect(self, info: ConnectInfo) -> Action | None:
        return None

    def __repr__(self) -> str:
        return f"OnPeers({sorted(self.peers)!r}, {self.rule!r})"
