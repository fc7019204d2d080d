"""Waiters move up across processes on shared storage (the rate limiter's give-back path).

With local storage a waiter that gives its slot back (cancelled, deadline) re-reserves the
waiters queued behind it at once (:meth:`RateLimiter._move_up`). With shared storage the waiters
behind it may live in other processes, so each process moves its own: a storage implementing
:class:`MoveUpStorage` (Redis: :mod:`telethon_guard.storage.redis_moveup`) counts give-backs
of future slots per account (an epoch), and :class:`SharedMoveUp` asks it, in ONE round trip
per account, every :data:`MOVE_UP_INTERVAL` seconds while this process has waiters (and at
once after a give-back of its own): when the epoch changed, every waiter of the account is
re-placed at the earliest slot the reservations ahead of it allow (never later) and its timer
is moved. So a slot given back in one process is used by a waiter of another within
``MOVE_UP_INTERVAL`` plus one round trip. While nothing is given back a round costs one
``GET`` on the server; while the process has no waiter nothing runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from .clock import Clock
from .storage import LimitSpec

log = logging.getLogger("telethon_guard.limiter")

MOVE_UP_INTERVAL = 0.1
"""Seconds between move-up rounds while this process has waiters: the bound on how late a
waiter learns of a slot given back in another process (plus one round trip). Costs at most one
round trip per account per interval, only while calls wait."""
MOVE_UP_BATCH = 64
"""Waiters of one account re-placed per round (the first ones in FIFO order; a waiter further
back moves at a later round)."""


@runtime_checkable
class MoveUpStorage(Protocol):
    """A shared storage whose waiters can move up to slots given back by any process."""

    async def move_up(self, account_tag: str, seen: bytes | None,
                      waiting: Sequence[tuple[Sequence[LimitSpec], Any]],
                      ) -> tuple[bytes, list[float | None]] | None:
        """See :meth:`telethon_guard.storage.redis.RedisStorage.move_up`."""
        ...


class _Waiting(Protocol):
    specs: Sequence[LimitSpec]
    token: Any
    wake_at: float
    fut: asyncio.Future[None]


class SharedMoveUp:
    """Moves this process's waiters up on a :class:`MoveUpStorage`.

    ``waiters``: the limiter's live waiter table (FIFO insertion order), read only; ``arm(w)``
    re-arms a waiter's timer after its ``wake_at`` moved. ``interval``: seconds between rounds
    (> 0). All times on ``clock`` (monotonic seconds). Storage errors end a round quietly (the
    waiters keep their slots: correct, only later).
    """

    __slots__ = ("_arm", "_clock", "_seen", "_storage", "_task", "_waiters", "interval",
                 "rounds")

    def __init__(self, storage: MoveUpStorage, clock: Clock, waiters: dict[Any, None],
                 arm: Callable[[Any], None], interval: float = MOVE_UP_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self._storage = storage
        self._clock = clock
        self._waiters = waiters
        self._arm = arm
        self._seen: dict[str, bytes | None] = {}
        self._task: asyncio.Task[None] | None = None
        self.interval = interval
        self.rounds = 0
        """Rounds that asked the storage (for tests)."""

    def watch(self, waiter: _Waiting) -> None:
        """A new waiter: its reservation may predate a give-back this process already saw,
        so the next round re-places every waiter of its account; start the rounds."""
        if waiter.specs:
            self._seen.pop(_tag(waiter.specs), None)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def kick(self) -> None:
        """A give-back of this process completed: move its waiters up now."""
        if self._waiters:
            await self.round()

    async def _run(self) -> None:
        while self._waiters:
            await self._clock.sleep(self.interval)
            try:
                await self.round()
            except Exception:  # the storage reports outages itself (StorageFallback)
                log.debug("rate limiter: a move-up round failed", exc_info=True)

    async def round(self) -> None:
        """One round: per account with waiters, one ``move_up`` of its first
        :data:`MOVE_UP_BATCH` waiters; re-arm those given an earlier slot."""
        groups: dict[str, list[_Waiting]] = {}
        full: set[str] = set()
        for w in list(self._waiters):
            if w.fut.done() or not isinstance(w.token, bytes) or not w.specs:
                continue
            tag = _tag(w.specs)
            group = groups.setdefault(tag, [])
            if len(group) >= MOVE_UP_BATCH:
                full.add(tag)
                continue
            group.append(w)
        for tag, group in groups.items():
            self.rounds += 1
            ans = await self._storage.move_up(tag, self._seen.get(tag),
                                              [(w.specs, w.token) for w in group])
            if ans is None:
                continue
            epoch, delays = ans
            # Waiters left out of this batch were not re-placed: ask again next round.
            self._seen[tag] = None if tag in full else epoch
            now = self._clock.now()
            for w, delay in zip(group, delays, strict=True):
                if delay is None or w.fut.done():
                    continue
                at = now + max(0.0, delay)
                if at < w.wake_at:
                    w.wake_at = at
                    self._arm(w)

    def close(self) -> None:
        """Stop the rounds (the limiter has no waiter left to move, or is going away)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None


def _tag(specs: Sequence[LimitSpec]) -> str:
    return specs[0].key.partition("/")[0]


__all__ = ["MOVE_UP_BATCH", "MOVE_UP_INTERVAL", "MoveUpStorage", "SharedMoveUp"]
