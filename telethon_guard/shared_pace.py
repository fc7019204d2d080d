"""Adaptive paces shared between processes on shared storage (Redis).

A pace learned from a FLOOD_WAIT (:mod:`telethon_guard.pacing`) describes the account's
method, whatever process sent the calls; its limiter window ``acct:<a>/pace:<m>`` already
lives in Redis (every process's reservations count in it). What each process held alone was
the pace *itself*: the window to apply, its ramp, hold, relaxation and drop. Now:

* **Publish.** When a FLOOD_WAIT sets or changes a method's pace
  (:attr:`AdaptivePacer.on_change`), its state (:meth:`AdaptivePacer.export`: count, period,
  held or hypothesis, flood time, hold, ramp target, server wait; times relative to now) is
  written to storage in the background as ``"<version> <json>"`` (one round trip per
  FLOOD_WAIT), expiring when the pace and its probation are over.
* **Outage.** A publication that did not reach Redis (Redis unavailable: served locally under
  ``storage_fallback="local"``, or ``StorageUnavailableError`` under ``"fail"``) is
  remembered by key (at most ``_MAX_UNPUBLISHED``, the oldest forgotten first; any other
  failure is only logged). When Redis answers again
  (:meth:`~telethon_guard.storage.fallback.OutageFallback.on_recovery`, beside the flood
  blocks' copy-back) each remembered pace still in force is published once more, with its
  state *then* (times relative to the recovery); one dropped meanwhile is not. A later
  publication of the same key that reaches Redis replaces the re-publication.
* **Read.** Each admission (:class:`~telethon_guard.shared_admit.SharedAdmit`) asks for the
  method's record in the same script, with the version this process last saw: the answer is
  one more element of the reply (``"="`` while unchanged). A new version is adopted into the
  local pacer (:meth:`AdaptivePacer.adopt`, unless this process's own pace is from a later
  FLOOD_WAIT); from then on the pace, its ramp, relaxation and drop run here on the same
  schedule. The call that brings the news gives back its admission slot (one more round
  trip, once per change) and the limiter reserves again with the pace.

Bound: a pace published by one process applies to the next call another process admits for
that method after the publication reached Redis (the publishing FLOOD_WAIT's round trip); the
call that learns it already goes under it. Times are carried relative, so two processes' views
of the schedule differ by the publish and read latency (milliseconds). Not shared: the
evidence (each process's call history); a refinement from late answers during the server's
wait stays local until the next FLOOD_WAIT publishes. During a Redis outage every process runs
on its own paces; a pace learned then reaches the others from their next admission after the
re-publication at recovery (each process's recovery comes with its next storage operation once
a probe is due: ``probe_interval`` + one round trip). Memory storage: per process (nothing to
share); SQLite storage: per process as well.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

from .keys import pace_key
from .pacing import AdaptivePacer

log = logging.getLogger("telethon_guard.pacing")

_MAX_SEEN = 4096
"""Bound of the table of versions seen (per (account, method))."""

_MAX_UNPUBLISHED = 4096
"""Bound of the keys whose publication did not reach storage (re-published at recovery)."""


@runtime_checkable
class PaceStorage(Protocol):
    """A shared storage that stores pace records (Redis)."""

    async def pace_publish(self, key: str, record: bytes, ttl: float) -> bool:
        """Store ``record`` for pace key ``key`` for ``ttl`` seconds; ``False`` when the
        storage could not (its server unavailable, served locally)."""
        ...

    def on_recovery(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once, when the server answers again after the current (or
        next) outage."""
        ...


class SharedPaces:
    """Publishes ``pacer``'s paces to ``storage`` and adopts the others' (see the module).
    Sets ``pacer.on_change``."""

    __slots__ = ("_n", "_own", "_pacer", "_seen", "_storage", "_tasks", "_unpublished",
                 "_waiting", "adopted", "published", "republished")

    def __init__(self, pacer: AdaptivePacer, storage: PaceStorage) -> None:
        self._pacer = pacer
        self._storage = storage
        self._own = f"{os.getpid():x}.{os.urandom(4).hex()}"
        self._n = 0
        self._seen: dict[tuple[str, str], bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unpublished: dict[tuple[str, str], None] = {}  # insertion-ordered set
        self._waiting = False  # registered with storage.on_recovery
        self.published = 0
        """Records published (stored by the storage; for tests)."""
        self.republished = 0
        """Paces published again when the storage answered after an outage (for tests)."""
        self.adopted = 0
        """Records of other processes adopted (for tests)."""
        pacer.on_change = self._changed

    def pace(self, account: str, method: str) -> tuple[str, bytes]:
        """``(pace key, version seen)``: what the admission asks for."""
        return pace_key(account, method), self._seen.get((account, method), b"")

    def take(self, account: str, method: str, record: str) -> bool:
        """The admission answered with a changed ``record`` (``""``: none any more). Returns
        ``True`` when another process's pace was adopted (it applies from now on)."""
        version, _, body = record.partition(" ")
        self._remember((account, method), version.encode())
        if not body or version.startswith(self._own + "."):
            return False  # gone (its schedule runs out here too), or our own
        try:
            state = json.loads(body)
            adopted = self._pacer.adopt(account, method, state)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed shared pace record for %s", method)
            return False
        if adopted:
            self.adopted += 1
        return adopted

    def _remember(self, key: tuple[str, str], version: bytes) -> None:
        seen = self._seen
        if key not in seen and len(seen) >= _MAX_SEEN:
            seen.clear()
        seen[key] = version

    def _changed(self, account: str, method: str) -> None:
        state = self._pacer.export(account, method)
        if state is None:
            return
        self._n += 1
        version = f"{self._own}.{self._n:x}"
        ttl = float(state["ttl"])
        record = f"{version} {json.dumps(state, separators=(',', ':'))}".encode()
        self._remember((account, method), version.encode())
        self._unpublished.pop((account, method), None)  # this publication supersedes
        self._background((account, method),
                         self._storage.pace_publish(pace_key(account, method), record, ttl))

    def _missed(self, key: tuple[str, str]) -> None:
        """``key``'s publication did not reach storage: publish it when storage is back."""
        missed = self._unpublished
        if key not in missed and len(missed) >= _MAX_UNPUBLISHED:
            del missed[next(iter(missed))]  # the oldest stays local
        missed[key] = None
        if not self._waiting:
            self._waiting = True
            self._storage.on_recovery(self._recovered)

    def _recovered(self) -> None:
        """Storage answers again: publish each pace still in force whose publication did not
        reach it, with its state now (a dropped one is not)."""
        self._waiting = False
        keys = list(self._unpublished)
        self._unpublished.clear()
        for account, method in keys:
            if self._pacer.export(account, method) is not None:
                self.republished += 1
                self._changed(account, method)

    def _background(self, key: tuple[str, str], aw: Coroutine[Any, Any, bool]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous test of the pacer): nothing to share
            aw.close()
            return

        async def run() -> None:
            try:
                stored = await aw
            except ConnectionError:  # StorageUnavailableError ("fail"): reported by storage
                log.warning("publishing a learned pace failed; it is published again when "
                            "the storage answers", exc_info=True)
                stored = False
            except Exception:  # not an outage (a closed storage, a bug): nothing to wait for
                log.warning("publishing a learned pace failed", exc_info=True)
                return
            if stored:
                self.published += 1
            else:
                self._missed(key)

        task = loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for publications in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


__all__ = ["PaceStorage", "SharedPaces"]
