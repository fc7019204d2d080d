"""The flood ledger: "scope S is blocked until T", checked before every network call.

Scopes (design-notes section 3):

* ``FLOOD_WAIT_X``: scope ``acct:<a>/method:<m>`` (all DCs, all peers), raised as
  ``FloodWaitBlocked``. On a write to a chat (:func:`~telethon_guard.flood_scope.is_chat_write`:
  sends, edits, forwards...) the scope is first that chat's writes, ``acct:<a>/writes:peer:<id>``,
  widened to the method when :class:`~telethon_guard.flood_scope.FloodScopeTracker` infers the
  account's limit was hit (floods from several chats, or the account at its ``send_limits``).
  A chat's flood does not teach the method's adaptive pace.
* ``SLOWMODE_WAIT_X``: scope ``acct:<a>/slowmode:peer:<id>`` (sends into that chat only),
  raised as ``SlowModeBlocked``.
* A login request's FLOOD_WAIT (:data:`~telethon_guard.keys.LOGIN_METHODS`): scope
  ``acct:bot-<h>/method:<m>`` / ``acct:phone-<h>/method:<m>`` (per bot token / phone number,
  hashed: :func:`~telethon_guard.keys.login_flood_key`), raised as ``FloodWaitBlocked``.
* ``FLOOD_PREMIUM_WAIT_X``: scope ``acct:<a>/dc:<d>/transfers`` (file transfers on that DC),
  raised as ``FloodPremiumBlocked``.
* ``FLOOD_TEST_PHONE_WAIT_X``, ``2FA_CONFIRM_WAIT_X``, ``TAKEOUT_INIT_DELAY_X``: this request
  only; Telethon's error is raised unchanged (``seconds`` attribute), nothing recorded.

All three ``*Blocked`` errors are subclasses of Telethon's matching error type, so
``except telethon.errors.FloodWaitError`` keeps working.

Before the network: if a scope of the call is blocked and the time left fits
``min(max_flood_wait, time left until the deadline)`` (``CallInfo.max_flood_wait``, when set,
overrides ``GuardConfig.max_flood_wait`` for one call) the call sleeps until the block ends (every
waiter of the scope wakes at the same T: the wait is paid once for all); otherwise the typed error
is raised at once with the seconds left and ``from_server=False`` (no network call).
A wait that fits may still not be enough: when a method's block ends, the calls waiting for it
reach the rate limiter together and its learned pace lets them through one slot at a time. So
a call waiting out a method's block is refused as soon as the guard knows that its slot after
the block -- behind the waiting calls with earlier deadlines that make theirs -- cannot make
its deadline: when it joins the wait, or while it waits, when a later FLOOD_WAIT extends the
block (``FloodLedger._sift``), not at the block's end after waiting it out. The calls whose
waits end together then resume in that order, earliest deadline first (``FloodLedger._woken``),
so a call kept is not overtaken at the pace by calls with later deadlines -- except behind a
*held* pace, whose probe schedule starts from the calls it would refuse in the order they come
(:mod:`telethon_guard.pacing`); there each call resumes when its own wait ends, as before.
A login request (:data:`~telethon_guard.keys.LOGIN_METHODS`: ``auth.sendCode``, ``signIn``,
``importBotAuthorization``...) never waits for a flood, whatever ``max_flood_wait``: its blocks
are hours long (1,658-3,135 s in the public reports, issue 10), so ``client.start()`` raises
``FloodWaitBlocked`` at once instead of sleeping.

After a server ``FLOOD_*_WAIT_X``: ``T = now + clamp(X)`` (TDLib NetQueryDelayer: [1 s, 14 days])
is recorded for everyone, then the call waits and retries if it fits (at most
``flood_max_retries`` times), else raises at once with ``from_server=True``.

Adaptive pacing (:class:`~telethon_guard.pacing.AdaptivePacer`, in :mod:`telethon_guard.pacing`)
learns a method's pace from its FLOOD_WAITs and FLOOD_PREMIUM_WAITs.

The rate limiter applies the pace as an extra window ``acct:<a>/pace:<m>``. A wait the pace
imposes is a flood wait to the caller: when it does not fit ``min(max_flood_wait, time left
until the deadline)`` (a first flood's pace: as it is scheduled to ramp and be dropped) the
limiter raises ``FloodWaitBlocked`` (``from_server=False``, the pace's seconds, scope
``acct:<a>/method:<m>``) at once for *that call only* (its slot is given back; the next call
decides afresh; see :class:`~telethon_guard.limiter.RateLimitLayer`). A call that
waited for its slot while a FLOOD_WAIT was recorded comes back here (the limiter raises
``LedgerBlockedWhileQueued``) and waits out the block instead of sending into it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import itertools
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .call import CallInfo
from .classify import Action, FloodScope, classify
from .clock import Clock
from .config import GuardConfig
from .errors import FloodPremiumBlocked, FloodWaitBlocked, SlowModeBlocked
from .events import (
    EventBus,
    FloodBlocked,
    FloodWaitEnded,
    FloodWaitStarted,
    ObservedDelay,
    redact_peer,
)
from .flood_scope import FloodScopeTracker, is_chat_write
from .keys import (
    LOGIN_METHODS,
    chat_flood_key,
    is_send,
    login_flood_key,
    method_flood_key,
    pace_key,
    slowmode_key,
    transfers_key,
)
from .limiter import LedgerBlockedWhileQueued
from .network_budget import network_budget
from .pacing import AdaptivePacer
from .storage import GuardStorage, LimitSpec, LocalGuardStorage, local_of

Next = Callable[[CallInfo], Awaitable[Any]]

_BLOCKED_TYPES: dict[FloodScope, type[FloodWaitBlocked | SlowModeBlocked | FloodPremiumBlocked]]
_BLOCKED_TYPES = {
    FloodScope.METHOD: FloodWaitBlocked,
    FloodScope.PEER: SlowModeBlocked,
    FloodScope.TRANSFERS: FloodPremiumBlocked,
    FloodScope.CHAT: FloodWaitBlocked,
}


def scope_key(call: CallInfo, scope: FloodScope) -> str:
    """Ledger key of ``scope`` for ``call`` (see the module table)."""
    if scope is FloodScope.METHOD:
        if call.method in LOGIN_METHODS:  # per bot token / phone, whatever the auth key
            return login_flood_key(call.account, call.method, call.request)
        return method_flood_key(call.account, call.method)
    if scope is FloodScope.PEER:
        return slowmode_key(call.account, str(call.peer))
    if scope is FloodScope.CHAT:
        return chat_flood_key(call.account, str(call.peer))
    return transfers_key(call.account, call.dc_id)


def scopes_of(call: CallInfo) -> list[FloodScope]:
    """The ledger scopes that can block ``call``."""
    out = [FloodScope.METHOD]
    if call.peer is not None:
        if is_send(call):
            out.append(FloodScope.PEER)
        if is_chat_write(call):
            out.append(FloodScope.CHAT)
    if call.transfer:
        out.append(FloodScope.TRANSFERS)
    return out


class _Waiting:
    """A call waiting out a block (:meth:`FloodLedger._sleep`): woken by its own timer at
    ``end`` (clock seconds), or refused early through ``fut``."""

    __slots__ = ("call", "end", "fut", "scope", "seq")

    def __init__(self, call: CallInfo, fut: asyncio.Future[None], end: float,
                 scope: FloodScope, seq: int) -> None:
        self.call = call
        self.fut = fut
        self.end = end
        self.scope = scope
        self.seq = seq

    def rank(self) -> tuple[float, int]:
        """Earliest deadline first, then arrival."""
        dl = self.call.deadline_at
        return (dl if dl is not None else math.inf, self.seq)


_ARRIVALS = itertools.count()
"""Arrival numbers of waiting calls (the order among equal deadlines), for every ledger."""


class FloodLedger:
    """Pipeline layer holding the flood ledger (in ``storage``) and the adaptive pacer.

    The check before the network reads local storage synchronously (chosen once here): while
    its flood table is empty (nothing blocked anywhere) it costs one truth test. Everything
    else awaits the storage's async API, whichever it is.
    """

    __slots__ = ("_cfg", "_clock", "_events", "_local", "_ready", "_storage", "_table",
                 "_waiting", "pacer", "redact", "scopes")

    def __init__(self, config: GuardConfig, storage: GuardStorage, clock: Clock,
                 events: EventBus | None = None) -> None:
        self._cfg = config
        self._storage = storage
        self._local: LocalGuardStorage | None = local_of(storage)
        # Local storage's live flood table: empty means nothing is blocked.
        self._table: dict[str, float] | None = (
            self._local.flood_table() if self._local is not None else None)
        self._clock = clock
        self._events = events
        self.pacer: AdaptivePacer | None = (
            AdaptivePacer(clock, events, relax=config.pace_relax,
                          recover=config.pace_recover)
            if config.adaptive_pacing else None
        )
        self.redact = not config.log_peer_ids
        # ledger key -> the calls sleeping out its block, by deadline (_sift); made on the
        # first wait (most clients never wait: no dict per client)
        self._waiting: dict[str, list[_Waiting]] | None = None
        self._ready: dict[str, list[_Waiting]] | None = None  # waits ended this iteration
        self.scopes = FloodScopeTracker(config, clock)
        """Scope inference of write floods (chat or method, :mod:`~telethon_guard.flood_scope`)."""

    # ------------------------------------------------------------------ storage helpers
    async def record_block(self, scope: str, seconds: float) -> float:
        """Record ``scope`` (a ledger key from :mod:`telethon_guard.keys`, e.g.
        ``keys.method_flood_key(account, method)``) blocked for ``seconds`` from now, keeping a
        later existing end; return the seconds left. Every call of that scope then waits or
        fails fast as after a server FLOOD_WAIT (no event is emitted here). Used by the ledger
        itself after a server FLOOD_*_WAIT; also the way to seed a block by hand (tests, a
        wait learned out of band)."""
        return await self._storage.flood_block(scope, seconds)

    async def blocked_for(self, call: CallInfo) -> tuple[FloodScope, str, float] | None:
        """The longest block among ``call``'s scopes: ``(scope, key, seconds left)`` or None."""
        worst: tuple[FloodScope, str, float] | None = None
        for scope in scopes_of(call):
            key = scope_key(call, scope)
            left = await self._storage.flood_left(key)
            if left > 0 and (worst is None or left > worst[2]):
                worst = (scope, key, left)
        return worst

    def _name(self, key: str) -> str:
        return redact_peer(key) if self.redact else key

    def _fits(self, call: CallInfo, left: float) -> bool:
        if call.method in LOGIN_METHODS:  # a login flood is hours long: never slept in start()
            return False
        limit = call.max_flood_wait  # per-call override (client(..., flood_sleep_threshold=))
        if left > (self._cfg.max_flood_wait if limit is None else limit):
            return False
        dl = call.deadline_at
        # The wait must leave the attempt its network budget (as a limiter slot must):
        # a wait that ends too close to the deadline could only end in DeadlineExceeded.
        return dl is None or self._clock.now() + left + network_budget(
            call.budget or 0.0, self._cfg.attempt_timeout) < dl

    def _blocked_error(self, call: CallInfo, scope: FloodScope, key: str, left: float,
                       from_server: bool) -> Exception:
        if self._events is not None:
            self._events.emit(FloodBlocked(call.method, self._name(key), left, from_server,
                                           call.account))
        cls = _BLOCKED_TYPES[scope]
        err = cls(call.request, left, method=call.method, scope=self._name(key),
                  from_server=from_server)
        err.may_have_run = call.may_have_run()
        return err

    def _free_now(self, call: CallInfo) -> bool:
        """Synchronous check: ``True`` when no scope of ``call`` is blocked (local storage;
        no storage call at all while the flood table is empty); ``False`` when :meth:`_check`
        must run (a block to wait out or raise for, observe mode reports, or shared storage)."""
        table = self._table
        if table is None:
            return False
        if not table:
            return True
        local = self._local
        assert local is not None
        for scope in scopes_of(call):
            if local.flood_left_sync(scope_key(call, scope)) > 0:
                return False
        return True

    async def _check(self, call: CallInfo) -> None:
        """Wait out (or raise for) every block on the call's scopes before the network."""
        while True:
            blocked = await self.blocked_for(call)
            if blocked is None:
                return
            scope, key, left = blocked
            if self._cfg.observe_only:
                if self._events is not None:
                    self._events.emit(ObservedDelay(
                        "flood", self._name(key), left, not self._fits(call, left),
                        call.method, call.account))
                return
            if not self._fits(call, left):
                raise self._blocked_error(call, scope, key, left, False)
            call.stage = "flood"
            await self._sleep(call, scope, key, left, False)

    async def _sleep(self, call: CallInfo, scope: FloodScope, key: str, left: float,
                     from_server: bool, exc: Exception | None = None) -> None:
        """Wait out ``key``'s block (``left`` seconds), or raise the typed error (chained from
        ``exc``) as soon as the guard knows the call cannot make its deadline behind the calls
        waiting for the same block (:meth:`_sift`): at once (``from_server``), or while it
        waits, when a later FLOOD_WAIT extends the block or slows the pace
        (``from_server=False``)."""
        table = self._waiting
        if table is None:
            table = self._waiting = {}
        waiting = table.setdefault(key, [])
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        end = self._clock.now() + left
        entry = _Waiting(call, fut, end, scope, next(_ARRIVALS))
        bisect.insort(waiting, entry, key=_Waiting.rank)
        wait = self._sift(key, waiting, entry)
        if wait is not None:
            waiting.remove(entry)
            if not waiting:
                del table[key]
            raise self._blocked_error(call, scope, key, wait, from_server) from exc
        timer = self._clock.call_at(end, functools.partial(self._woken, key, entry))
        ev = self._events
        name = self._name(key)
        if ev is not None:
            ev.emit(FloodWaitStarted(call.method, name, left, from_server, call.account))
        start = self._clock.now()
        try:
            await fut
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                waiting.remove(entry)
            if not waiting and table.get(key) is waiting:
                del table[key]
        if ev is not None:
            ev.emit(FloodWaitEnded(call.method, name, self._clock.now() - start, call.account))

    def _woken(self, key: str, entry: _Waiting) -> None:
        """``entry``'s wait is over. The calls whose waits end together (the same loop
        iteration: a block's end) reach the rate limiter in the order they resume, and a
        method's pace then serves them one slot at a time: they resume in the order
        :meth:`_sift` counted them, earliest deadline first, so a call it kept is not
        overtaken by calls with later deadlines. Not behind a *held* pace: there the calls it
        would refuse in the order they come put it on its probe schedule (pacing.py), and that
        order is left as it was (each call resumes when its own wait ends)."""
        if entry.fut.done():
            return
        call = entry.call
        pacer = self.pacer
        if (pacer is None or key != method_flood_key(call.account, call.method)
                or pacer.is_held(call.account, call.method)):
            entry.fut.set_result(None)
            return
        ready = self._ready
        if ready is None:
            ready = self._ready = {}
        batch = ready.get(key)
        if batch is None:
            batch = ready[key] = []
            asyncio.get_running_loop().call_soon(self._release, key)
        batch.append(entry)

    def _release(self, key: str) -> None:
        ready = self._ready
        batch = ready.pop(key, []) if ready is not None else []
        batch.sort(key=_Waiting.rank)
        for entry in batch:
            if not entry.fut.done():
                entry.fut.set_result(None)

    def _sift(self, key: str, waiting: list[_Waiting], joining: _Waiting) -> float | None:
        """Refuse the calls waiting for ``key``'s block that cannot make their deadline after
        it; return the wait (seconds) of ``joining`` when it is one of them (its caller
        raises), else ``None``; the others get the typed error (``from_server=False``, their
        wait) at once.

        When a method's block ends, the calls waiting for it reach the rate limiter together,
        and the method's learned pace lets them through one slot at a time
        (:meth:`AdaptivePacer.slot_times` from the block's end, the latest end recorded):
        a call that the block alone leaves time for may still be refused there, at the
        block's end, having waited the whole block for nothing. So each call's slot counts the
        calls ahead of it: those with an earlier deadline that make theirs (earliest deadline
        first is the order in which most of them can; one that cannot takes no slot). A call
        fits when its slot leaves the attempt its network budget before its deadline, and the
        block and the pace's part (``slot - end``) are each within ``max_flood_wait`` (as the
        ledger and the rate limiter will hold it). Run whenever a call joins: a FLOOD_WAIT
        that extends the block (or teaches a slower pace) moves every slot back. Without a
        pace (or for another scope) every slot is the block's end."""
        now = self._clock.now()
        end = max(w.end for w in waiting)
        pacer = self.pacer
        call = joining.call
        slots: Iterator[float] | None = None
        if (pacer is not None and not self._cfg.observe_only
                and key == method_flood_key(call.account, call.method)):
            slots = pacer.slot_times(call.account, call.method, end)
        budget_of = self._cfg.attempt_timeout
        refused: float | None = None
        slot: float | None = None
        for w in list(waiting):
            if w.fut.done():  # woken (or leaving): on its way past the block
                continue
            if slot is None:
                slot = next(slots) if slots is not None else end
            other = w.call
            cap = self._cfg.max_flood_wait if other.max_flood_wait is None else (
                other.max_flood_wait)
            dl = other.deadline_at
            if end - now <= cap and slot - end <= cap and (
                    dl is None or slot + network_budget(other.budget or 0.0, budget_of) < dl):
                slot = None  # taken
                continue
            if w is joining:
                refused = slot - now
            else:
                waiting.remove(w)
                w.fut.set_exception(self._blocked_error(other, w.scope, key, slot - now, False))
        return refused

    async def _learn(self, call: CallInfo, seconds: float) -> None:
        pacer = self.pacer
        assert pacer is not None
        window = pacer.on_flood(call.account, call.method, seconds)
        if window is None or not pacer.seed_ages:
            return
        # Start the new pace window with the calls it was learned from, so the first
        # window after the wait is not a second full burst.
        spec = LimitSpec(pace_key(call.account, call.method), window)
        await self._storage.seed(spec, pacer.seed_ages)

    def enter(self, call: CallInfo, call_next: Next) -> Awaitable[Any] | None:
        """The synchronous check (:meth:`Pipeline.invoke`'s fast path calls it): ``None``
        when nothing blocks the call now (then the fast path runs ``call_next`` itself and
        this layer's :meth:`on_success` / :meth:`recover` after it); else :meth:`handle`."""
        table = self._table
        if table is None or (table and not self._free_now(call)):
            return self.handle(call, call_next)
        return None

    def on_success(self, call: CallInfo) -> None:
        """After ``call_next`` returned: the pacer's and the scope tracker's success record."""
        pacer = self.pacer
        if pacer is not None:
            pacer.on_success(call.account, call.method)
        if call.peer is not None:
            self.scopes.on_success(call)

    async def recover(self, call: CallInfo, exc: Exception, call_next: Next) -> Any:
        """What :meth:`handle` does once its first ``call_next`` (entered through
        :meth:`enter`) raised ``exc``: check again after ``LedgerBlockedWhileQueued``; record a
        server flood wait and wait it out (or raise the typed error); raise anything else."""
        retries = 0
        if not isinstance(exc, LedgerBlockedWhileQueued):
            await self._flooded(call, exc, 0)
            retries = 1
        return await self.handle(call, call_next, retries)

    async def handle(self, call: CallInfo, call_next: Next, retries: int = 0) -> Any:
        """Check the ledger, run ``call_next``; on a server FLOOD_*_WAIT record it for everyone
        and wait-and-retry when it fits (at most ``flood_max_retries`` times), else raise
        ``FloodWaitBlocked`` / ``SlowModeBlocked`` / ``FloodPremiumBlocked``
        (``from_server=True``) from Telethon's error. ``retries``: server flood waits
        already waited out for this call (:meth:`recover`)."""
        while True:
            table = self._table
            if table is None or (table and not self._free_now(call)):  # nothing blocked: go
                adm = call.admitted  # shared_admit.py: nothing blocked at admission
                if adm is not None and adm.flood_clear:
                    adm.flood_clear = False
                else:
                    await self._check(call)
            try:
                result = await call_next(call)
            except LedgerBlockedWhileQueued:
                continue  # a FLOOD_WAIT was recorded while the call queued: check again
            except Exception as exc:
                await self._flooded(call, exc, retries)
                retries += 1
                continue
            self.on_success(call)
            return result

    async def _flooded(self, call: CallInfo, exc: Exception, retries: int) -> None:
        """Raise ``exc`` unless it is a server flood wait; record it, then raise the typed
        error when it does not fit (or ``retries`` are spent), else wait it out."""
        verdict = classify(exc)
        if verdict.action is not Action.FLOOD or verdict.scope is None:
            raise exc
        scope = verdict.scope
        if (scope is FloodScope.METHOD and is_chat_write(call)
                and not self.scopes.on_flood(call)):
            scope = FloodScope.CHAT  # this chat's writes only, until floods say otherwise
        key = scope_key(call, scope)
        if scope is FloodScope.PEER and call.peer is None:
            key = scope_key(call, FloodScope.METHOD)
        left = await self.record_block(key, verdict.seconds)
        if (scope is FloodScope.METHOD or scope is FloodScope.TRANSFERS) and (
                self.pacer is not None):
            # FLOOD_PREMIUM_WAIT_X is the same kind of rate limit (on a non-premium
            # account's transfers): it teaches the method's pace too (pacing.py).
            await self._learn(call, verdict.seconds)
        if retries >= self._cfg.flood_max_retries or not self._fits(call, left):
            raise self._blocked_error(call, scope, key, left, True) from exc
        call.stage = "flood"
        await self._sleep(call, scope, key, left, True, exc)


__all__ = [
    "FloodLedger",
    "FloodScopeTracker",
    "scope_key",
    "scopes_of",
]
