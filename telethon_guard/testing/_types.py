"""Contracts between the test server's parts.

``server``/``connection`` (the MTProto side) builds a :class:`RequestInfo` for every decoded
request, asks the :class:`~telethon_guard.testing.faults.FaultPlan` what to do with it
(a list of :data:`Action`), and, unless an action says otherwise, runs it through
:class:`~telethon_guard.testing.world.World`, which returns a TL object or raises
:class:`RpcErrorReply`. Every outcome is recorded in the ground-truth log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telethon.tl.tlobject import TLObject

Framing = Literal["full", "intermediate", "abridged"]


class RpcErrorReply(Exception):
    """Raised by the world or a fault to answer ``rpc_error`` (``code``, ``message``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


@dataclass
class AuthState:
    """Server-side state of one auth key (shared by every connection using it)."""

    auth_key_id: int
    auth_key: bytes
    dc_id: int
    user_id: int | None = None  # None until logged in / authorization imported
    layer: int | None = None
    api_id: int | None = None
    receives_updates: bool = False  # True once it called updates.getState / getDifference


@dataclass(frozen=True)
class DcAddress:
    dc_id: int
    host: str
    port: int


@dataclass
class RequestInfo:
    """One decoded request as the server sees it (wrappers already removed)."""

    now: float  # server monotonic clock (time.monotonic()), seconds
    conn_id: int
    dc_id: int
    auth: AuthState
    msg_id: int
    method: str  # telethon_guard._tl.method_name(), e.g. "messages.getHistory"
    request: TLObject  # the innermost request
    framing: Framing
    peer: str | None = None  # telethon_guard._tl.peer_key()
    random_id: int | None = None
    init_connection: bool = False  # it arrived wrapped in initConnection
    call_index: int = 0  # 1-based count of this method for this account, including this call

    @property
    def account(self) -> int | None:
        return self.auth.user_id


# ---- Actions a FaultPlan can ask for -------------------------------------------------------


@dataclass(frozen=True)
class ReplyError:
    """Answer ``rpc_error`` instead of executing (nothing is executed)."""

    code: int
    message: str


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` (server side, not blocking other connections) before going on."""

    seconds: float


@dataclass(frozen=True)
class DropReply:
    """Execute the request but never send its reply (the client sees silence)."""


@dataclass(frozen=True)
class ResetConnection:
    """Close the TCP connection abruptly; ``after_execute`` means execute first, then reset."""

    after_execute: bool = False


@dataclass(frozen=True)
class TransportError:
    """Send a transport error instead of replying, then close.

    ``mode``: ``"framed"`` uses the connection's framing (negative length + seq + body on
    TcpFull, a 4-byte packet on Intermediate / Abridged); ``"raw"`` writes 4 raw bytes of
    the negative code and closes. ``refuse_seconds`` > 0 also refuses new connections
    (same transport error at once, then close) on this DC for that long.
    """

    code: int = 429
    mode: Literal["framed", "raw"] = "framed"
    refuse_seconds: float = 0.0


@dataclass(frozen=True)
class Stall:
    """Stop reading and writing on this connection but keep the socket open (half-open)."""


@dataclass(frozen=True)
class CloseConnection:
    """Close the connection: ``abort=False`` a graceful close (FIN, after flushing what is
    queued), ``abort=True`` a reset (RST). ``after_packets`` > 0 (on a new connection, from
    :meth:`FaultPlan.on_connect`): serve nothing, and close once that many transport packets
    have arrived (the last one unanswered): "Telegram closes every new connection right after
    its first packet". ``after_packets=0``: close at once (on accept, or when applied).
    """

    abort: bool = False
    after_packets: int = 0


@dataclass(frozen=True)
class ListenerDown:
    """Stop listening on a DC's port for ``seconds`` (``None``: until the server stops): new
    TCP connections are refused by the OS (``ECONNREFUSED``), as by a DC that is down or
    unreachable; open connections are untouched. A timed action (``FaultPlan.due``)."""

    seconds: float | None = None


Action = (
    ReplyError | Delay | DropReply | ResetConnection | TransportError | Stall | CloseConnection
    | ListenerDown
)


@dataclass(frozen=True)
class LinkFault:
    """What a :class:`~telethon_guard.testing.faults.FaultPlan` does to an open connection now
    (:meth:`FaultPlan.link_fault`).

    ``mode="silence"``: packets that arrive are read and discarded (never decoded, executed or
    answered) and nothing is sent: no replies, no acks, no pushed updates; the TCP connection
    stays open (a half-open connection: NAT timeout, a silent DC). ``mode="stall"``: nothing
    is read (TCP buffers fill) and nothing is sent; what is queued is delivered when the stall
    ends. ``until``: monotonic end of the fault, or ``None`` for ever.
    """

    mode: Literal["silence", "stall"]
    until: float | None = None


@dataclass(frozen=True)
class ConnectInfo:
    """A new TCP connection, before any byte is read."""

    now: float
    conn_id: int
    dc_id: int
    peer_address: tuple[str, int]


@dataclass
class ServerCounters:
    connections_opened: int = 0
    connections_refused: int = 0
    transport_errors_sent: int = 0
    per_dc: dict[int, int] = field(default_factory=dict)
