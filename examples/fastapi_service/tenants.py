"""``/channels?user_id=...``: the incident's shape, one Telegram account per user of the service,
served from a :class:`~telethon_guard.pool.GuardedClientPool` of per-user clients.

Each user's request leases that user's client (connected on first use, disconnected after
``idle_timeout``), fetches the channels live within the ``/channels`` budget, and falls back to
that user's cached copy when the guard knows Telegram cannot answer in time, or when the user's
session is broken (:class:`~telethon_guard.errors.TenantUnavailableError`, refused at once for
``broken_retry_after`` seconds without touching Telegram). One user's storm, FLOOD_WAITs or
broken session never slow another user's ``/channels``. Answers:

* 200 ``{"source": "live" | "cache", "user_id", "reason", "channels"}``;
* 404 ``{"source": "none", "reason": "UnknownTenantError"}`` for a user without a session;
* 503 ``{"source": "none", "reason": ...}`` when neither live data nor a cached copy exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from telethon_guard.errors import (
    PoolClosedError,
    PoolExhaustedError,
    TenantUnavailableError,
    UnknownTenantError,
)
from telethon_guard.health import FALLBACK_ERRORS, with_fallback
from telethon_guard.pool import GuardedClientPool

from .app import DEFAULT_CHANNELS, ChannelCache, fetch_channels

POOL_FALLBACK_ERRORS = (*FALLBACK_ERRORS, TenantUnavailableError, PoolExhaustedError)
"""Errors after which a user's ``/channels`` answers from that user's cache."""


class TenantChannels:
    """``/channels`` per user from ``pool`` (tenant id: the ``user_id`` query string).

    ``cache``: one :class:`ChannelCache` for all users (rows keyed ``<user_id>/<username>``).
    ``timeout``: seconds one request may spend on Telegram, connecting included.
    """

    def __init__(self, pool: GuardedClientPool, *, cache: ChannelCache | None = None,
                 channels: Sequence[str] = DEFAULT_CHANNELS, timeout: float = 2.0) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.pool = pool
        self.cache = cache if cache is not None else ChannelCache()
        self.channels = tuple(channels)
        self.timeout = float(timeout)

    def _keys(self, user_id: str) -> list[str]:
        return [f"{user_id}/{name}" for name in self.channels]

    def _store(self, user_id: str, rows: list[dict[str, Any]]) -> None:
        self.cache.store([{**r, "username": f"{user_id}/{r['username']}"} for r in rows])

    def _load(self, user_id: str) -> list[dict[str, Any]]:
        prefix = f"{user_id}/"
        return [{**r, "username": r["username"][len(prefix):]}
                for r in self.cache.load(self._keys(user_id))]

    async def channels_payload(self, user_id: str) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, body)`` of ``/channels?user_id=...``."""
        reason: list[str] = []

        def note(error: BaseException | None) -> None:
            reason.append(type(error).__name__ if error is not None else "unavailable")

        async def live() -> list[dict[str, Any]]:
            async with self.pool.lease(user_id) as client:
                return await fetch_channels(client, self.channels)

        sentinel: list[dict[str, Any]] = []
        try:
            rows = await with_fallback(live, sentinel, timeout=self.timeout,
                                       guard=lambda: self.pool.client_of(user_id),
                                       errors=POOL_FALLBACK_ERRORS, on_fallback=note)
        except UnknownTenantError:
            return 404, {"source": "none", "user_id": user_id, "reason": "UnknownTenantError",
                         "channels": []}
        except PoolClosedError:
            return 503, {"source": "none", "user_id": user_id, "reason": "PoolClosedError",
                         "channels": []}
        why = reason[0] if reason else ""
        if rows is not sentinel:
            self._store(user_id, rows)
            return 200, {"source": "live", "user_id": user_id, "reason": "", "channels": rows}
        cached = self._load(user_id)
        if not cached:
            return 503, {"source": "none", "user_id": user_id, "reason": why, "channels": []}
        return 200, {"source": "cache", "user_id": user_id, "reason": why, "channels": cached}

    def health(self) -> dict[str, Any]:
        """Pool totals and the users that are down now (with the reason): broken, or a
        client whose guard is unavailable; an idle user (no client now) is not flagged."""
        return {**self.pool.stats(),
                "unavailable": {str(t): r for t, r in self.pool.health(down_only=True).items()}}

    async def close(self) -> None:
        """Close the pool (every user's client disconnected)."""
        await self.pool.close()


__all__ = ["POOL_FALLBACK_ERRORS", "TenantChannels"]
