"""One tenant of a :class:`~telethon_guard.pool.GuardedClientPool`: its client, state and
counters, and the identity of the session it holds.

An entry without a client (never used, or idle-disconnected) keeps only its counters: the
client, and the guard state the client owns, are dropped when it goes idle, so an idle entry
costs a few hundred bytes. State that must survive (FLOOD_WAITs, breakers, limits) lives in the
pool's shared storage (:attr:`GuardedClientPool.storage`) when the factory passes it on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BROKEN",
    "CONNECTED",
    "CONNECTING",
    "IDLE",
    "NEW",
    "PoolEntry",
    "TenantStats",
    "own_stats",
    "session_keys",
]

NEW = "new"
"""Never used: no client yet."""
CONNECTING = "connecting"
"""Its client is being created or connected."""
CONNECTED = "connected"
"""Connected (leased or not)."""
IDLE = "idle"
"""Disconnected after ``idle_timeout`` (or evicted under ``max_connected``); client dropped."""
BROKEN = "broken"
"""Its factory or connect failed; refused until ``broken_until``."""


def session_keys(client: Any) -> list[tuple[str, Any]]:
    """What identifies the session of ``client`` in this process: the session object, its
    file (SQLite sessions) and its auth key id, as ``(kind, value)`` pairs."""
    session = getattr(client, "session", None)
    keys: list[tuple[str, Any]] = [("session", id(session))]
    filename = getattr(session, "filename", None)
    if isinstance(filename, str) and filename and filename != ":memory:":
        keys.append(("file", filename))
    key_id = getattr(getattr(session, "auth_key", None), "key_id", None)
    if key_id is not None:
        keys.append(("auth_key", key_id))
    return keys


def own_stats(client: Any) -> Any:
    """``client.guard.stats()`` limited to the client's own account: clients sharing one
    storage (``storage=pool.storage``) see every account's breakers and blocks there."""
    from . import keys
    from ._link import account_key

    stats = client.guard.stats()
    prefix = keys.account_key(account_key(client, client.guard)) + "/"
    return dataclasses.replace(
        stats,
        breakers={k: v for k, v in stats.breakers.items() if k.startswith(prefix)},
        blocked={k: v for k, v in stats.blocked.items() if k.startswith(prefix)},
    )


@dataclass(frozen=True)
class TenantStats:
    """A snapshot of one tenant (all times in seconds, monotonic clock).

    ``state``: :data:`NEW`, :data:`CONNECTING`, :data:`CONNECTED`, :data:`IDLE` or
    :data:`BROKEN`. ``leases``: calls holding the client now; ``leases_total``: lifetime.
    ``connects``: successful connects; ``idle_disconnects``, ``evictions`` (idle clients
    disconnected to stay under ``max_connected``), ``failures`` (factory or connect errors).
    ``idle_for``: seconds since the last lease ended (``None`` while leased or never used).
    ``broken_for``: seconds the pool still refuses this tenant (0.0 when not broken).
    ``last_error``: ``repr`` of the last factory/connect error. ``available`` and
    ``unavailable_reason``: the client's guard health (``client.guard.available``) when it has
    a client, else ``False`` / the state: a tenant without a connected client (``new``,
    ``idle``, ``connecting``) is not *available* (no client to call now) but not *down*
    either. ``down``: ``True`` only when the tenant is in trouble of its own: ``broken``
    (refused for ``broken_for`` s more) or its client's guard unavailable (reconnecting,
    disconnected, breaker open...); a ``/health`` endpoint should flag ``down`` tenants, not
    every one that is not ``available``. A tenant whose ``broken_retry_after`` has passed is
    ``idle`` again (the next lease retries its factory). ``guard``: :func:`own_stats` (the
    client's ``guard.stats()``, breakers and blocks of its own account only) or ``None``.
    """

    tenant: Any
    state: str
    leases: int
    leases_total: int
    connects: int
    idle_disconnects: int
    evictions: int
    failures: int
    idle_for: float | None
    broken_for: float
    last_error: str | None
    available: bool
    unavailable_reason: str | None
    guard: Any = None
    down: bool = False


class PoolEntry:
    """Mutable per-tenant record (the pool's internals; read it through ``TenantStats``)."""

    __slots__ = ("broken_until", "client", "connects", "evictions", "failures",
                 "idle_disconnects", "last_error", "last_used", "leases", "leases_total", "lock",
                 "state", "tenant")

    def __init__(self, tenant: Any) -> None:
        self.tenant = tenant
        self.leases = 0
        self.client: Any = None
        self.leases_total = 0
        self.state = NEW
        self.connects = 0
        self.lock: asyncio.Lock | None = None  # created on first use (on the pool's loop)
        self.idle_disconnects = 0
        self.last_used: float | None = None
        self.evictions = 0
        self.last_error: str | None = None
        self.failures = 0
        self.broken_until = 0.0

    def get_lock(self) -> asyncio.Lock:
        lock = self.lock
        if lock is None:
            lock = self.lock = asyncio.Lock()
        return lock

    def evictable(self) -> bool:
        """Connected, no lease, nobody connecting it: may be disconnected."""
        return self.state == CONNECTED and self.leases == 0 and not (
            self.lock is not None and self.lock.locked())

    def snapshot(self, now: float | None = None) -> TenantStats:
        now = time.monotonic() if now is None else now
        client = self.client
        guard = getattr(client, "guard", None) if client is not None else None
        state = self.state
        if state == BROKEN and self.broken_until <= now:
            state = IDLE  # the cool-down is over: the next lease tries again
        if guard is not None:
            reason = guard.unavailable_reason
            stats = own_stats(client)
            down = reason is not None
        else:
            reason, stats, down = state, None, state == BROKEN
        return TenantStats(
            tenant=self.tenant, state=state, leases=self.leases,
            leases_total=self.leases_total, connects=self.connects,
            idle_disconnects=self.idle_disconnects, evictions=self.evictions,
            failures=self.failures,
            idle_for=(None if self.leases or self.last_used is None
                      else max(0.0, now - self.last_used)),
            broken_for=max(0.0, self.broken_until - now) if state == BROKEN else 0.0,
            last_error=self.last_error, available=reason is None, unavailable_reason=reason,
            guard=stats, down=down,
        )

    def __repr__(self) -> str:
        return f"<PoolEntry {self.tenant!r} {self.state} leases={self.leases}>"
