"""Telegram's limits and faults, scripted on the test server: the :class:`FaultPlan`.

The server asks the plan what to do with every new connection (:meth:`FaultPlan.on_connect`)
and every decoded request (:meth:`FaultPlan.on_request`), and polls :meth:`FaultPlan.due` for
timed script actions. The plan never touches sockets: it returns the actions of
:mod:`telethon_guard.testing._types` and the server carries them out.

A plan is an ordered list of small rules (rule order = evaluation order; the first terminal
action wins), deterministic given its ``seed``::

    plan = FaultPlan(
        FloodWindow("messages.getHistory", limit=30, window=30),  # FLOOD_WAIT with seconds left
        SlowMode(10),                                             # SLOWMODE_WAIT per chat
        ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_22", every=2),
        Transport429Storm(start=2, duration=5),                   # -429, refuse for 5 s
        seed=1,
    )
    plan = FaultPlan.script("at 2s: transport 429 refuse 5s",
                            "messages.getHistory calls 31-40: FLOOD_WAIT_7")

Cookbook (the scenarios of issue 3, each a rule or two; ``m`` is a TL method name)::

    Transport429Storm(start=0, duration=10)          # -429 now, refuse connections 10 s
    Transport429Storm(0, 60, account=uid)            # one account's requests get -429, 60 s
    AlwaysTransportError(429, "raw", duration=30)    # 4 raw bytes of -429, every conn, 30 s
    AlwaysTransportError(404, "raw")                 # unknown auth key, every connection
    ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_22", every=2)
    OnCalls(m, 1, flood_wait(120))                   # FLOOD_WAIT_120 on the first call
    PremiumFlood(8, 6)                               # FLOOD_PREMIUM_WAIT_6 above 8 parts/s
    SlowMode(60, peers=[chat_a_marked_id])           # slow mode 60 s in chat A only
    ErrorOnCalls(m, 420, "FLOOD_WAIT_0", times=4)    # four times, then OK
    ErrorOnCalls(m, 500, "RPC_CALL_FAIL", times=7)
    ErrorOnCalls(m, -503, "Timeout", times=2)
    FloodWindow("messages.getHistory", 30, 30, seconds=7)          # 31st call in 30 s
    ResetOn("messages.getHistory", calls=40, after_execute=True)   # reset after call 40
    FloodWindow("contacts.resolveUsername", 50, 86400, seconds=48038)
    ResetOn("messages.sendMessage", calls=1, after_execute=True)   # executed, reply lost
    DropReplies(m, calls=1)                          # a reply never sent
    PeerFlood(after=20)

Connection lifecycle (issue 10; :mod:`~telethon_guard.testing.faults_lifecycle`)::

    OnNewConnections("close", duration=3)            # new connections closed after their
                                                     # first packet for 3 s: connect() fails
    OnNewConnections("stall", start=2, duration=5)   # TCP accepted, never answered
    OnNewConnections("reset", after_packets=0)       # RST on accept
    OnNewConnections("refuse", code=429)             # -429 at once, then close
    OnNewConnections("down", duration=5)             # port closed: connect() gets ECONNREFUSED
    OnLiveConnections("silence", start=plan.now())   # connections open now go half-open
                                                     # (silent both ways) for ever; new work
    OnLiveConnections("silence", start=plan.now(), duration=10, conn_ids={3})
    OnLiveConnections("stall", start=2, duration=5)  # nothing read or sent 5 s, then late
    OnLiveConnections("reset", start=2)              # every open connection reset at t=2 s
    OnInit(Stall())                                  # connect() waits for an init answer
    OnInit(flood_wait(30), times=1)                  # init answered FLOOD_WAIT_30 once
    LoginFlood(1658, factor=2)                       # login FLOOD_WAIT 1658, 3316, 6632... s
    ClockSkew(60, start=plan.now())                  # server 60 s ahead: replies "very new"
    ClockSkew(-400, judge_client=False)              # replies "very old" (a loop stall)

The server asks the plan about open connections through :meth:`FaultPlan.link_fault` (per
packet read and message sent, only while a rule can answer) and :meth:`FaultPlan.clock_offset`
(per msg_id it makes, only while a skew rule exists).

All times are the server's monotonic clock (``time.monotonic()``), in seconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from telethon_guard.testing._types import (
    Action,
    CloseConnection,
    ConnectInfo,
    Delay,
    DropReply,
    LinkFault,
    ListenerDown,
    ReplyError,
    RequestInfo,
    ResetConnection,
    Stall,
    TransportError,
)
from telethon_guard.testing.faults_base import (
    INTERNAL,
    PEER_FLOOD,
    RPC_CALL_FAIL,
    RPC_MCGET_FAIL,
    SEND_METHODS,
    SERVICE_METHODS,
    TIMEOUT_503,
    TRANSFER_METHODS,
    CallSelector,
    Rule,
    TimeWindow,
    executes,
    flood_wait,
    is_terminal,
    premium_wait,
    slowmode_wait,
)
from telethon_guard.testing.faults_calls import (
    DropReplies,
    ErrorOnCalls,
    Latency,
    OnCalls,
    ResetOn,
    StallOn,
)
from telethon_guard.testing.faults_lifecycle import (
    LOGIN_METHODS,
    ClockSkew,
    LoginAttempt,
    LoginFlood,
    OnInit,
    OnLiveConnections,
    OnNewConnections,
)
from telethon_guard.testing.faults_limits import (
    FloodWindow,
    GlobalRate,
    PeerFlood,
    PremiumFlood,
    SlowMode,
)
from telethon_guard.testing.faults_peers import OnPeers
from telethon_guard.testing.faults_script import At, parse_script
from telethon_guard.testing.faults_transport import (
    AlwaysTransportError,
    Transport429OnRate,
    Transport429Storm,
    transport_error,
)

__all__ = [
    "INTERNAL",
    "LOGIN_METHODS",
    "PEER_FLOOD",
    "RPC_CALL_FAIL",
    "RPC_MCGET_FAIL",
    "SEND_METHODS",
    "SERVICE_METHODS",
    "TIMEOUT_503",
    "TRANSFER_METHODS",
    "Action",
    "AlwaysTransportError",
    "At",
    "CallSelector",
    "ClockSkew",
    "CloseConnection",
    "Delay",
    "DropReplies",
    "DropReply",
    "ErrorOnCalls",
    "FaultPlan",
    "FloodWindow",
    "GlobalRate",
    "Latency",
    "LinkFault",
    "ListenerDown",
    "LoginAttempt",
    "LoginFlood",
    "OnCalls",
    "OnInit",
    "OnLiveConnections",
    "OnNewConnections",
    "OnPeers",
    "PeerFlood",
    "PremiumFlood",
    "ReplyError",
    "ResetConnection",
    "ResetOn",
    "Rule",
    "SlowMode",
    "Stall",
    "StallOn",
    "TimeWindow",
    "Transport429OnRate",
    "Transport429Storm",
    "TransportError",
    "flood_wait",
    "parse_script",
    "premium_wait",
    "slowmode_wait",
    "transport_error",
]


class FaultPlan:
    """An ordered, mutable list of :class:`Rule` objects the server consults.

    ``seed``: every random draw (probability rules, random latency) comes from one
    ``random.Random(seed)`` owned by the plan, so the same requests in the same order get the
    same faults. ``rules`` are evaluated in the order given (then in the order added).

    Script times are relative to :meth:`start` (called by the server when it starts); if the
    server never calls it, the plan starts at the ``now`` of the first hook it sees.
    """

    def __init__(self, *rules: Rule, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.rng = random.Random(seed)
        self._rules: list[Rule] = []
        self._t0: float | None = None
        self.has_link_faults = False
        """True if some rule may silence / stall open connections (:meth:`link_fault`)."""
        self.has_clock_skew = False
        """True if some rule may move the server's clock (:meth:`clock_offset`)."""
        self._link_rules: tuple[Rule, ...] = ()
        self._skew_rules: tuple[Rule, ...] = ()
        self._on_change: Callable[[], None] | None = None
        self.add(*rules)

    @classmethod
    def script(cls, *lines: str, seed: int = 0) -> FaultPlan:
        """A plan from the text form of :mod:`telethon_guard.testing.faults_script`, e.g.
        ``FaultPlan.script("at 2s: transport 429 refuse 5s",
        "messages.getHistory calls 31-40: FLOOD_WAIT_7")``. Raises ``ValueError`` naming a bad line.
        """
        return cls(*parse_script(lines), seed=seed)

    # ---- building ----------------------------------------------------------------------
    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in evaluation order."""
        return tuple(self._rules)

    def add(self, *rules: Rule) -> None:
        """Append rules (evaluated after the existing ones). Raises ``TypeError`` for non-rules."""
        for rule in rules:
            if not isinstance(rule, Rule):
                raise TypeError(f"FaultPlan takes Rule objects, got {rule!r}")
        for rule in rules:
            rule.bind(self.rng, self._t0 if self._t0 is not None else 0.0)
            self._rules.append(rule)
        self._index()
        if rules and self._on_change is not None:
            self._on_change()  # a running server applies timed actions now due (e.g. "down")

    def watch(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback()`` after every :meth:`add` (the server uses it to apply a timed
        action that is due at once, such as ``OnNewConnections("down")``, before the next
        connection is accepted). ``None`` stops watching."""
        self._on_change = callback

    def clear(self) -> None:
        """Remove every rule (the server then runs every request normally)."""
        self._rules.clear()
        self._index()

    def _index(self) -> None:
        self._link_rules = tuple(rule for rule in self._rules if rule.link)
        self._skew_rules = tuple(rule for rule in self._rules if rule.skews)
        self.has_link_faults = bool(self._link_rules)
        self.has_clock_skew = bool(self._skew_rules)

    # ---- the server's interface --------------------------------------------------------
    @property
    def started_at(self) -> float | None:
        """Monotonic time of :meth:`start`, or ``None`` before."""
        return self._t0

    def start(self, now: float) -> None:
        """The server started at monotonic ``now``; timed script actions count from here."""
        self._t0 = now
        for rule in self._rules:
            rule.bind(self.rng, now)

    def now(self) -> float:
        """Seconds since :meth:`start` on the monotonic clock (0.0 before): the ``start=`` to
        give a rule added at runtime that should act from now on, e.g.
        ``server.faults.add(OnLiveConnections("silence", start=server.faults.now()))``."""
        return 0.0 if self._t0 is None else max(0.0, time.monotonic() - self._t0)

    def _ensure_started(self, now: float) -> None:
        if self._t0 is None:
            self.start(now)

    def on_connect(self, info: ConnectInfo) -> Action | None:
        """A new TCP connection: ``None`` to serve it, else a :class:`TransportError` to refuse.

        The first rule that refuses wins.
        """
        self._ensure_started(info.now)
        for rule in self._rules:
            if rule.dc is not None and rule.dc != info.dc_id:
                continue
            action = rule.on_connect(info)
            if action is not None:
                return action
        return None

    def on_request(self, info: RequestInfo) -> list[Action]:
        """What to do with one request: ``Delay`` actions then at most one terminal action.

        ``[]`` means "execute normally". Rules run in order; the first terminal action
        (``ReplyError``, ``DropReply``, ``ResetConnection``, ``TransportError``, ``Stall``)
        ends the evaluation. If the request will be executed (no terminal action, a
        ``DropReply`` or ``ResetConnection(after_execute=True)``) every in-scope rule's
        :meth:`Rule.commit` records it, so refused calls never fill rate windows.
        """
        self._ensure_started(info.now)
        rules = [rule for rule in self._rules if rule.applies(info)]
        for rule in rules:
            rule.observe(info)
        delays: list[Action] = []
        terminal: Action | None = None
        for rule in rules:
            for action in rule.check(info):
                if not is_terminal(action):
                    delays.append(action)
                elif terminal is None:
                    terminal = action
            if terminal is not None:
                break
        if executes(terminal):
            for rule in rules:
                rule.commit(info)
        return delays if terminal is None else [*delays, terminal]

    def link_fault(
        self, now: float, conn_id: int, dc_id: int, opened_at: float,
        account: int | None = None,
    ) -> LinkFault | None:
        """Whether open connection ``conn_id`` on DC ``dc_id`` (opened at monotonic
        ``opened_at``, used by ``account``: its user id, ``None`` before login or before its
        first encrypted message) is silenced or stalled at ``now``: the first rule that says
        so wins. The server asks for every packet it reads and every message it sends on it."""
        self._ensure_started(now)
        for rule in self._link_rules:
            if rule.dc is not None and rule.dc != dc_id:
                continue
            if rule.account is not None and rule.account != account:
                continue
            fault = rule.link_fault(now, conn_id, dc_id, opened_at)
            if fault is not None:
                return fault
        return None

    def clock_offset(self, now: float, dc_id: int, judging_client: bool = False) -> float:
        """Seconds the server's clock on DC ``dc_id`` is off at ``now``: the sum of the active
        skew rules' offsets (0.0 with none). It moves the server's msg_ids and server times;
        ``judging_client=True``: the clock used to check the client's msg_ids (16 / 17)."""
        self._ensure_started(now)
        total = 0.0
        for rule in self._skew_rules:
            if rule.dc is not None and rule.dc != dc_id:
                continue
            offset = rule.clock_offset(now, dc_id, judging_client)
            if offset:
                total += offset
        return total

    @property
    def has_timed(self) -> bool:
        """True if some rule may produce timed actions: the server should poll :meth:`due`."""
        return any(rule.timed for rule in self._rules)

    def due(self, now: float) -> list[tuple[int | None, Action]]:
        """Timed actions due at ``now``, each returned once, oldest first (rule order on ties).

        Each item is ``(dc_id or None for every DC, action)``; the server applies the action
        to every live connection of that DC.
        """
        self._ensure_started(now)
        items: list[tuple[float, int, int | None, Action]] = []
        for position, rule in enumerate(self._rules):
            for when, dc, action in rule.due(now):
                items.append((when, position, dc, action))
        items.sort(key=lambda item: (item[0], item[1]))
        return [(dc, action) for _, _, dc, action in items]

    def __repr__(self) -> str:
        return f"FaultPlan({', '.join(map(repr, self._rules))}, seed={self.seed})"
