"""One connection budget per DC for every guarded client of a process (or of a fleet).

Telegram answers transport ``-429`` when one IP opens too many connections
(core.telegram.org/mtproto/mtproto-transports). Each
:class:`~telethon_guard.reconnect.ReconnectPacer` paces *one* client; a process with hundreds
of clients behind one IP needs one budget shared by all of them, which TDLib's per-client
``ConnectionCreator`` flood control does not give and which telegram-bot-api (many TDLib
clients in one process) adds on top as a per-IP limit (design-notes §9).

:class:`ConnectionBudget` grants *connection slots* per target (a DC address ``"host:port"``;
one process has one IP, so one target is "this IP to that DC"). Every new connection, connect
retry and reconnect of a :class:`~telethon_guard.sender.GuardedMTProtoSender` (the auth-key
handshake runs on the connection it was granted) takes a slot first. Two sets of windows apply:

* ``windows`` (default :data:`DEFAULT_BUDGET_WINDOWS`: 10 per 1 s, 60 per 10 s) always.
  Telegram publishes no per-IP connection figure; these are our choice: a burst large enough
  that a service starting a few dozen clients does not notice, a sustained rate (6 per second)
  below what the incident's -429 storm showed (12 per second, issue 12). Configurable.
* ``storm_windows`` (default :data:`DEFAULT_STORM_WINDOWS`: 1 per 1 s, the first window of
  TDLib's ``ConnectionCreator`` per-client flood control, ``flood_control.add_limit(1, 1)`` in
  ``td/telegram/net/ConnectionCreator.cpp``) in addition while the target *refuses*: for
  ``storm_seconds`` (default 5 s) after the last :meth:`ConnectionBudget.record_refused`, once
  two or more clients were refused (one client refused alone is paced by its own pacer), and
  only until a new connection to the target is answered again
  (:meth:`ConnectionBudget.record_connected`: the storm is over, so the process goes back to
  the normal windows at once instead of holding the storm pace ``storm_seconds`` longer; a
  later refusal puts the storm windows back).
  While Telegram refuses this IP, the whole process opens at most one connection per second,
  as one TDLib client would at most. (TDLib's longer windows, 2 per 4 s and 3 per 8 s, are
  per client: applied to a whole process they would take minutes to reconnect a few hundred
  clients after a storm; each client's own pacer still applies them to itself.)

Slots are reserved in the storage's sliding windows (the rate limiter's reservation, see
:mod:`telethon_guard.storage`): a reservation commits the earliest free slot at once and slots
never go backwards, so waiters are served first come, first served. A client refused again
goes back through its own pacer's backoff and then queues *behind* the clients already waiting:
a storm hitting every client reconnects them in a paced, round-robin order. With a shared
storage (:class:`~telethon_guard.storage.redis.RedisStorage`) the budget, and the "refusing"
mark, are shared by every process using it (one Lua reservation per slot; the Redis server's
clock).

All times are seconds on the budget's clock (monotonic by default).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Hashable, Sequence
from typing import Any

from .clock import Clock, MonotonicClock
from .config import Windows
from .config import _windows as _validate_windows
from .errors import GuardConfigError
from .storage import GuardStorage, LimitSpec

__all__ = [
    "DEFAULT_BUDGET_MARGIN",
    "DEFAULT_BUDGET_WINDOWS",
    "DEFAULT_STORM_WINDOWS",
    "ConnectionBudget",
    "connection_target",
    "note_connected",
    "note_refused",
    "process_budget",
    "set_process_budget",
    "take_connection_slot",
]

log = logging.getLogger("telethon_guard.budget")

DEFAULT_BUDGET_WINDOWS: Windows = ((10, 1.0), (60, 10.0))
"""New connections per target (DC address) for the whole process: 10 per 1 s, 60 per 10 s."""

DEFAULT_BUDGET_MARGIN = 0.05
"""Seconds added to every budget window's period (see :class:`ConnectionBudget`)."""

DEFAULT_STORM_WINDOWS: Windows = ((1, 1.0),)
"""While a target refuses (-429): 1 new connection per second for the whole process (the first
window of TDLib's ``ConnectionCreator`` flood control)."""


class ConnectionBudget:
    """Shared connection slots per target, with a stricter pace while the target refuses.

    :param windows: ``(count, seconds)`` pairs: at most ``count`` new connections to one target
        in any ``seconds``. Default :data:`DEFAULT_BUDGET_WINDOWS`.
    :param storm_windows: windows added while the target refuses; ``()`` for none. Default
        :data:`DEFAULT_STORM_WINDOWS` (1 per second).
    :param storm_seconds: seconds after the last :meth:`record_refused` the storm windows hold.
        Default 5.0.
    :param storm_sources: different clients (refusal sources) refused within ``storm_seconds``
        that start the storm windows. Default 2: a single client refused alone is paced by
        its own reconnect pacer only.
    :param storage: where slots and the refusing mark live: a
        :class:`~telethon_guard.storage.GuardStorage` (a ``RedisStorage`` shares the budget
        between processes). Default: a new in-memory storage on ``clock``.
    :param clock: a :class:`~telethon_guard.clock.Clock` (``now()``, ``sleep()``), monotonic
        seconds. Default :class:`~telethon_guard.clock.MonotonicClock`.
    :param prefix: key prefix in the storage. Default ``"conn"``.
    :param margin: seconds added to every window's period (default
        :data:`DEFAULT_BUDGET_MARGIN`, as ``GuardConfig.rate_margin`` for requests): a slot is
        granted when the connection starts, the server counts it one TCP handshake later, so
        without a margin slots granted exactly one period apart can arrive inside one window
        (measured: 18 new connections in one sliding second under a 10 per 1 s budget).
    :raises GuardConfigError: on bad windows, ``storm_seconds``, ``storm_sources``, ``storage``,
        ``clock`` or ``margin`` (naming the field), at construction.
    """

    __slots__ = ("_clock", "_local", "_margin", "_prefix", "_refusing_seen", "_sources", "_specs",
                 "_storage", "_storm_seconds", "_storm_sources", "_storm_windows", "_wakers",
                 "_windows", "granted", "lifted", "max_wait", "refusals", "waited", "waiting")

    def __init__(
        self,
        windows: Sequence[tuple[int, float]] = DEFAULT_BUDGET_WINDOWS,
        *,
        storm_windows: Sequence[tuple[int, float]] = DEFAULT_STORM_WINDOWS,
        storm_seconds: float = 5.0,
        storm_sources: int = 2,
        storage: GuardStorage | None = None,
        clock: Clock | None = None,
        prefix: str = "conn",
        margin: float = DEFAULT_BUDGET_MARGIN,
    ) -> None:
        if (isinstance(margin, bool) or not isinstance(margin, (int, float))
                or not math.isfinite(margin) or margin < 0):
            raise GuardConfigError("margin", f"must be a finite number >= 0 (seconds), "
                                   f"got {margin!r}")
        self._margin = float(margin)
        self._windows = _validate_windows("windows", windows)
        if not self._windows:
            raise GuardConfigError("windows", "at least one (count, seconds) window is required")
        self._storm_windows = _validate_windows("storm_windows", storm_windows)
        if (isinstance(storm_seconds, bool) or not isinstance(storm_seconds, (int, float))
                or not math.isfinite(storm_seconds) or storm_seconds < 0):
            raise GuardConfigError("storm_seconds",
                                   f"must be a finite number >= 0, got {storm_seconds!r}")
        self._storm_seconds = float(storm_seconds)
        if (isinstance(storm_sources, bool) or not isinstance(storm_sources, int)
                or storm_sources < 1):
            raise GuardConfigError("storm_sources", f"must be an int >= 1, got {storm_sources!r}")
        self._storm_sources = storm_sources
        self._sources: dict[str, dict[Hashable, float]] = {}
        # Targets this process saw refusing (a shared storage is asked to lift only for these).
        self._refusing_seen: set[str] = set()
        # Storm-paced waiters per target, in the order they started waiting (woken on a lift).
        self._wakers: dict[str, dict[asyncio.Future[None], None]] = {}
        if clock is None:
            clock = MonotonicClock()
        if not callable(getattr(clock, "now", None)) or not callable(getattr(clock, "sleep", None)):
            raise GuardConfigError("clock", "must have now() and async sleep(seconds)")
        self._clock = clock
        if storage is None:
            from .storage.memory import MemoryStorage

            storage = MemoryStorage(clock)
        elif not isinstance(storage, GuardStorage):
            raise GuardConfigError("storage", f"{storage!r} does not implement GuardStorage")
        self._storage = storage
        self._local: Any = storage if getattr(storage, "is_local", False) else None
        if not isinstance(prefix, str) or not prefix:
            raise GuardConfigError("prefix", "must be a non-empty string")
        self._prefix = prefix
        self._specs: dict[str, tuple[tuple[LimitSpec, ...], tuple[LimitSpec, ...], str, str]] = {}
        self.granted: dict[str, int] = {}
        """Slots granted per target (lifetime)."""
        self.refusals: dict[str, int] = {}
        """:meth:`record_refused` calls per target (lifetime)."""
        self.lifted: dict[str, int] = {}
        """Storm windows lifted by :meth:`record_connected` before they expired, per target
        (lifetime)."""
        self.waited = 0.0
        """Seconds waited for slots, summed over every grant."""
        self.max_wait = 0.0
        """Longest wait for one slot, seconds."""
        self.waiting = 0
        """Callers waiting for a slot now."""

    @property
    def windows(self) -> Windows:
        return self._windows

    @property
    def storm_windows(self) -> Windows:
        return self._storm_windows

    @property
    def storage(self) -> GuardStorage:
        return self._storage

    def _keys(self, target: str
              ) -> tuple[tuple[LimitSpec, ...], tuple[LimitSpec, ...], str, str]:
        """(normal specs, storm specs, the "refusing" mark's scope, the "answered" mark's
        scope) of ``target``."""
        keys = self._specs.get(target)
        if keys is None:
            if len(self._specs) >= 4096:  # bounded: a process talks to a handful of DCs
                self._specs.clear()
            base = f"{self._prefix}/{target}"
            m = self._margin
            normal = (LimitSpec(base, tuple((n, p + m) for n, p in self._windows)),)
            # One log of attempts for both: the storm windows count the attempts made before
            # the refusal too.
            storm = ((LimitSpec(base, _validate_windows("storm_windows", tuple(
                (n, p + m) for n, p in self._windows + self._storm_windows))),)
                if self._storm_windows else normal)
            keys = self._specs[target] = (normal, storm, f"{base}/refusing",
                                          f"{base}/answered")
        return keys

    async def refusing_for(self, target: str) -> float:
        """Seconds the storm windows still hold for ``target`` (0.0: not refusing)."""
        _, _, refusing, answered = self._keys(str(target))
        if self._local is not None:
            left: float = self._local.flood_left_sync(refusing)
            return left
        # Shared storage: a lift is a newer "answered" mark of the same length, not a delete
        # (a process that saw the refusing mark may write it back, storage/redis.py); the
        # later of the two marks (more seconds left) says which is true now.
        left = await self._storage.flood_left(refusing)
        if left <= 0:
            return 0.0
        return left if left > await self._storage.flood_left(answered) else 0.0

    async def acquire(self, target: str) -> float:
        """Wait for a connection slot to ``target`` and take it; return the seconds waited.

        ``target``: the DC's address (``"host:port"``) or any stable DC name. Outside a storm
        the slot is reserved at once (first come, first served). While the target refuses,
        no future slot is held: the caller waits for the next free one (or the end of the
        storm) and asks again, so no queue of storm-paced slots outlives the storm.
        Cancellation while waiting gives the slot back and propagates. Raises whatever a
        shared storage raises when unreachable (``StorageUnavailableError`` with
        ``storage_fallback="fail"``).
        """
        target = str(target)
        normal, storm, _, _ = self._keys(target)
        waited = 0.0
        self.waiting += 1
        try:
            while True:
                refusing = await self.refusing_for(target)
                if refusing > 0:
                    self._refusing_seen.add(target)
                specs = storm if refusing > 0 else normal
                if self._local is not None:
                    delay, token = self._local.reserve_sync(specs)
                else:
                    delay, token = await self._storage.reserve(specs)
                if delay <= 0:
                    break
                if refusing > 0:
                    # Storm pace: hold no future slot (a queue of them would outlive the
                    # storm); wait for the next free one, the end of the storm or its lift
                    # (record_connected), and ask again.
                    await self._release(specs, token)
                    waited += await self._storm_nap(target, min(delay, refusing))
                    continue
                try:
                    await self._clock.sleep(delay)
                except asyncio.CancelledError:
                    await self._release(specs, token)
                    raise
                waited += delay
                break
        finally:
            self.waiting -= 1
        self.waited += waited
        if waited > self.max_wait:
            self.max_wait = waited
        self.granted[target] = self.granted.get(target, 0) + 1
        return waited

    async def _storm_nap(self, target: str, seconds: float) -> float:
        """Sleep ``seconds`` or until the target's storm is lifted in this process, whichever
        comes first; returns the seconds slept. Waiters woken by a lift resume in the order
        they started waiting (first come, first served)."""
        waker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        wakers = self._wakers.setdefault(target, {})
        wakers[waker] = None
        start = self._clock.now()
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            wakers.pop(waker, None)
            if not wakers and self._wakers.get(target) is wakers:
                del self._wakers[target]
        return max(0.0, self._clock.now() - start)

    def _wake(self, target: str) -> None:
        """Wake the target's storm-paced waiters, oldest first."""
        for waker in list(self._wakers.get(target, ())):
            if not waker.done():
                try:
                    waker.set_result(None)
                except RuntimeError:  # its loop is closed: its waiter is gone with it
                    pass

    async def _release(self, specs: tuple[LimitSpec, ...], token: Any) -> None:
        if self._local is not None:
            self._local.release_sync(specs, token)
        else:
            await asyncio.shield(self._storage.release(specs, token))

    def note_refused(self, target: str, source: Hashable = None) -> None:
        """:meth:`record_refused` from synchronous code: at once on local storage, else in a
        background task (held until done; errors logged)."""
        target = str(target)
        if self._local is not None:
            self._mark_refused(target, source)
            return
        task = asyncio.get_running_loop().create_task(self.record_refused(target, source))
        _background.add(task)
        task.add_done_callback(_finished)

    def _mark_refused(self, target: str, source: Hashable) -> bool:
        """Count the refusal; apply the local mark; ``False`` when the storage must do it."""
        self.refusals[target] = self.refusals.get(target, 0) + 1
        if not self._storm_windows or self._storm_seconds <= 0:
            return True
        if source is not None:
            now = self._clock.now()
            seen = self._sources.setdefault(target, {})
            seen[source] = now
            for s, t in list(seen.items()):
                if now - t > self._storm_seconds:
                    del seen[s]
            if len(seen) < self._storm_sources:
                return True  # one client refused alone: its own pacer paces it
        self._refusing_seen.add(target)
        if self._local is None:
            return False
        self._local.flood_block_sync(self._keys(target)[2], self._storm_seconds)
        return True

    async def record_refused(self, target: str, source: Hashable = None) -> None:
        """``target`` refused a connection (transport -429): the storm windows apply to it for
        the next ``storm_seconds`` seconds, for every client sharing this budget.

        ``source``: who was refused (e.g. the connection object's id). With a source, the
        storm windows start once ``storm_sources`` different sources were refused within
        ``storm_seconds`` (one client refused alone is paced by its own
        :class:`~telethon_guard.reconnect.ReconnectPacer`); ``None`` starts them at once.
        """
        target = str(target)
        if not self._mark_refused(target, source):
            await self._storage.flood_block(self._keys(target)[2], self._storm_seconds)

    def note_connected(self, target: str) -> None:
        """:meth:`record_connected` from synchronous code: at once on local storage (a dict
        lookup when the target is not refusing), else in a background task, and only for a
        target this process saw refusing."""
        target = str(target)
        if self._local is not None:
            scope = self._keys(target)[2]
            if self._local.flood_left_sync(scope) > 0:
                self._local.flood_clear_sync(scope)
                self._lifted(target)
            return
        if target not in self._refusing_seen:
            return
        task = asyncio.get_running_loop().create_task(self.record_connected(target))
        _background.add(task)
        task.add_done_callback(_finished)

    async def record_connected(self, target: str) -> None:
        """A new connection to ``target`` was answered (the server sent a message on it): the
        target no longer refuses, so its storm windows are lifted now, for every client
        sharing this budget (on a shared storage: every process), instead of
        ``storm_seconds`` after the last refusal. Storm-paced waiters of this process ask
        again at once, oldest first, and are served at the normal windows. A later
        :meth:`record_refused` puts the storm windows back (the refusal sources seen within
        ``storm_seconds`` still count)."""
        target = str(target)
        scope = self._keys(target)[2]
        if self._local is not None:
            if self._local.flood_left_sync(scope) > 0:
                self._local.flood_clear_sync(scope)
                self._lifted(target)
            return
        if await self.refusing_for(target) <= 0:
            self._refusing_seen.discard(target)
            return
        # A newer "answered" mark outlives the refusing one (see refusing_for).
        await self._storage.flood_block(self._keys(target)[3], self._storm_seconds)
        self._lifted(target)

    def _lifted(self, target: str) -> None:
        self._refusing_seen.discard(target)
        self.lifted[target] = self.lifted.get(target, 0) + 1
        log.info("connection budget: %s answers again; storm pace lifted", target)
        self._wake(target)

    def stats(self) -> dict[str, Any]:
        """``{"granted": {target: n}, "refusals": {target: n}, "lifted": {target: n},
        "waited": s, "max_wait": s, "waiting": n}`` (seconds)."""
        return {"granted": dict(self.granted), "refusals": dict(self.refusals),
                "lifted": dict(self.lifted), "waited": self.waited, "max_wait": self.max_wait,
                "waiting": self.waiting}

    def __repr__(self) -> str:
        return (f"ConnectionBudget(windows={self._windows!r}, "
                f"storm_windows={self._storm_windows!r}, storage={self._storage.name!r})")


_process_budget: ConnectionBudget | None = None
_disabled = False
_background: set[asyncio.Task[None]] = set()


def _finished(task: asyncio.Task[None]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("connection budget: recording a refusal failed: %r", task.exception())


def process_budget() -> ConnectionBudget | None:
    """The budget every guarded sender of this process takes its connection slots from
    (created on first use with the defaults); ``None`` after ``set_process_budget(None)``."""
    global _process_budget
    if _process_budget is None and not _disabled:
        _process_budget = ConnectionBudget()
    return _process_budget


def set_process_budget(budget: ConnectionBudget | None) -> ConnectionBudget | None:
    """Replace the process-wide budget (e.g. one on Redis storage, or other windows); ``None``
    switches budgeting off. Returns the previous budget (``None`` if none was set up).

    :raises GuardConfigError: ``budget`` is neither a :class:`ConnectionBudget` nor ``None``.
    """
    global _process_budget, _disabled
    if budget is not None and not isinstance(budget, ConnectionBudget):
        raise GuardConfigError("budget", f"must be a ConnectionBudget or None, got "
                               f"{type(budget).__name__}")
    previous = _process_budget
    _process_budget = budget
    _disabled = budget is None
    return previous


def connection_target(connection: Any) -> str:
    """The budget target of a Telethon ``Connection``: ``"host:port"`` of the DC it connects
    to (``"dc:<id>"`` when the address is unknown)."""
    from ._telethon import connection_address, connection_dc

    address = connection_address(connection)
    if address is not None:
        return f"{address[0]}:{address[1]}"
    return f"dc:{connection_dc(connection)}"


async def take_connection_slot(connection: Any) -> float:
    """Wait for a slot of the process budget to open ``connection`` (a Telethon
    ``Connection``); returns the seconds waited (0.0 with budgeting switched off). The hook
    the guarded sender calls before every connection attempt."""
    budget = process_budget()
    if budget is None:
        return 0.0
    return await budget.acquire(connection_target(connection))


def note_refused(connection: Any) -> None:
    """The DC of ``connection`` answered transport -429: the process budget paces it at the
    storm windows for a while (no-op with budgeting switched off). Synchronous; the hook the
    guarded sender calls on a -429."""
    budget = process_budget()
    if budget is not None:
        budget.note_refused(connection_target(connection), id(connection))


def note_connected(connection: Any) -> None:
    """A new connection (``connection``, a Telethon ``Connection``) was answered by its DC:
    the process budget lifts the DC's storm windows if they hold (no-op with budgeting
    switched off). Synchronous; the hook the guarded sender calls on the first message it
    receives on each new connection."""
    budget = process_budget()
    if budget is not None:
        budget.note_connected(connection_target(connection))
