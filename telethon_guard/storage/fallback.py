"""What a shared storage does while its server cannot serve guard state: the fallback policy.

:class:`OutageFallback` wraps each operation of a shared backend (``await fallback.run(remote,
local)``): ``remote()`` runs the operation on the server and raises :class:`BackendUnavailable`
when the server cannot answer; ``local()`` runs the same operation on a process-local
:class:`~telethon_guard.storage.memory.MemoryStorage` (:attr:`OutageFallback.local`).

* policy ``"fallback"`` (``GuardConfig.storage_fallback="local"``): the operation is served by
  the local storage; the switch is logged once and emitted once as
  :class:`~telethon_guard.events.StorageFallback` (``active=True``). The server is tried again
  at most every ``probe_interval`` seconds of the guard clock; when it answers, state is shared
  again (``StorageFallback(active=False)``) and flood blocks learned meanwhile are handed to
  the backend's ``copy_back`` (so the other processes see them). Under either policy the
  listeners registered with :meth:`OutageFallback.on_recovery` are then called, once (the
  shared paces re-publish what did not reach the server: :mod:`telethon_guard.shared_pace`).
* policy ``"fail"``: :class:`~telethon_guard.errors.StorageUnavailableError` (a
  ``ConnectionError``) is raised ``from`` the backend's error; between probes it is raised at
  once, without a network attempt.

The policy knows nothing of Redis: :class:`~telethon_guard.storage.redis.RedisStorage` decides
which errors mean "unavailable" and uses one :class:`OutageFallback` for all its operations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import GuardConfigError, StorageUnavailableError
from ..events import StorageFallback
from .memory import MemoryStorage

T = TypeVar("T")

logger = logging.getLogger("telethon_guard.storage")

POLICIES = {"fallback": "fallback", "local": "fallback", "fail": "fail"}
"""Accepted spellings of the policy (``storage_fallback``): ``"local"`` (the documented value) is
``"fallback"`` internally."""


class BackendUnavailable(Exception):
    """Raised by a backend's ``remote()`` when its server cannot serve guard state now;
    ``reason`` is a short text for events and logs (no credentials). Raise it ``from`` the
    original error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutageFallback:
    """The fallback policy of one shared storage named ``name`` (see the module docstring).

    ``policy``: ``"local"`` (alias ``"fallback"``) or ``"fail"`` (raises
    ``GuardConfigError(setting)`` otherwise; ``setting`` is the name the caller was given it
    under, ``"storage_fallback"`` or its deprecated alias ``"on_unavailable"``);
    ``probe_interval``: seconds between attempts to reach the server while unavailable;
    ``clock``: the guard clock (``now()``, monotonic seconds; ``None``: ``time.monotonic``), also
    the local storage's; ``events``: an
    :class:`~telethon_guard.events.EventBus` for ``StorageFallback`` (more via
    :meth:`bind_events`; with none, the switch is logged).
    """

    def __init__(self, name: str, policy: str, probe_interval: float, *, clock: Any = None,
                 max_peer_keys: int = 10_000, events: Any = None,
                 copy_back: Callable[[dict[str, float]], Awaitable[None]] | None = None,
                 setting: str = "storage_fallback",
                 ) -> None:
        checked = POLICIES.get(policy) if isinstance(policy, str) else None
        if checked is None:
            raise GuardConfigError(setting,
                                   f"must be 'local' (or 'fallback') or 'fail', got {policy!r}")
        self.name = name
        self.policy = checked
        self.probe_interval = float(probe_interval)
        self._now: Callable[[], float] = time.monotonic if clock is None else clock.now
        self.local = MemoryStorage(clock, max_peer_keys=max_peer_keys)
        """The local storage (serves operations only while the server is unavailable and the
        policy is ``"fallback"``)."""
        self.copy_back = copy_back
        self._buses: list[Any] = [events] if events is not None else []
        self._down_since: float | None = None
        self.reason = ""
        """Why the server last could not serve (``""`` before any failure); the text of every
        ``StorageUnavailableError`` raised under ``"fail"``."""
        self._probe_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[Callable[[], None]] = []
        self.fallbacks = 0
        """Number of times the server became unavailable (for stats and tests)."""

    def bind_events(self, bus: Any) -> None:
        """Also deliver :class:`~telethon_guard.events.StorageFallback` to ``bus``."""
        if bus is not None and all(b is not bus for b in self._buses):
            self._buses.append(bus)

    @property
    def buses(self) -> tuple[Any, ...]:
        """The event buses :class:`~telethon_guard.events.StorageFallback` is delivered to."""
        return tuple(self._buses)

    def on_recovery(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once, when the server answers again after the current outage
        (registered while the server is available: after the next one). One-shot: a listener
        that wants a later recovery registers again. Called synchronously by the operation
        that found the server back, after ``StorageFallback(active=False)`` and the copy-back
        started: it must not block (start tasks for I/O); an exception it raises is logged.
        Listeners are kept until then (callers register once per outage)."""
        self._listeners.append(listener)

    def _call_listener(self, listener: Callable[[], None]) -> None:
        try:
            listener()
        except Exception:
            logger.warning("a recovery listener of %s failed", self.name, exc_info=True)

    @property
    def available(self) -> bool:
        """``False`` while the server is considered unavailable (failure until recovery)."""
        return self._down_since is None

    async def run(self, remote: Callable[[], Awaitable[T]], local: Callable[[], T]) -> T:
        """``await remote()``; while unavailable (or when it raises
        :class:`BackendUnavailable`) ``local()`` under the ``"fallback"`` policy, else
        ``StorageUnavailableError``."""
        if self._down_since is not None and self._skip():
            if self.policy == "fail":
                raise self._fail(self.reason)
            return local()
        try:
            reply = await remote()
        except BackendUnavailable as exc:
            self._unavailable(exc.reason)
            self.reason = exc.reason
            if self.policy == "fail":
                raise self._fail(exc.reason) from (exc.__cause__ or exc)
            return local()
        if self._down_since is not None:
            self._recovered()
        return reply

    def _skip(self) -> bool:
        """``True`` while unavailable and no probe is due (then one caller probes)."""
        now = self._now()
        if now < self._probe_at:
            return True
        self._probe_at = now + self.probe_interval
        return False

    def _fail(self, reason: str) -> StorageUnavailableError:
        detail = f": {reason}" if reason else ""
        return StorageUnavailableError(self.name,
                                       f"guard storage {self.name} is unavailable{detail}")

    def _emit(self, active: bool, reason: str) -> None:
        event = StorageFallback(self.name, reason, active)
        if self._buses:
            for bus in self._buses:
                bus.emit(event)  # the bus also logs it
        elif active:
            logger.error("%s", event.describe())
        else:
            logger.warning("%s", event.describe())

    def _unavailable(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = self._now()
            self._probe_at = self._down_since + self.probe_interval
            self.fallbacks += 1
            what = ("using local in-memory state" if self.policy == "fallback"
                    else "failing calls")
            self._emit(True, f"{reason}; {what} until it answers again")

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        down = self._now() - self._down_since
        self._down_since = None
        self._emit(False, f"answering again after {down:.1f} s; guard state shared again")
        if self.copy_back is not None:  # it may add blocks it knows of its own
            blocks = self.local.flood_scopes() if self.policy == "fallback" else {}
            task = asyncio.get_running_loop().create_task(self._copy(blocks))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            self._call_listener(listener)

    async def _copy(self, blocks: dict[str, float]) -> None:
        """Flood blocks learned while the server was away are made visible to the others."""
        assert self.copy_back is not None
        try:
            await self.copy_back(blocks)
        except Exception:  # best effort: the blocks still hold locally
            logger.warning("could not copy %d flood block(s) learned during the %s outage "
                           "back to %s (they still hold in this process)", len(blocks),
                           self.name, self.name, exc_info=True)


__all__ = ["POLICIES", "BackendUnavailable", "OutageFallback"]
