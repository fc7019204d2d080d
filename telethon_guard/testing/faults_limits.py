"""Telegram's rate limits: 420 FLOOD_WAIT / SLOWMODE_WAIT / FLOOD_PREMIUM_WAIT and 400 PEER_FLOOD.

Every limit counts *accepted* calls only (:meth:`Rule.commit`): like Telegram, a call refused
with a ``*_WAIT_X`` error is not executed and never fills a window. Once a limit fires the
scope stays blocked until the wait is over: every call before then gets the same error with the
seconds left (rounded up), and is not counted either.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Hashable, Iterable

from telethon_guard.testing._types import Action, ReplyError, RequestInfo
from telethon_guard.testing.faults_base import (
    EPS,
    PEER_FLOOD,
    SEND_METHODS,
    SERVICE_METHODS,
    TRANSFER_METHODS,
    MethodSpec,
    Rule,
    account_key,
    flood_wait,
    methods_of,
    peer_spec,
    positive,
    positive_int,
    premium_wait,
    send_peer,
    slowmode_wait,
    wait_seconds,
)

__all__ = ["FloodWindow", "GlobalRate", "PeerFlood", "PremiumFlood", "SlowMode"]


def _fixed_seconds(seconds: int | None) -> int | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
        raise ValueError(
            f"seconds must be an int >= 0 (the X of the error) or None, got {seconds!r}"
        )
    return seconds


class _SlidingWindow(Rule):
    """At most ``limit`` accepted calls per key in any ``window`` seconds, then a 420 error.

    ``seconds=None``: the error carries the true seconds left until the window admits one more
    call (ceil), and the key stays blocked until then. ``seconds=X``: the error says ``X`` and
    the key is blocked for exactly ``X`` seconds (then the window is checked again).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        seconds: int | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        self.limit = positive_int(limit, "limit")
        self.window = positive(window, "window")
        self.seconds = _fixed_seconds(seconds)
        self._hits: dict[Hashable, deque[float]] = {}
        self._blocked: dict[Hashable, float] = {}

    # -- what subclasses define --
    def key(self, info: RequestInfo) -> Hashable | None:
        """The window this request counts in, or ``None`` if the rule ignores it."""
        raise NotImplementedError

    def error(self, seconds: int) -> ReplyError:
        return flood_wait(seconds)

    # -- state --
    def blocked_until(self, key: Hashable) -> float | None:
        """Monotonic time until which ``key`` is blocked, if it is."""
        return self._blocked.get(key)

    def count(self, key: Hashable, now: float) -> int:
        """Accepted calls of ``key`` in the window ending at ``now``."""
        return len(self._prune(key, now))

    def _prune(self, key: Hashable, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        horizon = now - self.window + EPS
        while hits and hits[0] <= horizon:
            hits.popleft()
        if not hits:
            del self._hits[key]
        return hits

    def check(self, info: RequestInfo) -> list[Action]:
        key = self.key(info)
        if key is None:
            return []
        now = info.now
        until = self._blocked.get(key)
        if until is not None:
            if now < until - EPS:
                self.fired += 1
                return [self.error(wait_seconds(until - now))]
            del self._blocked[key]
        hits = self._prune(key, now)
        if len(hits) < self.limit:
            return []
        if self.seconds is None:
            # The window admits one more call once enough of the oldest calls have expired.
            until = hits[len(hits) - self.limit] + self.window
            seconds = wait_seconds(until - now)
        else:
            until = now + self.seconds
            seconds = self.seconds
        self._blocked[key] = until
        self.fired += 1
        return [self.error(seconds)]

    def commit(self, info: RequestInfo) -> None:
        key = self.key(info)
        if key is not None:
            self._hits.setdefault(key, deque()).append(info.now)

    def _limit_repr(self) -> str:
        fixed = "" if self.seconds is None else f", seconds={self.seconds}"
        return f"limit={self.limit}, window={self.window:g}{fixed}{self._scope_repr()}"


class FloodWindow(_SlidingWindow):
    """``420 FLOOD_WAIT_X`` per (account, method): ``limit`` accepted calls per ``window`` s.

    Imitates Telegram's per-account, per-method flood control (design-notes §3: "FLOOD_WAIT_X,
    scope account + method (some are per peer)"). The call that would exceed the window gets
    ``FLOOD_WAIT_X`` with X the true seconds (rounded up) until the sliding window admits a call,
    or the fixed ``seconds`` if given; the method stays flooded until then, and every call
    before then gets ``FLOOD_WAIT`` with the seconds left and is not executed or counted.

    ``method``: a TL name (``"messages.getHistory"``), a Telethon request class, or several
    (each with its own window). ``per_peer``: one window per (account, method, chat), for the
    per-chat send limits. Community-observed numbers (design-notes §3, not official): about 30
    ``messages.getHistory`` per 30 s per account -> ``FloodWindow("messages.getHistory", 30, 30)``;
    about 1 message per second into one private chat -> ``FloodWindow("messages.sendMessage", 1,
    1, per_peer=True)``; about 20 messages per minute into one group -> ``(..., 20, 60,
    per_peer=True)``.

    Raises ``ValueError`` for an unknown method, ``limit`` < 1, ``window`` <= 0 or a negative
    ``seconds``.
    """

    def __init__(
        self,
        method: MethodSpec,
        limit: int,
        window: float,
        *,
        seconds: int | None = None,
        per_peer: bool = False,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        methods = methods_of(method)
        if methods is None:
            raise ValueError("FloodWindow needs a method; use GlobalRate for every method")
        super().__init__(limit, window, seconds=seconds, account=account, dc=dc)
        self.methods = methods
        self.per_peer = per_peer

    def key(self, info: RequestInfo) -> Hashable | None:
        if info.method not in self.methods:
            return None
        if self.per_peer:
            peer = send_peer(info)
            if peer is None:
                return None
            return (account_key(info), info.method, peer)
        return (account_key(info), info.method)

    def __repr__(self) -> str:
        peer = ", per_peer=True" if self.per_peer else ""
        return f"FloodWindow({sorted(self.methods)!r}, {self._limit_repr()}{peer})"


class GlobalRate(_SlidingWindow):
    """``420 FLOOD_WAIT_X`` per account, every method: ``limit`` accepted calls per ``window`` s.

    Imitates Telegram's account-wide flood control (design-notes §3, FLOOD_WAIT row; e.g. the
    community-observed "bots about 30 messages per second overall" -> ``GlobalRate(30, 1)``).
    Same arithmetic and staying-blocked behaviour as :class:`FloodWindow`, but one window (and
    one block) per account for every method. MTProto service calls (``exclude``, by default
    ping and friends) neither count nor get refused.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        seconds: int | None = None,
        exclude: Iterable[str] = SERVICE_METHODS,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(limit, window, seconds=seconds, account=account, dc=dc)
        excluded = list(exclude)
        self.exclude = methods_of(excluded) if excluded else frozenset()

    def key(self, info: RequestInfo) -> Hashable | None:
        if self.exclude and info.method in self.exclude:
            return None
        return account_key(info)

    def __repr__(self) -> str:
        return f"GlobalRate({self._limit_repr()})"


class PremiumFlood(_SlidingWindow):
    """``420 FLOOD_PREMIUM_WAIT_X`` on file transfers per (account, DC) above ``rate`` parts/s.

    Imitates Telegram's transfer throttling of non-premium accounts (design-notes §3: scope
    "account + DC + file transfer"): accepted ``upload.getFile`` / ``upload.saveFilePart`` /
    ``upload.saveBigFilePart`` calls are counted per (account, DC) in a sliding ``window``
    (default 1 s, so at most ``floor(rate * window)`` parts per window); the part above it gets
    ``FLOOD_PREMIUM_WAIT_<seconds>`` and every transfer of that account on that DC is refused
    for exactly ``seconds`` (then counted again). Other methods and other DCs are unaffected.
    """

    def __init__(
        self,
        rate: float,
        seconds: int,
        *,
        window: float = 1.0,
        methods: MethodSpec = TRANSFER_METHODS,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        rate = positive(rate, "rate")
        window = positive(window, "window")
        if seconds is None:
            raise ValueError("PremiumFlood needs the seconds of FLOOD_PREMIUM_WAIT_X")
        limit = max(1, math.floor(rate * window + EPS))
        super().__init__(limit, window, seconds=seconds, account=account, dc=dc)
        self.rate = rate
        selected = methods_of(methods)
        self.methods = selected if selected is not None else TRANSFER_METHODS

    def key(self, info: RequestInfo) -> Hashable | None:
        if info.method not in self.methods:
            return None
        return (account_key(info), info.dc_id)

    def error(self, seconds: int) -> ReplyError:
        return premium_wait(seconds)

    def __repr__(self) -> str:
        return (
            f"PremiumFlood(rate={self.rate:g}, seconds={self.seconds}, "
            f"window={self.window:g}{self._scope_repr()})"
        )


class SlowMode(Rule):
    """``420 SLOWMODE_WAIT_X`` per (account, chat): one message every ``seconds`` per chat.

    Imitates a supergroup's slow mode (design-notes §3: "SLOWMODE_WAIT_X, scope account + chat;
    other chats unaffected"). The first accepted send (``messages.sendMessage`` /
    ``sendMedia`` / ``sendMultiMedia`` / ``forwardMessages``, into ``to_peer`` for forwards)
    into a chat is executed; a send into the same chat within ``seconds`` of it gets
    ``SLOWMODE_WAIT_X`` with X the seconds left (rounded up) and is not executed. Sends into
    other chats, and other accounts, are unaffected. ``peers``: only these chats (marked ids or
    ``"peer:<id>"`` keys); ``None`` = every chat. Telegram's slow-mode settings are 10, 30, 60,
    300, 900 and 3600 s; any positive number is accepted here.
    """

    def __init__(
        self,
        seconds: float,
        peers: Collection[int | str] | None = None,
        *,
        methods: MethodSpec = SEND_METHODS,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        self.seconds = positive(seconds, "seconds")
        if peers is not None and isinstance(peers, (str, int)):
            peers = [peers]
        self.peers = None if peers is None else frozenset(peer_spec(p) for p in peers)
        selected = methods_of(methods)
        self.methods = selected if selected is not None else SEND_METHODS
        self._last: dict[Hashable, float] = {}

    def _key(self, info: RequestInfo) -> Hashable | None:
        if info.method not in self.methods:
            return None
        peer = send_peer(info)
        if peer is None or (self.peers is not None and peer not in self.peers):
            return None
        return (account_key(info), peer)

    def check(self, info: RequestInfo) -> list[Action]:
        key = self._key(info)
        if key is None:
            return []
        last = self._last.get(key)
        if last is None:
            return []
        until = last + self.seconds
        if info.now < until - EPS:
            self.fired += 1
            return [slowmode_wait(wait_seconds(until - info.now))]
        return []

    def commit(self, info: RequestInfo) -> None:
        key = self._key(info)
        if key is not None:
            self._last[key] = info.now

    def __repr__(self) -> str:
        peers = "" if self.peers is None else f", peers={sorted(self.peers)!r}"
        return f"SlowMode({self.seconds:g}{peers}{self._scope_repr()})"


class PeerFlood(Rule):
    """``400 PEER_FLOOD`` for every send of an account after its first ``after`` accepted sends.

    Imitates Telegram's spam limit on an account that messages too many people (design-notes §3:
    "PEER_FLOOD (400), scope account, sending: never retry"). It does not expire (Telegram's
    lasts hours to days); :meth:`FaultPlan.clear` removes it.
    """

    def __init__(
        self,
        after: int = 20,
        *,
        methods: MethodSpec = SEND_METHODS,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"after must be an int >= 0, got {after!r}")
        self.after = after
        selected = methods_of(methods)
        self.methods = selected if selected is not None else SEND_METHODS
        self._sent: dict[Hashable, int] = {}

    def sent(self, account: int) -> int:
        """Accepted sends counted for ``account`` (a user id)."""
        return self._sent.get(account, 0)

    def check(self, info: RequestInfo) -> list[Action]:
        if info.method not in self.methods:
            return []
        if self._sent.get(account_key(info), 0) >= self.after:
            self.fired += 1
            return [PEER_FLOOD]
        return []

    def commit(self, info: RequestInfo) -> None:
        if info.method in self.methods:
            key = account_key(info)
            self._sent[key] = self._sent.get(key, 0) + 1

    def __repr__(self) -> str:
        return f"PeerFlood(after={self.after}{self._scope_repr()})"
