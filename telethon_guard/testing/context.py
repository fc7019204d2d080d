"""What a connection shares with its server: :class:`ServerContext`.

:class:`~telethon_guard.testing.server.TelegramTestServer` owns the listeners and the public
API; every :class:`~telethon_guard.testing.connection.Connection` gets one
:class:`ServerContext` holding the tables all connections of a server share (auth keys,
MTProto sessions, live connections, per-account call counts, refusing DCs), the server's
salt, log, counters, fault plan and world, and the few operations on them. Connections never
see the server object itself, so ``connection`` does not import ``server`` (no import circle)
and the server's private attributes stay private.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import rsa

from telethon_guard.testing._types import AuthState, TransportError
from telethon_guard.testing.crypto import KeyMaterial, auth_key_id
from telethon_guard.testing.log import Kind, LogEntry, ServerLog


class LiveConnection(Protocol):
    """What the server and the update pusher use of a live connection."""

    conn_id: int
    dc_id: int
    closed: bool

    @property
    def auth(self) -> AuthState | None: ...

    def push(self, body: bytes) -> bool: ...

    def apply(self, action: object) -> None: ...

    def close(self, reason: str, *, abort: bool = False, error_code: int | None = None) -> None:
        ...


class ServerContext:
    """State and operations shared by the connections of one server.

    Attributes:
        salt: the server salt every session uses (64-bit int).
        world: the world answering RPC requests (``async handle(info)``).
        sync_handle: ``world.handle_sync`` when the stock ``World.handle`` only calls it
            (requests then run inline, without a task), else ``None``.
        faults: the fault plan (``server.faults`` reads and replaces this one).
        log: the ground-truth :class:`ServerLog`.
        stats: MTProto-level counters (``bad_server_salt``, ``new_session_created``...).
        internal_errors: exceptions of the server's own code, raised on exit when strict.
        max_packet_size: largest accepted transport packet, bytes.
        keys: auth key id -> (state, key material), pre-shared and exchanged keys.
        sessions: known ``(auth key id, session id)`` pairs (``new_session_created`` once each).
        call_counts: ``(account, method)`` -> calls seen (``RequestInfo.call_index``).
        conns: live connections by connection id.
        request_tasks: tasks running requests (cancelled when the server stops).
    """

    def __init__(
        self,
        *,
        salt: int,
        world: Any,
        sync_handle: Callable[[Any], Any] | None,
        faults: Any,
        max_packet_size: int,
        rsa_key: Callable[[], rsa.PrivateKey],
        pq: Any,
    ) -> None:
        self.salt = salt
        self.world = world
        self.sync_handle = sync_handle
        self.faults = faults
        self.max_packet_size = max_packet_size
        self.rsa_key = rsa_key
        self.pq = pq
        self.log = ServerLog()
        self.stats: Counter[str] = Counter()
        self.internal_errors: list[BaseException] = []
        self.keys: dict[int, tuple[AuthState, KeyMaterial]] = {}
        self.sessions: set[tuple[int, int]] = set()
        self.call_counts: dict[tuple[int | None, str], int] = {}
        self.conns: dict[int, LiveConnection] = {}
        self.request_tasks: set[asyncio.Task[None]] = set()
        self._refusing: dict[int, tuple[float, TransportError]] = {}
        self._last_msg_id = 0
        self.dc_ids: list[int] = []
        """Ids of the server's DCs (filled when it starts; a refusal for ``None`` covers all)."""

    def register_key(self, auth_key: bytes, dc_id: int) -> AuthState:
        """Remember a new auth key (256 bytes) bound to DC ``dc_id``; returns its state."""
        key_id = auth_key_id(auth_key)
        state = AuthState(auth_key_id=key_id, auth_key=auth_key, dc_id=dc_id)
        self.keys[key_id] = (state, KeyMaterial(auth_key, key_id))
        return state

    def new_msg_id(self, residue: int) -> int:
        """A server msg_id: time-based, strictly increasing, ``residue`` (1 or 3) mod 4."""
        t = time.time()
        mid = (int(t) << 32) | (int((t % 1.0) * 4294967296.0) & ~3)
        last = self._last_msg_id
        if mid <= last:
            mid = last + 4
        self._last_msg_id = mid
        return mid | residue

    def internal_error(self, exc: BaseException) -> None:
        """Collect a failure of the server's own code (raised on exit when strict)."""
        self.internal_errors.append(exc)

    def log_event(
        self,
        kind: Kind,
        conn_id: int,
        dc_id: int,
        *,
        error_code: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Append a connection event (opened, closed, refused...) to the log."""
        self.log.append(
            LogEntry(time.monotonic(), kind, conn_id, dc_id, error_code=error_code, detail=detail)
        )

    def refusal(self, dc_id: int) -> TransportError | None:
        """The transport error new connections to ``dc_id`` get now, or ``None``."""
        entry = self._refusing.get(dc_id)
        if entry is None:
            return None
        until, action = entry
        if time.monotonic() >= until:
            del self._refusing[dc_id]
            return None
        return action

    def start_refusing(self, dc_id: int | None, action: TransportError) -> None:
        """Refuse new connections to ``dc_id`` (``None``: every DC) for
        ``action.refuse_seconds`` seconds from now (monotonic clock)."""
        until = time.monotonic() + action.refuse_seconds
        targets = list(self.dc_ids) if dc_id is None else [dc_id]
        for d in targets:
            prev = self._refusing.get(d)
            if prev is None or prev[0] < until:
                self._refusing[d] = (until, action)
