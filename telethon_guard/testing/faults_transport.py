"""Transport errors (-429, -404) on connections: on a request rate, as a storm, or always.

Telegram answers transport-level flooding with the 4 bytes of ``-429`` instead of a packet, and
an unknown auth key with ``-404`` (design-notes §3). Telethon reacts differently per framing
(design-notes §2): on TcpFull a negative length makes the sender disconnect for good; on
Intermediate / Abridged it reconnects at once, with no backoff. The rules here only decide
*when*; :class:`~telethon_guard.testing._types.TransportError` says how (``mode="framed"`` in the
connection's framing, ``mode="raw"`` 4 raw bytes then close) and the server writes the bytes.

Refusing new connections is done by these rules through :meth:`FaultPlan.on_connect` (the
actions they return carry ``refuse_seconds=0``), so the plan alone decides and counts it.
"""

from __future__ import annotations

import random
from collections import deque
from typing import ClassVar, Literal

from telethon_guard.testing._types import Action, ConnectInfo, RequestInfo, TransportError
from telethon_guard.testing.faults_base import EPS, Rule, positive, positive_int

__all__ = ["AlwaysTransportError", "Transport429OnRate", "Transport429Storm", "transport_error"]

Mode = Literal["framed", "raw"]


def transport_error(
    code: int = 429, mode: str = "framed", refuse_seconds: float = 0.0
) -> TransportError:
    """A validated :class:`TransportError`; ``code`` may be given as 429 or -429 (stored as 429).

    Raises ``ValueError`` for a zero code, an unknown ``mode`` or negative ``refuse_seconds``.
    """
    if isinstance(code, bool) or not isinstance(code, int) or code == 0:
        raise ValueError(
            f"transport error code must be a non-zero int (429, -404...), got {code!r}"
        )
    if mode == "framed":
        checked: Mode = "framed"
    elif mode == "raw":
        checked = "raw"
    else:
        raise ValueError(f"mode must be 'framed' or 'raw', got {mode!r}")
    refuse = positive(refuse_seconds, "refuse_seconds", allow_zero=True)
    return TransportError(code=abs(code), mode=checked, refuse_seconds=refuse)


class Transport429OnRate(Rule):
    """Transport ``-429`` on a connection that sends more than ``limit`` requests in ``window`` s.

    Imitates Telegram's per-connection transport flood control (design-notes §3, "transport -429,
    scope connection / IP"). Every request that arrives counts (refused ones too: the transport
    sees packets, not outcomes). The request that exceeds the rate gets the transport error
    instead of an answer and the server closes the connection. ``once=True``: only the first
    offender in the plan's life; ``False``: every time a connection exceeds the rate.
    ``refuse_seconds`` > 0: then refuse new connections on that DC for that long.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        once: bool = True,
        code: int = 429,
        mode: str = "framed",
        refuse_seconds: float = 0.0,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        self.limit = positive_int(limit, "limit")
        self.window = positive(window, "window")
        self.once = bool(once)
        self.action = transport_error(code, mode)
        self.refuse_seconds = positive(refuse_seconds, "refuse_seconds", allow_zero=True)
        self.triggered = 0
        self._arrivals: dict[int, deque[float]] = {}
        self._refuse: dict[int, float] = {}  # dc_id -> refuse until
        self._sweep_at = 0

    def observe(self, info: RequestInfo) -> None:
        hits = self._arrivals.setdefault(info.conn_id, deque())
        hits.append(info.now)
        horizon = info.now - self.window + EPS
        while hits and hits[0] <= horizon:
            hits.popleft()
        self._sweep_at += 1
        if self._sweep_at >= 1024:  # forget idle connections (bounded memory)
            self._sweep_at = 0
            for conn_id in [c for c, h in self._arrivals.items() if not h or h[-1] <= horizon]:
                del self._arrivals[conn_id]

    def check(self, info: RequestInfo) -> list[Action]:
        if self.once and self.triggered:
            return []
        hits = self._arrivals.get(info.conn_id)
        if hits is None or len(hits) <= self.limit:
            return []
        del self._arrivals[info.conn_id]  # the connection is closed by the error
        self.triggered += 1
        self.fired += 1
        if self.refuse_seconds > 0:
            self._refuse[info.dc_id] = info.now + self.refuse_seconds
        return [self.action]

    def on_connect(self, info: ConnectInfo) -> Action | None:
        until = self._refuse.get(info.dc_id)
        if until is not None and info.now < until - EPS:
            self.fired += 1
            return self.action
        return None

    def __repr__(self) -> str:
        return (
            f"Transport429OnRate(limit={self.limit}, window={self.window:g}, once={self.once}, "
            f"code={self.action.code}, mode={self.action.mode!r}{self._scope_repr()})"
        )


class Transport429Storm(Rule):
    """A transport-error storm: from ``start`` s after plan start (or the ``after_requests``-th
    request) for ``duration`` s.

    Imitates Telegram shedding load at the transport level (design-notes §2 and §3, "transport
    -429"): when the storm begins, every live connection (of ``dc``, or all DCs) gets the
    transport error (via :meth:`FaultPlan.due`; the request that triggers an ``after_requests``
    storm gets it at once); during the storm every request gets it, and with ``refuse=True``
    every new connection is refused (the error at once, then close). With ``account`` set, only
    that account's requests are hit: new connections cannot be told apart before they send, so
    nothing is broadcast or refused then. ``fired`` counts every transport error produced.
    """

    timed = True
    default_code: ClassVar[int] = 429
    default_mode: ClassVar[str] = "framed"

    def __init__(
        self,
        start: float | None = None,
        duration: float | None = 10.0,
        *,
        after_requests: int | None = None,
        refuse: bool = True,
        code: int | None = None,
        mode: str | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        if (start is None) == (after_requests is None):
            raise ValueError(
                "give exactly one of start (seconds) and after_requests (n-th request)"
            )
        self.start = None if start is None else positive(start, "start", allow_zero=True)
        self.after_requests = (
            None if after_requests is None else positive_int(after_requests, "after_requests")
        )
        self.duration = None if duration is None else positive(duration, "duration")
        self.refuse = bool(refuse)
        self.action = transport_error(
            self.default_code if code is None else code,
            self.default_mode if mode is None else mode,
        )
        self.begin: float | None = None  # absolute monotonic start of the storm
        self._broadcast = False
        self._requests = 0

    def bind(self, rng: random.Random, t0: float) -> None:
        super().bind(rng, t0)
        if self.start is not None:
            self.begin = t0 + self.start

    def active(self, now: float) -> bool:
        """Whether the storm is raging at monotonic ``now``."""
        if self.begin is None or now < self.begin - EPS:
            return False
        return self.duration is None or now < self.begin + self.duration - EPS

    def observe(self, info: RequestInfo) -> None:
        if self.after_requests is not None and self.begin is None:
            self._requests += 1
            if self._requests >= self.after_requests:
                self.begin = info.now

    def check(self, info: RequestInfo) -> list[Action]:
        if self.active(info.now):
            self.fired += 1
            return [self.action]
        return []

    def on_connect(self, info: ConnectInfo) -> Action | None:
        if self.refuse and self.account is None and self.active(info.now):
            self.fired += 1
            return self.action
        return None

    def due(self, now: float) -> list[tuple[float, int | None, Action]]:
        if self._broadcast or self.account is not None or self.begin is None:
            return []
        if now < self.begin - EPS:
            return []
        self._broadcast = True
        if not self.active(now):
            return []  # polled only after the storm was over: nothing live to hit
        self.fired += 1
        return [(self.begin, self.dc, self.action)]

    def __repr__(self) -> str:
        when = (
            f"start={self.start:g}"
            if self.start is not None
            else (f"after_requests={self.after_requests}")
        )
        duration = "None" if self.duration is None else f"{self.duration:g}"
        return (
            f"{type(self).__name__}({when}, duration={duration}, refuse={self.refuse}, "
            f"code={self.action.code}, mode={self.action.mode!r}{self._scope_repr()})"
        )


class AlwaysTransportError(Transport429Storm):
    """Every connection gets a transport error: "4 raw bytes of -429 then close, for 30 s".

    Imitates a Telegram DC that refuses us outright: ``code=429`` (transport flood, design-notes
    §3), or ``code=404`` (the auth key is unknown to the server: permanent, design-notes §3).
    Defaults: ``mode="raw"``, from plan start (``start=0``) for ever (``duration=None``).
    Every live connection is hit at ``start``, every request and every new connection during
    the window. Same options as :class:`Transport429Storm`.
    """

    default_mode: ClassVar[str] = "raw"

    def __init__(
        self,
        code: int = 429,
        mode: str = "raw",
        *,
        start: float | None = 0.0,
        duration: float | None = None,
        after_requests: int | None = None,
        refuse: bool = True,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        if after_requests is not None:
            start = None
        super().__init__(
            start,
            duration,
            after_requests=after_requests,
            refuse=refuse,
            code=code,
            mode=mode,
            account=account,
            dc=dc,
        )
