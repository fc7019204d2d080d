"""Script mode: actions at times (:class:`At`) and a tiny text form for whole plans.

Text form, one rule per line (``#`` starts a comment; keywords are case-insensitive, TL method
names are not; durations are ``2``, ``2s``, ``500ms``, ``2m``, ``1h``)::

    at 2s: transport 429 refuse 5s          # -429 to live connections, refuse new ones for 5 s
    at 2s: transport 429 raw                # 4 raw bytes of -429 to live connections, once
    at 10s: reset            |  at 3s: stall dc 2
    messages.getHistory calls 31-40: FLOOD_WAIT_7
    messages.getDialogs every 2: FLOOD_WAIT_22
    users.getUsers times 7: RPC_CALL_FAIL   # error names imply codes (420 / 400 / 500 / -503)
    * p 10%: -503 Timeout                    # explicit "<code> <message>" works for any error
    messages.sendMessage calls 3: reset after execute      (also: drop, stall, delay 1s,
                                                            transport 429 [raw])
    messages.getHistory limit 30/30s        # FloodWindow, true seconds left
    contacts.resolveUsername limit 50/1d: FLOOD_WAIT_48038   # blocked exactly 48038 s
    messages.sendMessage limit 1/1s per peer
    global limit 30/1s
    slowmode 60s [peer -1001234 ...]
    peer_flood after 20
    premium 8/s: FLOOD_PREMIUM_WAIT_6
    latency 50ms  |  latency messages.getHistory 0.1s-0.3s
    transport 429 above 100/1s [always] [raw] [refuse 5s]   # per-connection request rate
    always transport 404 raw [for 30s] [from 2s]
    new connections close [after 1 packet] [from 2s] [for 3s]   # also: reset, stall, down,
                                                                #   refuse [429] [raw|framed]
    live connections silence [from 2s] [for 5s] [conn 3,4] [account 5]  # also: stall;
                                                                #   close, reset
    init: stall               |  init times 1: FLOOD_WAIT_30  |  init from 2s for 3s: delay 5s
    login flood 1658s [x2] [max 1d] [after 1]                   # LoginFlood
    clock skew +60s [from 2s] [for 5s] [replies only]           # ClockSkew (judge_client=False)

Any line may add ``account <user id>`` and/or ``dc <id>`` (before the colon, or at the end of
the line) to scope it.
:func:`parse_script` raises ``ValueError`` naming the line for anything it does not understand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from telethon_guard.testing._types import (
    Action,
    ConnectInfo,
    Delay,
    DropReply,
    ReplyError,
    ResetConnection,
    Stall,
    TransportError,
)
from telethon_guard.testing.faults_base import EPS, Rule, methods_of, positive
from telethon_guard.testing.faults_calls import Latency, OnCalls
from telethon_guard.testing.faults_lifecycle import (
    ClockSkew,
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
from telethon_guard.testing.faults_transport import (
    AlwaysTransportError,
    Transport429OnRate,
    Transport429Storm,
    transport_error,
)

__all__ = ["At", "error_code", "parse_duration", "parse_script"]


class At(Rule):
    """A timed script action: at ``seconds`` after plan start, ``action`` hits every live
    connection of ``dc`` (``None`` = every DC), once (surfaced by :meth:`FaultPlan.due`).

    ``action``: :class:`TransportError` (a transport error, e.g. Telegram's -429 under load;
    with ``refuse_seconds`` > 0 new connections on that DC are also refused that long, by the
    plan's ``on_connect``), :class:`ResetConnection` (every connection drops) or :class:`Stall`
    (every connection goes half-open). Other actions are per request: use ``OnCalls``.
    If the plan was already started longer ago than ``seconds``, it fires at the next poll.
    """

    timed = True

    def __init__(self, seconds: float, action: Action, dc: int | None = None) -> None:
        super().__init__(dc=dc)
        if not isinstance(action, (TransportError, ResetConnection, Stall)):
            raise ValueError(
                f"At needs a connection action (TransportError, ResetConnection, Stall), "
                f"got {action!r}"
            )
        self.seconds = positive(seconds, "seconds", allow_zero=True)
        self.action: Action = action
        self.when: float | None = None  # absolute, set when emitted
        self._done = False

    def due(self, now: float) -> list[tuple[float, int | None, Action]]:
        when = self.t0 + self.seconds
        if self._done or now < when - EPS:
            return []
        self._done = True
        self.when = when
        self.fired += 1
        return [(when, self.dc, self.action)]

    def on_connect(self, info: ConnectInfo) -> Action | None:
        action = self.action
        if not isinstance(action, TransportError) or action.refuse_seconds <= 0:
            return None
        if self.when is None or not (
            self.when - EPS <= info.now < self.when + action.refuse_seconds - EPS
        ):
            return None
        self.fired += 1
        return TransportError(code=action.code, mode=action.mode)

    def __repr__(self) -> str:
        dc = "" if self.dc is None else f", dc={self.dc}"
        return f"At({self.seconds:g}, {self.action!r}{dc})"


# ---- text form ------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|)$")

_CODES_500 = frozenset(
    {
        "INTERNAL",
        "RPC_CALL_FAIL",
        "RPC_MCGET_FAIL",
        "WORKER_BUSY_TOO_LONG_RETRY",
        "HISTORY_GET_FAILED",
    }
)


def parse_duration(text: str) -> float:
    """``"2"``, ``"2s"``, ``"500ms"``, ``"2m"``, ``"1h"``, ``"1d"`` -> seconds (float)."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ValueError(f"bad duration {text!r} (use e.g. 2s, 500ms, 2m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def error_code(message: str) -> int:
    """The rpc_error code Telegram uses for an error name, for the script's short form.

    ``*_WAIT_X`` -> 420 (FLOOD), ``*_MIGRATE_X`` -> 303, ``PEER_FLOOD`` -> 400, ``INTERNAL`` /
    ``RPC_CALL_FAIL`` / ``RPC_MCGET_FAIL`` / ``WORKER_BUSY_TOO_LONG_RETRY`` -> 500,
    ``Timeout`` -> -503 (Telegram's API error reference; design-notes §3). Others raise
    ``ValueError``: write ``"<code> <message>"``.
    """
    if re.fullmatch(r"[A-Z0-9_]+_WAIT_\d+", message):
        return 420
    if re.fullmatch(r"[A-Z_]+_MIGRATE_\d+", message):
        return 303
    if message in _CODES_500:
        return 500
    if message == "Timeout":
        return -503
    if message == "PEER_FLOOD":
        return 400
    raise ValueError(f"no known code for {message!r}: write '<code> {message}'")


def _calls(text: str) -> range | frozenset[int]:
    """``5`` / ``31-40`` / ``51-`` (open: up to 10**9) / ``1,3,5``."""
    try:
        if "," in text:
            return frozenset(int(part) for part in text.split(","))
        if text.endswith("-"):
            return range(int(text[:-1]), 10**9)
        if "-" in text:
            lo, hi = text.split("-", 1)
            return range(int(lo), int(hi) + 1)
        return frozenset({int(text)})
    except ValueError:
        raise ValueError(f"bad call selection {text!r} (use 5, 31-40, 51- or 1,3,5)") from None


def _rate(text: str) -> tuple[int, float]:
    """``30/30s`` -> (30, 30.0); ``8/s`` -> (8, 1.0)."""
    count, _, per = text.partition("/")
    if not per:
        raise ValueError(f"bad rate {text!r} (use e.g. 30/30s)")
    per = "1" + per if per[0].isalpha() else per
    return int(count), parse_duration(per)


class _Tokens:
    def __init__(self, words: list[str], line: str) -> None:
        self.words = words
        self.line = line
        self.pos = 0

    def peek(self) -> str | None:
        return self.words[self.pos].lower() if self.pos < len(self.words) else None

    def take(self, what: str = "a value") -> str:
        if self.pos >= len(self.words):
            raise ValueError(f"expected {what} at the end of {self.line!r}")
        word = self.words[self.pos]
        self.pos += 1
        return word

    def accept(self, *keywords: str) -> bool:
        if self.peek() in keywords:
            self.pos += 1
            return True
        return False

    def rest(self) -> list[str]:
        return self.words[self.pos :]


def _scope(tokens: _Tokens, scope: dict[str, int]) -> bool:
    """Consume ``account N`` / ``dc N`` if next; True if something was consumed."""
    word = tokens.peek()
    if word in ("account", "dc"):
        tokens.take()
        scope[word] = int(tokens.take(f"the {word} id"))
        return True
    return False


def _transport(tokens: _Tokens) -> tuple[int, str]:
    code = int(tokens.take("a transport code"))
    mode = "framed"
    if tokens.peek() in ("raw", "framed"):
        mode = tokens.take()
    return code, mode.lower()


def _request_action(words: list[str], line: str) -> Action:
    """The part after ``:`` of a per-call line."""
    if not words:
        raise ValueError(f"missing action after ':' in {line!r}")
    tokens = _Tokens(words, line)
    head = tokens.peek()
    action: Action
    if head == "drop":
        tokens.take()
        action = DropReply()
    elif head == "reset":
        tokens.take()
        after = tokens.accept("after")
        if after:
            tokens.accept("execute", "executed", "execution")
        action = ResetConnection(after_execute=after)
    elif head == "stall":
        tokens.take()
        action = Stall()
    elif head == "delay":
        tokens.take()
        action = Delay(parse_duration(tokens.take("a duration")))
    elif head == "transport":
        tokens.take()
        code, mode = _transport(tokens)
        action = transport_error(code, mode)
    elif re.fullmatch(r"-?\d+", words[0]):
        code = int(tokens.take())
        message = " ".join(tokens.rest())
        tokens.pos = len(tokens.words)
        if not message:
            raise ValueError(f"missing error message after the code in {line!r}")
        action = ReplyError(code, message)
    else:
        message = tokens.take()
        action = ReplyError(error_code(message), message)
    if tokens.rest():
        raise ValueError(f"unexpected {' '.join(tokens.rest())!r} in {line!r}")
    return action


def _wait_seconds_of(words: list[str], prefix: str, line: str) -> int:
    if len(words) != 1 or not re.fullmatch(prefix + r"_(\d+)", words[0]):
        raise ValueError(f"expected {prefix}_<seconds> after ':' in {line!r}")
    return int(words[0].rsplit("_", 1)[1])


def parse_line(line: str) -> Rule | None:
    """One script line -> one rule (``None`` for blank / comment lines)."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    head_text, colon, tail_text = text.partition(":")
    tokens = _Tokens(head_text.split(), line)
    tail = tail_text.split() if colon else []
    scope: dict[str, int] = {}
    # "account N" / "dc N" may also close the line, after the action.
    while len(tail) >= 3 and tail[-2].lower() in ("account", "dc") and tail[-1].isdigit():
        scope[tail[-2].lower()] = int(tail[-1])
        del tail[-2:]
    first = tokens.take().lower()
    rule: Rule

    if first == "at":
        seconds = parse_duration(tokens.take("a time"))
        _scope_only(tokens, scope)
        if "account" in scope:
            raise ValueError(f"'at' lines act on connections, which have no account: {line!r}")
        dc = scope.get("dc")
        act = _Tokens(tail, line)
        kind = act.take("an action").lower()
        if kind == "transport":
            code, mode = _transport(act)
            refuse = parse_duration(act.take("a duration")) if act.accept("refuse") else 0.0
            if act.rest():
                raise ValueError(f"unexpected {' '.join(act.rest())!r} in {line!r}")
            if refuse > 0:
                rule = Transport429Storm(seconds, refuse, code=code, mode=mode, dc=dc)
            else:
                rule = At(seconds, transport_error(code, mode), dc=dc)
        elif kind in ("reset", "stall") and not act.rest():
            rule = At(seconds, ResetConnection() if kind == "reset" else Stall(), dc=dc)
        else:
            raise ValueError(f"'at' takes transport / reset / stall, got {tail_text!r} in {line!r}")
        return rule

    if first == "slowmode":
        seconds = parse_duration(tokens.take("a duration"))
        peers: list[int] = []
        while tokens.peek() is not None:
            if tokens.accept("peer", "peers"):
                peers.append(int(tokens.take("a peer id")))
                while tokens.peek() is not None and re.fullmatch(r"-?\d+", tokens.peek() or ""):
                    peers.append(int(tokens.take()))
            elif not _scope(tokens, scope):
                raise ValueError(f"unexpected {tokens.take()!r} in {line!r}")
        _no_tail(tail, line)
        return SlowMode(seconds, peers or None, account=scope.get("account"), dc=scope.get("dc"))

    if first == "peer_flood":
        if not tokens.accept("after"):
            raise ValueError(f"write 'peer_flood after <n>' in {line!r}")
        after = int(tokens.take("a count"))
        _scope_only(tokens, scope)
        _no_tail(tail, line)
        return PeerFlood(after, account=scope.get("account"), dc=scope.get("dc"))

    if first == "premium":
        count, per = _rate(tokens.take("a rate like 8/s"))
        _scope_only(tokens, scope)
        seconds_x = _wait_seconds_of(tail, "FLOOD_PREMIUM_WAIT", line)
        return PremiumFlood(
            count / per, seconds_x, window=per, account=scope.get("account"), dc=scope.get("dc")
        )

    if first == "global":
        if not tokens.accept("limit"):
            raise ValueError(f"write 'global limit <n>/<window>' in {line!r}")
        limit, window = _rate(tokens.take("a rate like 30/1s"))
        _scope_only(tokens, scope)
        fixed = _wait_seconds_of(tail, "FLOOD_WAIT", line) if tail else None
        return GlobalRate(
            limit, window, seconds=fixed, account=scope.get("account"), dc=scope.get("dc")
        )

    if first == "latency":
        words = tokens.rest()
        method: str | None = None
        if words and not _DURATION.match(words[0].lower()) and "-" not in words[0]:
            method = tokens.take()
        span = tokens.take("a duration")
        lo_text, dash, hi_text = span.partition("-")
        seconds_spec: float | tuple[float, float] = (
            (parse_duration(lo_text), parse_duration(hi_text)) if dash else parse_duration(span)
        )
        _scope_only(tokens, scope)
        _no_tail(tail, line)
        return Latency(method, seconds_spec, account=scope.get("account"), dc=scope.get("dc"))

    if first == "transport":
        code, mode = _transport(tokens)
        if not tokens.accept("above"):
            raise ValueError(f"write 'transport <code> above <n>/<window>' in {line!r}")
        limit, window = _rate(tokens.take("a rate like 100/1s"))
        once = True
        refuse = 0.0
        while tokens.peek() is not None:
            if tokens.accept("always"):
                once = False
            elif tokens.accept("once"):
                once = True
            elif tokens.peek() in ("raw", "framed"):
                mode = tokens.take().lower()
            elif tokens.accept("refuse"):
                refuse = parse_duration(tokens.take("a duration"))
            elif not _scope(tokens, scope):
                raise ValueError(f"unexpected {tokens.take()!r} in {line!r}")
        _no_tail(tail, line)
        return Transport429OnRate(
            limit,
            window,
            once=once,
            code=code,
            mode=mode,
            refuse_seconds=refuse,
            account=scope.get("account"),
            dc=scope.get("dc"),
        )

    if first in ("new", "live", "init", "login", "clock"):
        return _lifecycle_line(first, tokens, tail, line, scope)

    if first == "always":
        if not tokens.accept("transport"):
            raise ValueError(f"write 'always transport <code> [raw|framed]' in {line!r}")
        code, mode = _transport(tokens)
        active: dict[str, float] = {}
        while tokens.peek() is not None:
            if not _window(tokens, scope, active):
                raise ValueError(f"unexpected {tokens.take()!r} in {line!r}")
        _no_tail(tail, line)
        return AlwaysTransportError(
            code,
            mode,
            start=active.get("start", 0.0),
            duration=active.get("duration"),
            account=scope.get("account"),
            dc=scope.get("dc"),
        )

    # "<method>|* ...": per-call faults or a per-method flood window.
    method_spec = None if first == "*" else tokens.words[0]
    if method_spec is not None:
        methods_of(method_spec)  # clear error for a typo
    calls: range | frozenset[int] | None = None
    every: int | None = None
    times: int | None = None
    probability: float | None = None
    limit_rate: tuple[int, float] | None = None
    per_peer = False
    while tokens.peek() is not None:
        if tokens.accept("calls", "call"):
            calls = _calls(tokens.take("a call selection"))
        elif tokens.accept("every"):
            every = int(tokens.take("a count"))
        elif tokens.accept("times"):
            times = int(tokens.take("a count"))
        elif tokens.accept("p", "probability"):
            value = tokens.take("a probability")
            probability = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        elif tokens.accept("limit"):
            limit_rate = _rate(tokens.take("a rate like 30/30s"))
        elif tokens.accept("per"):
            if not tokens.accept("peer", "chat"):
                raise ValueError(f"write 'per peer' in {line!r}")
            per_peer = True
        elif not _scope(tokens, scope):
            raise ValueError(f"unexpected {tokens.take()!r} in {line!r}")
    if limit_rate is not None:
        if method_spec is None:
            raise ValueError(f"'* limit' is 'global limit' in {line!r}")
        if calls is not None or every is not None or times is not None or probability is not None:
            raise ValueError(f"'limit' does not combine with call selections in {line!r}")
        fixed = _wait_seconds_of(tail, "FLOOD_WAIT", line) if tail else None
        return FloodWindow(
            method_spec,
            limit_rate[0],
            limit_rate[1],
            seconds=fixed,
            per_peer=per_peer,
            account=scope.get("account"),
            dc=scope.get("dc"),
        )
    if per_peer:
        raise ValueError(f"'per peer' goes with 'limit' in {line!r}")
    if not colon:
        raise ValueError(f"missing ': <action>' in {line!r}")
    return OnCalls(
        method_spec,
        calls,
        _request_action(tail, line),
        every=every,
        probability=probability,
        times=times,
        account=scope.get("account"),
        dc=scope.get("dc"),
    )


def _window(tokens: _Tokens, scope: dict[str, int], window: dict[str, float]) -> bool:
    """Consume ``from <time>`` / ``for <duration>`` / a scope if next."""
    if tokens.accept("from"):
        window["start"] = parse_duration(tokens.take("a time"))
        return True
    if tokens.accept("for"):
        window["duration"] = parse_duration(tokens.take("a duration"))
        return True
    return _scope(tokens, scope)


def _lifecycle_line(
    first: str, tokens: _Tokens, tail: list[str], line: str, scope: dict[str, int]
) -> Rule:
    """``new connections ...``, ``live connections ...``, ``init ...: <action>``,
    ``login flood ...``, ``clock skew ...`` (faults_lifecycle.py)."""
    window: dict[str, float] = {}
    if first in ("new", "live"):
        if not tokens.accept("connections", "connection"):
            raise ValueError(f"write '{first} connections <how> ...' in {line!r}")
        how = tokens.take("close / reset / stall / refuse / silence").lower()
        after = 1
        code, mode = 429, "raw"
        conn_ids: list[int] = []
        while tokens.peek() is not None:
            if first == "new" and tokens.accept("after"):
                after = int(tokens.take("a packet count"))
                tokens.accept("packet", "packets")
            elif first == "new" and how == "refuse" and re.fullmatch(r"-?\d+", tokens.peek() or ""):
                code = int(tokens.take())
            elif first == "new" and tokens.peek() in ("raw", "framed"):
                mode = tokens.take().lower()
            elif first == "live" and tokens.accept("conn", "conns"):
                conn_ids.extend(int(c) for c in tokens.take("connection ids").split(","))
            elif not _window(tokens, scope, window):
                raise ValueError(f"unexpected {tokens.take()!r} in {line!r}")
        _no_tail(tail, line)
        if first == "new":
            if "account" in scope:
                raise ValueError(f"new connections have no account yet: {line!r}")
            return OnNewConnections(
                how,  # type: ignore[arg-type]
                after_packets=after, code=code, mode=mode, dc=scope.get("dc"), **window
            )
        return OnLiveConnections(
            how,  # type: ignore[arg-type]
            start=window.get("start", 0.0), duration=window.get("duration"),
            conn_ids=conn_ids or None, account=scope.get("account"), dc=scope.get("dc"),
        )
    if first == "init":
        times: int | None = None
        while tokens.peek() is not None:
            if tokens.accept("times"):
                times = int(tokens.take("a count"))
            elif not _window(tokens, scope, window):
                raise ValueError(f"unexpected {tokens.take()!r} in {line!r}")
        return OnInit(
            _request_action(tail, line), times=times, account=scope.get("account"),
            dc=scope.get("dc"), **window
        )
    if first == "login":
        if not tokens.accept("flood"):
            raise ValueError(f"write 'login flood <seconds> [x<factor>]' in {line!r}")
        seconds = parse_duration(tokens.take("a duration"))
        factor, max_seconds, after = 2.0, 86400.0, 0
        while tokens.peek() is not None:
            word = tokens.peek() or ""
            if re.fullmatch(r"x\d+(\.\d+)?", word):
                factor = float(tokens.take()[1:])
            elif tokens.accept("max"):
                max_seconds = parse_duration(tokens.take("a duration"))
            elif tokens.accept("after"):
                after = int(tokens.take("a count"))
            elif not _scope(tokens, scope):
                raise ValueError(f"unexpected {tokens.take()!r} in {line!r}")
        _no_tail(tail, line)
        return LoginFlood(
            math.ceil(seconds), factor=factor, max_seconds=math.ceil(max_seconds), after=after,
            account=scope.get("account"), dc=scope.get("dc"),
        )
    # clock skew
    if not tokens.accept("skew"):
        raise ValueError(f"write 'clock skew +<seconds>' in {line!r}")
    text = tokens.take("a signed duration like +60s")
    sign = -1.0 if text.startswith("-") else 1.0
    offset = sign * parse_duration(text.lstrip("+-"))
    judge_client = True
    while tokens.peek() is not None:
        if tokens.accept("replies"):
            tokens.accept("only")
            judge_client = False
        elif not _window(tokens, scope, window):
            raise ValueError(f"unexpected {tokens.take()!r} in {line!r}")
    _no_tail(tail, line)
    if "account" in scope:
        raise ValueError(f"a clock has no account scope: {line!r}")
    return ClockSkew(offset, judge_client=judge_client, dc=scope.get("dc"), **window)


def _scope_only(tokens: _Tokens, scope: dict[str, int]) -> None:
    while tokens.peek() is not None:
        if not _scope(tokens, scope):
            raise ValueError(f"unexpected {tokens.take()!r} in {tokens.line!r}")


def _no_tail(tail: list[str], line: str) -> None:
    if tail:
        raise ValueError(f"this rule takes no ': ...' part: {line!r}")


def parse_script(lines: Iterable[str]) -> list[Rule]:
    """Rules for script ``lines`` (each may hold several lines separated by newlines).

    Raises ``ValueError`` naming the offending line.
    """
    rules: list[Rule] = []
    for chunk in lines:
        if not isinstance(chunk, str):
            raise ValueError(f"script lines are strings, got {chunk!r}")
        for line in chunk.splitlines():
            try:
                rule = parse_line(line)
            except ValueError as exc:
                if repr(line) in str(exc):
                    raise
                raise ValueError(f"{exc} (in script line {line!r})") from None
            if rule is not None:
                rules.append(rule)
    return rules
