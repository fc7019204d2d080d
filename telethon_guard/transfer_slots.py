"""File parts in flight per (account, method), across every sender: a window that opens small,
grows while it is full and unflooded, and halves on a flood (AIMD).

Parallel download / upload code (FastTelethon-style: several exported senders, each with
several ``upload.getFile`` / ``upload.saveFilePart`` in flight) sends its whole opening burst
before the first ``FLOOD_WAIT`` (or ``FLOOD_PREMIUM_WAIT``) is known: every part already in
flight when the server's limit is crossed comes back as one more flood. The guard's ledger then
holds everyone and its adaptive pacer (:mod:`telethon_guard.pacing`) spaces the parts at the
rate the server was seen to accept, but the burst has been drawn. A fixed bound on the parts in
flight caps that burst at the bound only: on a short round trip the parts go out at
``bound / round trip`` per second whatever the bound (measured, 64 parts against a limit of 20
per second on the test server: 16 floods with a bound of 16, 44 without).

:class:`TransferSlots` is a pipeline layer between the flood ledger and the rate limiter: a file
transfer call (:data:`~telethon_guard.keys.TRANSFER_METHODS`) takes one slot of its
(account, method) window for the rest of its way (limiter wait, retries, network attempts) and
gives it back when it ends (also on error or cancellation). The limits are the account's, so one
window serves the main sender and every exported sender, whatever the DC. Other calls pass
straight through (no coroutine of this layer).

**The window** (all times on the guard clock, monotonic seconds):

* It opens at ``GuardConfig.transfer_start_parts`` parts in flight (default 4: Telegram
  Desktop's ``kStartWaitedInSession``, "4 parts waited" per download session,
  ``Telegram/SourceFiles/storage/download_manager_mtproto.cpp``), at most
  ``transfer_concurrency`` (default 16: Desktop's ``kMaxWaitedInSession`` / older
  ``kMaxFileQueries``, 16 parts per session).
* It grows once per *round* of :data:`ROUND` (1) s in which it was full (a part started in
  its last free slot) and no part drew a flood: it doubles until the first flood (slow
  start), then grows by one part per round (additive increase). Desktop grows its window by a
  part per success at a full window, which reaches 16 after 12 parts: against a limit counted
  per second, on a short round trip, that is before the limit is met, so the first flood would
  still come back from 16 parts in flight. Telegram counts its limits in seconds (every
  ``FLOOD_WAIT_X`` is whole seconds, at least 1), so the window grows per second, not per round
  trip: whatever the round trip, the opening second has at most ``transfer_start_parts`` parts
  in flight, and so draws at most that many floods when it meets the limit.
* A server ``FLOOD_WAIT`` / ``FLOOD_PREMIUM_WAIT`` on a part halves it (multiplicative
  decrease), once per flood event: floods on parts sent before the last decrease were in flight
  already and do not halve it again. It never goes below the start window: the rate after a
  flood is the pacer's (the learned pace), or the limiter's when ``method_limits`` names the
  method (then the limiter paces from the first part and no flood is drawn at all), and a slot
  is held through the limiter's wait too, so a window of ``rate x (spacing + round trip)``
  parts is needed to keep that rate (2.1 parts at 20 parts/s on a 55 ms round trip: a window
  of 2 would hold the pace below itself). The halved window bounds the next burst (a pace
  relaxing, a limit that changed).
* After :data:`IDLE_RESET` (15) s with no part in flight, the window opens afresh (Desktop
  resets a DC's download sessions after ``kKillSessionTimeout``, 15 s without downloads).

Measured (``benchmarks/transfer_opening.py``, README "Parallel transfers"): 64 parts against
20 per second, opening floods 4 (local) / 3 (30-80 ms round trip) with this window, 16 / 12
with the fixed bound of 16, 44 with plain Telethon; FastTelethon-style with 8 senders, 4 / 3
against 8. The cost is on a real round trip: the opening second is slower, so the pace learned
from its flood is slower too (64 parts: 15.3 parts/s against 17.6-18.8 with the fixed bound);
``method_limits`` for the method avoids both the floods and the cost.

A call that had to queue for its slot while a flood wait was recorded on its scopes raises
``LedgerBlockedWhileQueued`` (the ledger above waits the block out, or raises, and sends the
call through again): never sent into a block. ``transfer_start_parts=None``: no slow start, the
window is ``transfer_concurrency`` throughout (the fixed bound). ``transfer_concurrency=None``
switches the layer off, and so does ``observe_only`` (a window delays parts; a staged rollout
must not change how a transfer runs).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from telethon.errors import FloodError

from .call import CallInfo
from .clock import Clock
from .config import GuardConfig
from .limiter import LedgerBlockedWhileQueued

Next = Callable[[CallInfo], Awaitable[Any]]

__all__ = ["IDLE_RESET", "ROUND", "TransferSlots"]

ROUND = 1.0
"""Seconds per round: the window grows at most once per round (doubling before the first flood,
by one part after it). One second: Telegram's flood waits are whole seconds (at least 1)."""

IDLE_RESET = 15.0
"""Seconds with no part in flight after which a window opens afresh (Telegram Desktop's
``kKillSessionTimeout``: download sessions are reset after 15 s without downloads)."""

_MAX_IDLE_KEYS = 4096  # idle windows kept at most (older idle ones are forgotten first)


class _Ledger(Protocol):
    async def blocked_for(self, call: CallInfo) -> Any: ...


def _server_flood(exc: BaseException) -> bool:
    """A ``FLOOD_WAIT`` / ``FLOOD_PREMIUM_WAIT`` answered by the server (not a pace's or the
    ledger's local refusal, which carry ``from_server=False``)."""
    return isinstance(exc, FloodError) and getattr(exc, "from_server", True) is not False


class _Window:
    """One (account, method): its window, parts in flight, the calls queued for a slot."""

    __slots__ = ("cut_at", "full", "idle_since", "in_flight", "round_end", "size", "ssthresh",
                 "waiters")

    def __init__(self, size: int, now: float) -> None:
        self.size = size  # parts allowed in flight
        self.ssthresh: int | None = None  # None: slow start (no flood yet)
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.round_end = now + ROUND
        self.full = False  # the window was full during this round
        self.cut_at = float("-inf")  # time of the last decrease
        self.idle_since: float | None = now


class TransferSlots:
    """Pipeline layer: the parts in flight per (account, method) within an AIMD window.

    ``config.transfer_concurrency``: the largest window (``None``, or ``config.observe_only``:
    the layer passes every call through); ``config.transfer_start_parts``: the window a
    transfer opens with (``None``: the largest, no slow start). ``ledger``: the flood ledger,
    asked after a queued wait whether the call's scopes were blocked meanwhile. ``clock``: the
    guard clock (rounds, idle reset). Local state (one process).
    """

    __slots__ = ("_clock", "_ledger", "_windows", "limit", "start")

    def __init__(self, config: GuardConfig, ledger: _Ledger, clock: Clock) -> None:
        self.limit: int | None = (None if config.observe_only
                                  else config.transfer_concurrency)
        start = config.transfer_start_parts
        self.start: int | None = (
            None if self.limit is None else self.limit if start is None
            else min(start, self.limit))
        self._ledger = ledger
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def in_flight(self, account: str, method: str) -> int:
        """Parts of (``account``, ``method``) in flight now."""
        w = self._windows.get((account, method))
        return 0 if w is None else w.in_flight

    def window(self, account: str, method: str) -> int | None:
        """The window of (``account``, ``method``) now: parts allowed in flight (``None``:
        the layer is off)."""
        if self.start is None:
            return None
        w = self._windows.get((account, method))
        now = self._clock.now()
        if w is None or (w.idle_since is not None and now - w.idle_since >= IDLE_RESET):
            return self.start
        self._tick(w, now)
        return w.size

    def enter(self, call: CallInfo, call_next: Next) -> Awaitable[Any] | None:
        """``None`` when ``call`` needs no slot (not a transfer; :meth:`Pipeline.invoke
        <telethon_guard.pipeline.Pipeline.invoke>`'s fast path goes on); else :meth:`handle`."""
        if not call.transfer or self.start is None:
            return None
        return self._bounded(call, call_next)

    def handle(self, call: CallInfo, call_next: Next) -> Awaitable[Any]:
        """Run ``call_next`` holding a slot when ``call`` is a file transfer; else pass it on
        (:meth:`enter` decides)."""
        slow = self.enter(call, call_next)
        return call_next(call) if slow is None else slow

    # ---- the window ----------------------------------------------------------------------

    def _get(self, key: tuple[str, str], now: float) -> _Window:
        w = self._windows.get(key)
        if w is not None and w.idle_since is not None and now - w.idle_since >= IDLE_RESET:
            w = None  # idle long enough: open afresh
        if w is None:
            assert self.start is not None
            w = self._windows[key] = _Window(self.start, now)
            if len(self._windows) > _MAX_IDLE_KEYS:
                self._forget_idle(now)
        return w

    def _forget_idle(self, now: float) -> None:
        idle = sorted((w.idle_since, k) for k, w in self._windows.items()
                      if w.idle_since is not None)
        for _, k in idle[: max(1, len(self._windows) - _MAX_IDLE_KEYS)]:
            del self._windows[k]

    def _tick(self, w: _Window, now: float) -> None:
        """End the rounds that are over: grow the window after a full, unflooded round."""
        if now < w.round_end:
            return
        assert self.limit is not None
        if w.full and w.size < self.limit:
            if w.ssthresh is None:
                w.size = min(2 * w.size, self.limit)
            else:
                w.size += 1
        w.full = False
        w.round_end = now + ROUND

    def _cut(self, w: _Window, started: float, now: float) -> None:
        """A server flood on a part sent at ``started``: halve the window (not below the start
        window) once per flood event."""
        if started < w.cut_at:
            return  # in flight before the last decrease: the same flood event
        assert self.start is not None
        w.size = max(self.start, w.size // 2)
        w.ssthresh = w.size
        w.cut_at = now
        w.full = False
        w.round_end = now + ROUND

    async def _bounded(self, call: CallInfo, call_next: Next) -> Any:
        key = (call.account, call.method)
        now = self._clock.now()
        w = self._get(key, now)
        self._tick(w, now)
        if w.in_flight < w.size and not w.waiters:
            w.in_flight += 1
            w.idle_since = None
        else:
            await self._queue(w)
            try:
                if await self._ledger.blocked_for(call) is not None:
                    raise LedgerBlockedWhileQueued(call.method)
            except BaseException:
                self._release(w)
                raise
        if w.in_flight >= w.size:
            w.full = True  # a part starts in the window's last slot: the window limits now
        started = self._clock.now()
        try:
            return await call_next(call)
        except BaseException as exc:
            if _server_flood(exc):
                self._cut(w, started, self._clock.now())
            raise
        finally:
            self._release(w)

    async def _queue(self, w: _Window) -> None:
        """Wait until a slot is handed over (FIFO); the slot is counted in flight then."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        w.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(w)  # handed a slot just as we were cancelled: pass it on
            else:
                try:
                    w.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def _release(self, w: _Window) -> None:
        """A part ended: hand free slots to the oldest waiters (the window may have grown or
        shrunk meanwhile)."""
        w.in_flight -= 1
        now = self._clock.now()
        self._tick(w, now)
        while w.waiters and w.in_flight < w.size:
            fut = w.waiters.popleft()
            if not fut.done():
                w.in_flight += 1
                fut.set_result(None)
        if w.in_flight == 0 and not w.waiters:
            w.idle_since = now
