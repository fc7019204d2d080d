"""The :class:`Rule` base of the fault plan, and the small helpers every rule shares.

A rule has one job (a rate window, an error on some calls, a transport storm...). The
:class:`~telethon_guard.testing.faults.FaultPlan` asks its rules, in order, through four hooks:

* :meth:`Rule.observe` -- every request in the rule's scope, before any decision (transport-level
  counters: a connection's request rate counts every packet that arrives);
* :meth:`Rule.check` -- the decision: ``[]``, some :class:`Delay`, and/or one terminal action;
  evaluation stops at the first rule that returns a terminal action (an earlier rule wins);
* :meth:`Rule.commit` -- only when the request is going to be executed (no terminal action, or
  :class:`DropReply`, or ``ResetConnection(after_execute=True)``): Telegram counts accepted calls,
  so a call refused with ``FLOOD_WAIT`` never fills a window;
* :meth:`Rule.on_connect` / :meth:`Rule.due` -- new connections and timed actions;
* :meth:`Rule.link_fault` / :meth:`Rule.clock_offset` -- asked by open connections for every
  packet they read and every message they send (rules with ``link`` / ``skews`` set only):
  silence or stall this connection now? how far off is the server's clock?

All times are the server's monotonic clock (``time.monotonic()``), in seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable

from telethon import utils
from telethon.tl.tlobject import TLObject

from telethon_guard import _tl
from telethon_guard.testing._types import (
    Action,
    CloseConnection,
    ConnectInfo,
    Delay,
    DropReply,
    LinkFault,
    ReplyError,
    RequestInfo,
    ResetConnection,
    Stall,
    TransportError,
)

# Small tolerance for float clocks: a caller who waits exactly the X seconds it was told is
# admitted, and ``ceil`` never rounds 3.0000000001 up to 4.
EPS = 1e-6

SEND_METHODS: frozenset[str] = _tl.POST_METHODS
"""Requests that post a message into a chat (slow mode, PEER_FLOOD): ``_tl.POST_METHODS``, the
one list the guard shares (its own wider ``SEND_METHODS`` adds reactions, votes...)."""

TRANSFER_METHODS: frozenset[str] = _tl.TRANSFER_METHODS
"""File-transfer requests (FLOOD_PREMIUM_WAIT scope, design-notes §3): ``_tl.TRANSFER_METHODS``."""

SERVICE_METHODS: frozenset[str] = frozenset(
    {"ping", "pingDelayDisconnect", "destroySession", "getFutureSalts", "rpcDropAnswer"}
)
"""MTProto service calls that no per-account rate limit counts."""

TERMINAL_TYPES = (ReplyError, DropReply, ResetConnection, TransportError, Stall, CloseConnection)
ACTION_TYPES = (Delay, *TERMINAL_TYPES)
"""Every action a rule may return for a request."""


def is_terminal(action: Action) -> bool:
    """True for every action except :class:`Delay`."""
    return not isinstance(action, Delay)


def executes(terminal: Action | None) -> bool:
    """Whether the server runs the request when this is the terminal action (``None``: normal)."""
    if terminal is None or isinstance(terminal, DropReply):
        return True
    return isinstance(terminal, ResetConnection) and terminal.after_execute


def wait_seconds(remaining: float) -> int:
    """The ``X`` of ``*_WAIT_X`` for ``remaining`` seconds: rounded up, never below 0."""
    return max(0, math.ceil(remaining - EPS))


def flood_wait(seconds: int) -> ReplyError:
    """``420 FLOOD_WAIT_<seconds>`` (Telegram's per account+method flood error, design-notes §3)."""
    return ReplyError(420, f"FLOOD_WAIT_{_nonneg_int(seconds, 'seconds')}")


def slowmode_wait(seconds: int) -> ReplyError:
    """``420 SLOWMODE_WAIT_<seconds>`` (per account+chat, design-notes §3)."""
    return ReplyError(420, f"SLOWMODE_WAIT_{_nonneg_int(seconds, 'seconds')}")


def premium_wait(seconds: int) -> ReplyError:
    """``420 FLOOD_PREMIUM_WAIT_<seconds>`` (per account+DC file transfers, design-notes §3)."""
    return ReplyError(420, f"FLOOD_PREMIUM_WAIT_{_nonneg_int(seconds, 'seconds')}")


PEER_FLOOD = ReplyError(400, "PEER_FLOOD")
INTERNAL = ReplyError(500, "INTERNAL")
RPC_CALL_FAIL = ReplyError(500, "RPC_CALL_FAIL")
RPC_MCGET_FAIL = ReplyError(500, "RPC_MCGET_FAIL")
TIMEOUT_503 = ReplyError(-503, "Timeout")
"""Telegram answers rpc_error code -503, message ``"Timeout"``, when a backend times out."""


def _nonneg_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


def positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Validate a number of seconds / a rate at construction; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return float(value)


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


# ---- method names ---------------------------------------------------------------------------

_KNOWN_METHODS: frozenset[str] | None = None

MethodSpec = str | type[TLObject] | Iterable[str | type[TLObject]] | None


def method_of_class(cls: type) -> str:
    """TL name of a Telethon request class, as :func:`telethon_guard._tl.method_name` spells it."""
    return _tl.class_method_name(cls)


def known_methods() -> frozenset[str]:
    """Every TL function name Telethon knows (plus the MTProto service calls)."""
    global _KNOWN_METHODS
    if _KNOWN_METHODS is None:
        _KNOWN_METHODS = frozenset(_tl.known_method_names() | SERVICE_METHODS)
    return _KNOWN_METHODS


def _one_method(spec: str | type) -> str:
    if isinstance(spec, type):
        if not issubclass(spec, TLObject):
            raise ValueError(f"not a Telethon request class: {spec!r}")
        return method_of_class(spec)
    if isinstance(spec, str):
        if spec not in known_methods():
            raise ValueError(
                f"unknown TL method {spec!r}: use the TL name, e.g. 'messages.getHistory' "
                "(or pass the Telethon request class)"
            )
        return spec
    raise ValueError(f"a method is a TL name or a Telethon request class, got {spec!r}")


def methods_of(spec: MethodSpec) -> frozenset[str] | None:
    """Normalise a method spec: ``None`` (every method), a name, a class, or several of them.

    Raises ``ValueError`` for a name Telethon does not know (a typo would otherwise never match).
    """
    if spec is None:
        return None
    if isinstance(spec, (str, type)):
        return frozenset({_one_method(spec)})
    out = frozenset(_one_method(s) for s in spec)
    if not out:
        raise ValueError("empty method collection: pass None for every method")
    return out


# ---- peers ----------------------------------------------------------------------------------


def peer_spec(peer: str | int) -> str:
    """A peer key as :func:`telethon_guard._tl.peer_key` spells it, from a key or a marked id."""
    if isinstance(peer, bool):
        raise ValueError(f"bad peer {peer!r}")
    if isinstance(peer, int):
        return f"peer:{peer}"
    if isinstance(peer, str) and peer.startswith("peer:"):
        int(peer[5:])  # raises ValueError for garbage
        return peer
    raise ValueError(f"a peer is a marked id (int) or 'peer:<marked id>', got {peer!r}")


def send_peer(info: RequestInfo) -> str | None:
    """The chat a send-like request posts into: ``info.peer``, or ``to_peer`` (forwardMessages)."""
    if info.peer is not None:
        return info.peer
    to_peer = getattr(info.request, "to_peer", None)
    if to_peer is None:
        return None
    try:
        return f"peer:{utils.get_peer_id(to_peer)}"
    except (TypeError, ValueError):
        return None


def account_key(info: RequestInfo) -> int | tuple[str, int]:
    """Who is calling: the user id, or the auth key id before login."""
    user = info.account
    return user if user is not None else ("auth_key", info.auth.auth_key_id)


# ---- call selection -------------------------------------------------------------------------


class CallSelector:
    """Which calls of a method a rule hits, by the server's 1-based ``info.call_index``.

    ``calls``: a collection (set, range, list) of call indices; ``every``: every n-th call;
    ``probability``: each candidate call with this probability, drawn from the plan's seeded
    ``random.Random``; ``times``: fire at most this many times in total. Conditions combine with
    AND; with none given every call is selected (until ``times`` runs out).
    """

    __slots__ = ("calls", "every", "probability", "times")

    def __init__(
        self,
        calls: Collection[int] | int | None = None,
        every: int | None = None,
        probability: float | None = None,
        times: int | None = None,
    ) -> None:
        selected: Collection[int] | None
        if calls is None:
            selected = None
        elif isinstance(calls, bool) or not isinstance(calls, (int, Collection)):
            raise ValueError(f"calls must be 1-based call indices, got {calls!r}")
        elif isinstance(calls, int):
            selected = frozenset({calls})
        else:
            selected = calls if isinstance(calls, range) else frozenset(calls)
        if selected is not None and (
            not selected
            or (
                (selected.step < 1 or selected.start < 1)
                if isinstance(selected, range)
                else any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in selected)
            )
        ):
            raise ValueError(f"calls must be non-empty 1-based call indices, got {calls!r}")
        self.calls = selected
        self.every = None if every is None else positive_int(every, "every")
        if probability is not None:
            p = positive(probability, "probability", allow_zero=True)
            if p > 1:
                raise ValueError(f"probability must be in [0, 1], got {probability!r}")
            probability = p
        self.probability = probability
        self.times = None if times is None else positive_int(times, "times")

    def selects(self, index: int, fired: int, rng: random.Random) -> bool:
        if self.times is not None and fired >= self.times:
            return False
        if self.calls is not None and index not in self.calls:
            return False
        if self.every is not None and index % self.every != 0:
            return False
        if self.probability is not None:
            return rng.random() < self.probability
        return True

    def __repr__(self) -> str:
        parts = [
            f"{k}={getattr(self, k)!r}"
            for k in ("calls", "every", "probability", "times")
            if getattr(self, k) is not None
        ]
        return ", ".join(parts)


# ---- time windows ---------------------------------------------------------------------------


class TimeWindow:
    """``[t0 + start, t0 + start + duration)`` on the monotonic clock; ``duration=None``: for
    ever. ``start`` and ``duration`` are seconds, validated at construction (``ValueError``)."""

    __slots__ = ("begin", "duration", "start")

    def __init__(self, start: float, duration: float | None) -> None:
        self.start = positive(start, "start", allow_zero=True)
        self.duration = None if duration is None else positive(duration, "duration")
        self.begin = self.start

    def bind(self, t0: float) -> None:
        """The plan started at monotonic ``t0``."""
        self.begin = t0 + self.start

    @property
    def end(self) -> float | None:
        """Monotonic end of the window, ``None`` if it never ends."""
        return None if self.duration is None else self.begin + self.duration

    def active(self, now: float) -> bool:
        """Whether monotonic ``now`` is inside the window."""
        if now < self.begin - EPS:
            return False
        return self.duration is None or now < self.begin + self.duration - EPS

    def __repr__(self) -> str:
        duration = "None" if self.duration is None else f"{self.duration:g}"
        return f"start={self.start:g}, duration={duration}"


# ---- the base rule --------------------------------------------------------------------------


class Rule:
    """One fault or limit. Subclasses override the hooks they need; the defaults do nothing.

    Every rule takes ``account`` (a user id; ``None`` = every account) and ``dc`` (a DC id;
    ``None`` = every DC) to scope it, and counts in :attr:`fired` how many times it acted
    (returned an action from :meth:`check` / :meth:`on_connect`, or had a timed action due).
    """

    timed: bool = False
    """True if the rule can produce timed actions through :meth:`due`."""
    link: bool = False
    """True if the rule can silence / stall open connections through :meth:`link_fault`."""
    skews: bool = False
    """True if the rule can move the server's clock through :meth:`clock_offset`."""

    def __init__(self, *, account: int | None = None, dc: int | None = None) -> None:
        if account is not None and (isinstance(account, bool) or not isinstance(account, int)):
            raise ValueError(f"account must be a user id (int) or None, got {account!r}")
        if dc is not None and (isinstance(dc, bool) or not isinstance(dc, int) or dc < 1):
            raise ValueError(f"dc must be a DC id (int >= 1) or None, got {dc!r}")
        self.account = account
        self.dc = dc
        self.fired = 0
        self.rng = random.Random(0)
        self.t0 = 0.0

    # -- wiring --
    def bind(self, rng: random.Random, t0: float) -> None:
        """Called by the plan: its seeded RNG and its start time (monotonic seconds)."""
        self.rng = rng
        self.t0 = t0

    def applies(self, info: RequestInfo) -> bool:
        """Whether ``info`` is in this rule's account / DC scope."""
        if self.dc is not None and info.dc_id != self.dc:
            return False
        return self.account is None or info.account == self.account

    # -- hooks --
    def observe(self, info: RequestInfo) -> None:
        """See every in-scope request before any decision (default: nothing)."""

    def check(self, info: RequestInfo) -> list[Action]:
        """Decide for one request: ``[]``, Delays and/or one terminal action."""
        return []

    def commit(self, info: RequestInfo) -> None:
        """The request is executed (Telegram counts it); update windows here."""

    def on_connect(self, info: ConnectInfo) -> Action | None:
        """A new connection: ``None`` to accept it, or a TransportError to refuse it."""
        return None

    def due(self, now: float) -> list[tuple[float, int | None, Action]]:
        """Timed actions due at ``now``, each returned once: ``(when, dc or None, action)``."""
        return []

    def link_fault(
        self, now: float, conn_id: int, dc_id: int, opened_at: float
    ) -> LinkFault | None:
        """Silence / stall connection ``conn_id`` (opened at monotonic ``opened_at``) at
        ``now``? Asked per packet read and per message sent, so keep it cheap."""
        return None

    def clock_offset(self, now: float, dc_id: int, judging_client: bool) -> float | None:
        """Seconds to add to the server's clock on DC ``dc_id`` at ``now`` (``None``: none).
        ``judging_client``: the clock that checks the client's msg_ids."""
        return None

    def _scope_repr(self) -> str:
        parts = []
        if self.account is not None:
            parts.append(f"account={self.account}")
        if self.dc is not None:
            parts.append(f"dc={self.dc}")
        return (", " + ", ".join(parts)) if parts else ""
