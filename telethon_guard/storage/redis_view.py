"""Keeping a shared storage's stats view fresh without a manual ``refresh_view()``.

``client.guard.stats()`` is synchronous and does no I/O: with Redis storage it answers from
what this process last learned from Redis (:class:`~telethon_guard.storage.StatsView`). Blocks
and breakers recorded by *other* processes enter that view only through
:meth:`~telethon_guard.storage.redis.RedisStorage.refresh_view` (a ``SCAN`` of the prefix and
one script per key found). :class:`ViewRefresher` makes that lazy and bounded: each
``stats()`` call pokes it; when the view is older than ``max_age`` seconds (default
:data:`VIEW_MAX_AGE`) and no refresh is running, one refresh starts in the background and
``stats()`` returns at once with the view as it is. So a service that reads stats regularly
(a metrics scrape, a health page) sees another process's block at most ``max_age`` seconds
plus one refresh after it was recorded, and Redis is scanned at most once per ``max_age``
seconds however often stats are read; nothing runs while nobody reads stats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("telethon_guard.storage.redis")

VIEW_MAX_AGE = 1.0
"""Seconds a shared storage's stats view may be old before ``stats()`` starts a refresh."""


class ViewRefresher:
    """Starts ``refresh()`` in the background when the view is older than ``max_age`` seconds
    (on ``now()``, monotonic seconds). Raises ``ValueError`` when ``max_age`` is not >= 0."""

    __slots__ = ("_now", "_refresh", "_task", "at", "max_age", "refreshes")

    def __init__(self, refresh: Callable[[], Awaitable[None]], now: Callable[[], float],
                 max_age: float = VIEW_MAX_AGE) -> None:
        if not max_age >= 0:
            raise ValueError(f"max_age must be >= 0 seconds, got {max_age!r}")
        self._refresh = refresh
        self._now = now
        self._task: asyncio.Task[None] | None = None
        self.max_age = max_age
        self.at = float("-inf")
        """Clock time the last refresh started."""
        self.refreshes = 0
        """Refreshes started (for tests)."""

    def poke(self) -> asyncio.Task[None] | None:
        """Start a refresh when the view is stale and none is running (needs a running event
        loop; without one nothing happens). Returns the running refresh task, if any.
        Never raises; a failed refresh is logged at debug level and keeps the view."""
        task = self._task
        if task is not None and not task.done():
            return task
        now = self._now()
        if now - self.at < self.max_age:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        self.at = now
        self.refreshes += 1
        self._task = loop.create_task(self._run())
        return self._task

    async def _run(self) -> None:
        try:
            await self._refresh()
        except Exception:  # outages are reported by the storage (StorageFallback)
            log.debug("refreshing the stats view from Redis failed", exc_info=True)

    def cancel(self) -> None:
        """Stop a refresh in flight (the storage is closing)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()


def poke_view(storage: Any) -> None:
    """``storage.view_refresher.poke()`` when the storage has one (shared storage)."""
    refresher = getattr(storage, "view_refresher", None)
    if isinstance(refresher, ViewRefresher):
        refresher.poke()


__all__ = ["VIEW_MAX_AGE", "ViewRefresher", "poke_view"]
