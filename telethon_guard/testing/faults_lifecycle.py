"""Connection lifecycle faults: new and open connections failing, the init request, login
floods that grow per attempt, and a server clock that is off.

These are the ways a client ends up wedged that issue 10 describes; each rule but
:class:`LoginFlood` works for a period (a :class:`~telethon_guard.testing.faults_base.TimeWindow`:
``start`` seconds after plan start, for ``duration`` seconds, ``None`` = for ever) and every
rule can be scoped to one ``dc``::

    OnNewConnections("close", duration=3)          # every new connection closed right after
                                                   # its first packet, for 3 s
    OnNewConnections("stall", duration=5)          # TCP accepted, never a byte read or sent
    OnNewConnections("reset", after_packets=0)     # RST on accept
    OnNewConnections("refuse", duration=5)         # 4 raw bytes of -429, then close
    OnNewConnections("down", duration=5)           # the port is closed: ECONNREFUSED
    OnLiveConnections("silence", start=plan.now()) # half-open: connections open now go
                                                   # silent for ever; new connections work
    OnLiveConnections("silence", start=plan.now(), duration=10, conn_ids={3})
    OnLiveConnections("stall", start=2, duration=5)   # nothing read or sent for 5 s, then
                                                      # the queued replies are delivered
    OnLiveConnections("reset", start=2)            # every open connection reset at t=2 s
    OnInit(Stall())                                # invokeWithLayer(initConnection(...)) stalls
    OnInit(flood_wait(30), times=1)                # the init request answered FLOOD_WAIT_30
    LoginFlood(1658, factor=2)                     # auth.sendCode / signIn /
                                                   # importBotAuthorization: 1658, 3316... s
    ClockSkew(60, start=2)                         # server clock 60 s ahead from t=2 s

All times are the server's monotonic clock (``time.monotonic()``), in seconds, relative to
the plan's start (:meth:`FaultPlan.now` gives "now" for rules added while the server runs).
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable
from typing import Literal, NamedTuple

from telethon_guard.testing._types import (
    Action,
    CloseConnection,
    ConnectInfo,
    LinkFault,
    ListenerDown,
    RequestInfo,
    Stall,
)
from telethon_guard.testing.faults_base import (
    ACTION_TYPES,
    EPS,
    CallSelector,
    MethodSpec,
    Rule,
    TimeWindow,
    account_key,
    flood_wait,
    methods_of,
    positive,
    positive_int,
)
from telethon_guard.testing.faults_transport import transport_error

__all__ = [
    "LOGIN_METHODS",
    "ClockSkew",
    "LoginAttempt",
    "LoginFlood",
    "OnInit",
    "OnLiveConnections",
    "OnNewConnections",
]

NewHow = Literal["close", "reset", "stall", "refuse", "down"]
LiveHow = Literal["silence", "stall", "close", "reset"]

LOGIN_METHODS: frozenset[str] = frozenset(
    {"auth.sendCode", "auth.signIn", "auth.importBotAuthorization"}
)
"""The login requests (``start()`` sends them); Telegram floods them per phone / bot token."""


class _Windowed(Rule):
    """A rule that acts during :attr:`window` (seconds relative to the plan's start)."""

    window: TimeWindow

    def bind(self, rng: random.Random, t0: float) -> None:
        super().bind(rng, t0)
        self.window.bind(t0)


class OnNewConnections(_Windowed):
    """New TCP connections opened during the window fail ``how``:

    * ``"close"``: accepted and read, but closed (FIN) once ``after_packets`` transport packets
      have arrived, the last one unanswered (``after_packets=0``: closed on accept) -- "Telegram
      closes every new connection right after the first packet" (issue 10);
    * ``"reset"``: the same with a TCP reset (RST) instead of a close;
    * ``"stall"``: accepted, then never a byte read or sent on it, for ever (a SYN-accepting
      but dead server); the client only notices through its own timeout;
    * ``"refuse"``: the transport error ``-code`` (4 raw bytes with ``mode="raw"``, or in the
      connection's framing) at once, then closed (Telegram refusing under load, design-notes §3);
    * ``"down"``: the DC's port stops listening, so the OS refuses the TCP connection
      (``ECONNREFUSED``: a DC that is down or unreachable); open connections are untouched.
      Added to a running server with a ``start`` already passed, the port is closed before
      ``faults.add(...)`` returns; a later ``start`` is applied on the server's next tick
      (within ~10 ms). The port listens again when the window ends (``duration=None``: never).

    Connections opened before or after the window are served normally. ``fired`` counts the
    connections failed (for ``"down"``: 1 when the port closes; the OS refuses the rest, the
    server never sees them). Raises ``ValueError`` for an unknown ``how`` or bad numbers.
    """

    def __init__(
        self,
        how: NewHow = "close",
        *,
        start: float = 0.0,
        duration: float | None = None,
        after_packets: int = 1,
        code: int = 429,
        mode: str = "raw",
        dc: int | None = None,
    ) -> None:
        super().__init__(dc=dc)
        if how not in ("close", "reset", "stall", "refuse", "down"):
            raise ValueError(
                f"how must be 'close', 'reset', 'stall', 'refuse' or 'down', got {how!r}"
            )
        if isinstance(after_packets, bool) or not isinstance(after_packets, int) or (
            after_packets < 0
        ):
            raise ValueError(f"after_packets must be an int >= 0, got {after_packets!r}")
        self.how: NewHow = how
        self.window = TimeWindow(start, duration)
        self.after_packets = after_packets
        self.action: Action
        if how == "close":
            self.action = CloseConnection(abort=False, after_packets=after_packets)
        elif how == "reset":
            self.action = CloseConnection(abort=True, after_packets=after_packets)
        elif how == "stall":
            self.action = Stall()
        elif how == "down":
            self.action = ListenerDown(duration if duration is None else float(duration))
        else:
            self.action = transport_error(code, mode)
        self.timed = how == "down"
        self._down_sent = False

    def on_connect(self, info: ConnectInfo) -> Action | None:
        if self.how == "down" or not self.window.active(info.now):
            return None  # "down": a connection accepted before the port closed is served
        self.fired += 1
        return self.action

    def due(self, now: float) -> list[tuple[float, int | None, Action]]:
        if self.how != "down" or self._down_sent or now < self.window.begin - EPS:
            return []
        self._down_sent = True
        end = self.window.end
        if end is not None and now >= end - EPS:
            return []  # polled only after the window: nothing to do
        self.fired += 1
        seconds = None if end is None else end - now
        return [(self.window.begin, self.dc, ListenerDown(seconds))]

    def __repr__(self) -> str:
        extra = f", after_packets={self.after_packets}" if self.how in ("close", "reset") else ""
        return f"OnNewConnections({self.how!r}, {self.window!r}{extra}{self._scope_repr()})"


class OnLiveConnections(_Windowed):
    """Connections already open when the window starts fail ``how``; new ones work:

    * ``"silence"``: half-open (a NAT timeout, a silent DC; issue 10): the TCP connection stays
      open, every packet the client sends is read and discarded (never executed, logged as a
      ``"silenced"`` event), nothing is sent on it (no replies, acks, pongs or pushed updates)
      until the window ends, then it works again (``duration=None``: silent for ever);
      requests already running when it starts are executed, their replies dropped;
    * ``"stall"``: nothing is read (the client's TCP buffers fill) and nothing is sent during
      the window; when it ends the connection resumes and delivers what was queued (a network
      stall); ``duration=None``: for ever;
    * ``"close"`` / ``"reset"``: every open connection closed (FIN) / reset (RST) once, at
      ``start`` (no ``duration``, no ``conn_ids``).

    "Open when the window starts" means opened before ``start``: in a plan given to the server
    at construction with ``start=0`` no connection is open yet, so give a ``start`` after your
    clients connect, or add the rule while the server runs with ``start=plan.now()``.
    ``conn_ids``: silence / stall only these connections (the ``conn_id`` of the server log's
    ``"opened"`` entries), whenever they were opened; ``account``: only connections whose
    auth key is logged in as this user id (one client of several). ``fired`` counts the
    connections hit (:attr:`hit` lists them for silence / stall). Raises ``ValueError`` for an
    unknown ``how``, a ``duration``, ``conn_ids`` or ``account`` with close / reset, or bad
    numbers.
    """

    def __init__(
        self,
        how: LiveHow = "silence",
        *,
        start: float = 0.0,
        duration: float | None = None,
        conn_ids: Iterable[int] | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        if how not in ("silence", "stall", "close", "reset"):
            raise ValueError(f"how must be 'silence', 'stall', 'close' or 'reset', got {how!r}")
        ids: frozenset[int] | None = None
        if conn_ids is not None:
            ids = frozenset(conn_ids)
            if not ids or any(isinstance(c, bool) or not isinstance(c, int) for c in ids):
                raise ValueError(f"conn_ids must be connection ids (ints), got {conn_ids!r}")
        if how in ("close", "reset") and (
            duration is not None or ids is not None or account is not None
        ):
            raise ValueError(
                f"{how!r} hits every open connection once at start: it takes no duration, "
                "conn_ids or account (add OnNewConnections to fail new connections a while)"
            )
        self.how: LiveHow = how
        self.link = how in ("silence", "stall")
        self.timed = how in ("close", "reset")
        self.window = TimeWindow(start, duration)
        self.conn_ids = ids
        self.hit: set[int] = set()
        self._sent = False

    def link_fault(
        self, now: float, conn_id: int, dc_id: int, opened_at: float
    ) -> LinkFault | None:
        window = self.window
        if not window.active(now):
            return None
        if self.conn_ids is not None:
            if conn_id not in self.conn_ids:
                return None
        elif opened_at >= window.begin - EPS:
            return None  # opened during the window: a new connection works
        if conn_id not in self.hit:
            self.hit.add(conn_id)
            self.fired += 1
        return LinkFault("silence" if self.how == "silence" else "stall", window.end)

    def due(self, now: float) -> list[tuple[float, int | None, Action]]:
        if self._sent or self.how not in ("close", "reset") or now < self.window.begin - EPS:
            return []
        self._sent = True
        self.fired += 1
        return [(self.window.begin, self.dc, CloseConnection(abort=self.how == "reset"))]

    def __repr__(self) -> str:
        ids = "" if self.conn_ids is None else f", conn_ids={sorted(self.conn_ids)}"
        return f"OnLiveConnections({self.how!r}, {self.window!r}{ids}{self._scope_repr()})"


class OnInit(_Windowed):
    """Fault the connection's init request: ``invokeWithLayer(initConnection(query))``, which
    Telethon sends first on every connection (``help.getConfig`` in ``connect()``).

    ``action``: ``Stall()`` (default: the connection goes half-open on the init, so
    ``connect()`` waits for an answer that never comes), ``flood_wait(X)`` (420 FLOOD_WAIT_X),
    ``Delay(s)`` (the init answered ``s`` seconds late, the connection otherwise served),
    ``ResetConnection()``, ``CloseConnection()``, ``DropReplies``' ``DropReply()``...
    ``times``: at most this many init requests; ``start`` / ``duration``: only in that window.
    Requests without the initConnection wrapper are never touched.
    """

    def __init__(
        self,
        action: Action | None = None,
        *,
        times: int | None = None,
        start: float = 0.0,
        duration: float | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        if action is None:
            action = Stall()
        if not isinstance(action, ACTION_TYPES):
            raise ValueError(
                f"not a fault action: {action!r}; pass an action object such as Stall(), "
                "flood_wait(5), Delay(1.0), ResetConnection() or CloseConnection() "
                "(from telethon_guard.testing.faults)")
        self.action: Action = action
        self.selector = CallSelector(times=times)
        self.window = TimeWindow(start, duration)

    def check(self, info: RequestInfo) -> list[Action]:
        if not info.init_connection or not self.window.active(info.now):
            return []
        if not self.selector.selects(self.fired + 1, self.fired, self.rng):
            return []
        self.fired += 1
        return [self.action]

    def __repr__(self) -> str:
        times = "" if self.selector.times is None else f", times={self.selector.times}"
        return f"OnInit({self.action!r}{times}, {self.window!r}{self._scope_repr()})"


class LoginAttempt(NamedTuple):
    """One login request :class:`LoginFlood` saw: when (monotonic s), what, for whom (the
    phone number, bot token or account key), and the FLOOD_WAIT seconds answered (``None``:
    let through to the world)."""

    time: float
    method: str
    login: Hashable
    flood_wait: int | None


def login_of(info: RequestInfo) -> Hashable:
    """Who a login request is for: its ``phone_number`` or ``bot_auth_token`` (Telegram floods
    logins per phone / bot, whatever the auth key), else the caller's account key."""
    request = info.request
    token = getattr(request, "bot_auth_token", None)
    if isinstance(token, str) and token:
        return ("bot", token)
    phone = getattr(request, "phone_number", None)
    if isinstance(phone, str) and phone:
        return ("phone", phone.replace(" ", "").lstrip("+"))
    return account_key(info)


class LoginFlood(Rule):
    """Login requests answered with a FLOOD_WAIT that grows with every attempt.

    Per (method, phone number / bot token): the first ``after`` attempts go through; every
    later attempt gets ``420 FLOOD_WAIT_X`` with ``X = seconds * factor ** n`` (``n`` = floods
    already given for that login, rounded up, at most ``max_seconds``), and the login is
    blocked that long. An attempt after a block has run out goes through (the client waited),
    the next one is flooded again, longer. With the defaults a bot whose supervisor restarts it
    every few seconds gets ``FLOOD_WAIT_1658``, ``3316``, ``6632``... -- modelled on the public
    reports of ``auth.importBotAuthorization`` floods of 1,658-3,135 s after crash loops
    (issue 10), ``max_seconds`` on the 74,089 s ``start()`` sleep reported there (one day).

    ``methods``: default :data:`LOGIN_METHODS`. :attr:`attempts` records every attempt the rule
    saw (the server log has them too: ``server.log.requests("auth.importBotAuthorization")``).
    Raises ``ValueError`` for bad numbers (``factor`` < 1, ``max_seconds`` < ``seconds``).
    """

    def __init__(
        self,
        seconds: int = 1658,
        *,
        factor: float = 2.0,
        max_seconds: int = 86400,
        after: int = 0,
        methods: MethodSpec = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        self.seconds = positive_int(seconds, "seconds")
        self.factor = positive(factor, "factor")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1 (floods grow), got {factor!r}")
        self.max_seconds = positive_int(max_seconds, "max_seconds")
        if self.max_seconds < self.seconds:
            raise ValueError(
                f"max_seconds must be >= seconds ({seconds}), got {max_seconds!r}"
            )
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"after must be an int >= 0, got {after!r}")
        self.after = after
        chosen = None if methods is None else methods_of(methods)
        self.methods: frozenset[str] = LOGIN_METHODS if chosen is None else chosen
        self.attempts: list[LoginAttempt] = []
        self._floods: dict[Hashable, int] = {}  # login key -> floods given
        self._until: dict[Hashable, float] = {}  # login key -> blocked until (monotonic)
        self._through: dict[Hashable, int] = {}  # login key -> attempts let through

    def next_wait(self, floods_given: int) -> int:
        """The X of the next FLOOD_WAIT after ``floods_given`` floods (seconds)."""
        grown = self.seconds * self.factor ** min(floods_given, 64)
        return int(min(self.max_seconds, math.ceil(grown - EPS)))

    def check(self, info: RequestInfo) -> list[Action]:
        if info.method not in self.methods:
            return []
        key = (info.method, login_of(info))
        until = self._until.get(key)
        if until is not None and info.now >= until - EPS:
            del self._until[key]  # waited out: this one goes through
            self.attempts.append(LoginAttempt(info.now, info.method, key[1], None))
            return []
        if until is None and self._through.get(key, 0) < self.after:
            self.attempts.append(LoginAttempt(info.now, info.method, key[1], None))
            return []
        floods = self._floods.get(key, 0)
        seconds = self.next_wait(floods)
        self._floods[key] = floods + 1
        self._until[key] = info.now + seconds
        self.fired += 1
        self.attempts.append(LoginAttempt(info.now, info.method, key[1], seconds))
        return [flood_wait(seconds)]

    def commit(self, info: RequestInfo) -> None:
        if info.method in self.methods:
            key = (info.method, login_of(info))
            self._through[key] = self._through.get(key, 0) + 1

    def __repr__(self) -> str:
        methods = ""
        if self.methods != LOGIN_METHODS:
            methods = f", methods={sorted(self.methods)!r}"
        return (
            f"LoginFlood({self.seconds}, factor={self.factor:g}, max_seconds={self.max_seconds}, "
            f"after={self.after}{methods}{self._scope_repr()})"
        )


class ClockSkew(_Windowed):
    """The server's clock is ``seconds`` off (positive: ahead) during the window.

    It moves every msg_id the server sends (and ``server_time`` in the key exchange and
    ``future_salts``), so Telethon's checks in ``telethon/network/mtprotostate.py`` apply: a
    message more than 30 s newer than the client's clock is ignored as "very new", one more
    than 300 s older as "very old" (``MSG_TOO_NEW_DELTA`` / ``MSG_TOO_OLD_DELTA``); ten in a row
    raise ``SecurityError``, which Telethon's receive loop logs and ignores (no reconnect: the
    calls wait for ever). Telethon learns the offset only from
    ``server_time`` of a new auth key, from a ``bad_msg_notification`` 16 / 17, or from a
    ``bad_server_salt`` that is the first message of a fresh sender (a new client) -- so a
    skew that starts while a client is connected (``start`` > 0, or added at runtime) and
    stays within what the server accepts of the client's msg_ids is what leaves its replies
    ignored.

    ``judge_client=True``: the server also checks the client's msg_ids with the skewed clock
    (``bad_msg_notification`` 16 / 17 when they are more than 300 s behind / 30 s ahead, which
    tells Telethon the right time); ``False``: only what the server sends is skewed, so a
    negative skew plays replies that arrive "very old" after a client's event-loop stall.
    Raises ``ValueError`` for a zero or non-finite ``seconds``.
    """

    skews = True

    def __init__(
        self,
        seconds: float,
        *,
        start: float = 0.0,
        duration: float | None = None,
        judge_client: bool = True,
        dc: int | None = None,
    ) -> None:
        super().__init__(dc=dc)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or (
            not math.isfinite(seconds) or seconds == 0
        ):
            raise ValueError(f"seconds must be a non-zero finite number, got {seconds!r}")
        self.seconds = float(seconds)
        self.window = TimeWindow(start, duration)
        self.judge_client = bool(judge_client)

    def clock_offset(self, now: float, dc_id: int, judging_client: bool) -> float | None:
        if judging_client and not self.judge_client:
            return None
        if not self.window.active(now):
            return None
        return self.seconds

    def __repr__(self) -> str:
        judge = "" if self.judge_client else ", judge_client=False"
        return f"ClockSkew({self.seconds:+g}, {self.window!r}{judge}{self._scope_repr()})"
