"""The flood ledger: "scope S is blocked until T", checked before every network call.

Scopes (design.md section 3):

* ``FLOOD_WAIT_X``: scope ``acct:<a>/method:<m>`` (all DCs, all peers), raised as
  ``FloodWaitBlocked``.
* ``SLOWMODE_WAIT_X``: scope ``acct:<a>/slowmode:peer:<id>`` (sends into that chat only),
  raised as ``SlowModeBlocked``.
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

After a server ``FLOOD_*_WAIT_X``: ``T = now + clamp(X)`` (TDLib NetQueryDelayer: [1 s, 14 days])
is recorded for everyone, then the call waits and retries if it fits (at most
``flood_max_retries`` times), else raises at once with ``from_server=True``.

Adaptive pacing (:class:`AdaptivePacer`): after a FLOOD_WAIT on method M the pace of M is learned
as a window ``(n, 1.1 * (span + X))``: the ``n`` calls made since the previous flood wait ended
(within a horizon, at least 2) spread over ``span`` seconds, plus the wait X the server asked for,
with a 10 % margin; the window starts seeded with those calls. A further FLOOD_WAIT while a
pace is active multiplies the period by 1.5 (multiplicative decrease of the rate); every success
gives back ``pace_decay`` of the period (like gotd's floodwait middleware decaying its delay per
success), and the pace is dropped once its period falls under 1 s. Waits under 2 s
(FLOOD_WAIT_0/1) teach no first pace.
The rate limiter applies the pace as an extra window ``acct:<a>/pace:<m>``, so a loop at an
unknown server limit converges instead of hitting it again and again. A wait the pace imposes is
a flood wait to the caller: when it does not fit ``min(max_flood_wait, time left until the
deadline)`` the limiter raises ``FloodWaitBlocked`` (``from_server=False``, the pace's seconds,
scope ``acct:<a>/method:<m>``) at once, without waiting (see
:class:`~telethon_guard.limiter.RateLimitLayer`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .call import CallInfo
from .classify import Action, FloodScope, classify
from .clock import Clock
from .config import GuardConfig, Windows
from .errors import FloodPremiumBlocked, FloodWaitBlocked, SlowModeBlocked
from .events import (
    EventBus,
    FloodBlocked,
    FloodWaitEnded,
    FloodWaitStarted,
    ObservedDelay,
    PaceLearned,
    redact_peer,
)
from .limiter import is_send, pace_key
from .storage import GuardStorage, LimitSpec

if TYPE_CHECKING:
    from .pipeline import CallContext

PACE_HORIZON = 120.0
"""Seconds of call history considered when learning a pace."""
PACE_MIN_PERIOD = 1.0
"""A learned pace whose period decays below this (seconds) is dropped."""
PACE_BACKOFF = 1.5
"""Factor by which a further FLOOD_WAIT stretches an active pace's period."""
PACE_MARGIN = 1.1
"""Safety margin on a first learned period (server windows and our clock differ slightly)."""
PACE_MIN_CALLS = 2
"""Calls of the method seen within the horizon before a first pace is learned from a flood."""
PACE_MIN_WAIT = 2.0
"""Server waits shorter than this (seconds; FLOOD_WAIT_0/1, clamped to 1 s) teach no pace: they
are "try again now" signals, not a rate."""

_BLOCKED_TYPES: dict[FloodScope, type[FloodWaitBlocked | SlowModeBlocked | FloodPremiumBlocked]]
_BLOCKED_TYPES = {
    FloodScope.METHOD: FloodWaitBlocked,
    FloodScope.PEER: SlowModeBlocked,
    FloodScope.TRANSFERS: FloodPremiumBlocked,
}


def scope_key(call: CallInfo, scope: FloodScope) -> str:
    """Ledger key of ``scope`` for ``call`` (see the module table)."""
    if scope is FloodScope.METHOD:
        return f"acct:{call.account}/method:{call.method}"
    if scope is FloodScope.PEER:
        return f"acct:{call.account}/slowmode:{call.peer}"
    return f"acct:{call.account}/dc:{call.dc_id}/transfers"


def scopes_of(call: CallInfo) -> list[FloodScope]:
    """The ledger scopes that can block ``call``."""
    out = [FloodScope.METHOD]
    if call.peer is not None and is_send(call):
        out.append(FloodScope.PEER)
    if call.transfer:
        out.append(FloodScope.TRANSFERS)
    return out


class _Pace:
    __slots__ = ("count", "history", "period", "since")

    def __init__(self) -> None:
        self.history: deque[float] = deque(maxlen=512)
        self.since = float("-inf")
        self.count = 0
        self.period = 0.0


class AdaptivePacer:
    """Learns a method's pace from its FLOOD_WAITs (see the module docstring). Local state."""

    __slots__ = ("_clock", "_events", "_learned", "_paces", "decay", "max_methods",
                 "seed_ages")

    def __init__(self, clock: Clock, events: EventBus | None = None, *, decay: float = 0.001,
                 max_methods: int = 4096) -> None:
        self._clock = clock
        self._events = events
        self._paces: dict[tuple[str, str], _Pace] = {}
        # Active paces only, as the window the limiter applies: window() is asked on every
        # call, and is one truth test while no pace is learned.
        self._learned: dict[tuple[str, str], Windows] = {}
        self.decay = decay
        self.max_methods = max_methods
        self.seed_ages: list[float] = []  # ages (s) of the calls a new pace was learned from

    def window(self, account: str, method: str) -> Windows | None:
        """The learned ``((count, period),)`` of ``method``, or ``None``."""
        learned = self._learned
        if not learned:
            return None
        return learned.get((account, method))

    def learned(self) -> dict[str, tuple[int, float]]:
        """Active paces: ``{"<account>/<method>": (count, period)}``."""
        return {f"{a}/{m}": (p.count, p.period) for (a, m), p in self._paces.items() if p.count}

    def _pace(self, account: str, method: str) -> _Pace:
        key = (account, method)
        p = self._paces.get(key)
        if p is None:
            if len(self._paces) >= self.max_methods:
                # Drop the oldest entry without a learned pace (or the oldest at all).
                victim = next((k for k, v in self._paces.items() if not v.count),
                              next(iter(self._paces)))
                del self._paces[victim]
                self._learned.pop(victim, None)
            p = self._paces[key] = _Pace()
        return p

    def on_success(self, account: str, method: str) -> None:
        """Record one call of ``method`` answered by Telegram; relaxes a learned pace."""
        p = self._pace(account, method)
        p.history.append(self._clock.now())
        if p.count:
            p.period -= p.period * self.decay
            if p.period < PACE_MIN_PERIOD:
                p.count = 0
                p.period = 0.0
                self._learned.pop((account, method), None)
                if self._events is not None:
                    self._events.emit(PaceLearned(method, 0, 0.0, account))
            else:
                self._learned[(account, method)] = ((p.count, p.period),)

    def on_flood(self, account: str, method: str, seconds: float) -> Windows | None:
        """Learn from a FLOOD_WAIT of ``seconds`` on ``method``; return the new pace window
        (``None``: fewer than ``PACE_MIN_CALLS`` calls seen, nothing learned)."""
        now = self._clock.now()
        p = self._pace(account, method)
        start = max(p.since, now - PACE_HORIZON)
        calls = [t for t in p.history if t >= start]
        if not p.count and (len(calls) < PACE_MIN_CALLS or seconds < PACE_MIN_WAIT):
            # Too little evidence of a rate: the first calls after start-up, or a "try again
            # now" FLOOD_WAIT_0/1. (With a pace active, any FLOOD_WAIT means "still too fast".)
            return None
        if p.count:
            p.period *= PACE_BACKOFF  # still too fast: multiplicative decrease of the rate
            self.seed_ages = []
        else:
            p.count = len(calls)
            p.period = (now - calls[0] + seconds) * PACE_MARGIN
            self.seed_ages = [now - t for t in calls]
        p.since = now + seconds
        window = ((p.count, p.period),)
        self._learned[(account, method)] = window
        if self._events is not None:
            self._events.emit(PaceLearned(method, p.count, p.period, account))
        return window


class FloodLedger:
    """Pipeline layer holding the flood ledger (in ``storage``) and the adaptive pacer."""

    __slots__ = ("_cfg", "_clock", "_events", "_local", "_storage", "pacer", "redact")

    def __init__(self, config: GuardConfig, storage: GuardStorage, clock: Clock,
                 events: EventBus | None = None) -> None:
        self._cfg = config
        self._storage = storage
        self._local: Any = storage if getattr(storage, "is_local", False) else None
        self._clock = clock
        self._events = events
        self.pacer: AdaptivePacer | None = (
            AdaptivePacer(clock, events, decay=config.pace_decay)
            if config.adaptive_pacing else None
        )
        self.redact = not config.log_peer_ids

    # ------------------------------------------------------------------ storage helpers
    async def _left(self, scope: str) -> float:
        if self._local is not None:
            left: float = self._local.flood_left_sync(scope)
            return left
        return await self._storage.flood_left(scope)

    async def _block(self, scope: str, seconds: float) -> float:
        if self._local is not None:
            left: float = self._local.flood_block_sync(scope, seconds)
            return left
        return await self._storage.flood_block(scope, seconds)

    async def blocked_for(self, call: CallInfo) -> tuple[FloodScope, str, float] | None:
        """The longest block among ``call``'s scopes: ``(scope, key, seconds left)`` or None."""
        worst: tuple[FloodScope, str, float] | None = None
        for scope in scopes_of(call):
            key = scope_key(call, scope)
            left = await self._left(key)
            if left > 0 and (worst is None or left > worst[2]):
                worst = (scope, key, left)
        return worst

    def _name(self, key: str) -> str:
        return redact_peer(key) if self.redact else key

    def _fits(self, call: CallInfo, left: float) -> bool:
        limit = call.max_flood_wait  # per-call override (client(..., flood_sleep_threshold=))
        if left > (self._cfg.max_flood_wait if limit is None else limit):
            return False
        dl = call.deadline_at
        return dl is None or self._clock.now() + left < dl

    def _blocked_error(self, call: CallInfo, scope: FloodScope, key: str, left: float,
                       from_server: bool) -> Exception:
        if self._events is not None:
            self._events.emit(FloodBlocked(call.method, self._name(key), left, from_server,
                                           call.account))
        cls = _BLOCKED_TYPES[scope]
        return cls(call.request, left, method=call.method, scope=self._name(key),
                   from_server=from_server)

    async def check(self, ctx: CallContext) -> None:
        """Wait out (or raise for) every block on the call's scopes before the network."""
        call = ctx.call
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
            ctx.stage = "flood"
            await self._sleep(call, key, left, False)

    async def _sleep(self, call: CallInfo, key: str, left: float, from_server: bool) -> None:
        ev = self._events
        name = self._name(key)
        if ev is not None:
            ev.emit(FloodWaitStarted(call.method, name, left, from_server, call.account))
        start = self._clock.now()
        await self._clock.sleep(left)
        if ev is not None:
            ev.emit(FloodWaitEnded(call.method, name, self._clock.now() - start, call.account))

    async def _learn(self, call: CallInfo, seconds: float) -> None:
        pacer = self.pacer
        assert pacer is not None
        window = pacer.on_flood(call.account, call.method, seconds)
        if window is None or not pacer.seed_ages:
            return
        # Start the new pace window with the calls it was learned from, so the first
        # window after the wait is not a second full burst.
        spec = LimitSpec(pace_key(call.account, call.method), window)
        if self._local is not None:
            self._local.seed_sync(spec, pacer.seed_ages)
        else:
            await self._storage.seed(spec, pacer.seed_ages)

    async def handle(self, ctx: CallContext, call_next: Callable[[CallContext], Awaitable[Any]],
                     ) -> Any:
        """Check the ledger, run ``call_next``; on a server FLOOD_*_WAIT record it for everyone
        and wait-and-retry when it fits, else raise ``FloodWaitBlocked`` / ``SlowModeBlocked``
        / ``FloodPremiumBlocked`` (``from_server=True``) from Telethon's error."""
        call = ctx.call
        retries = 0
        while True:
            await self.check(ctx)
            try:
                result = await call_next(ctx)
            except Exception as exc:
                verdict = classify(exc)
                if verdict.action is not Action.FLOOD or verdict.scope is None:
                    raise
                scope = verdict.scope
                key = scope_key(call, scope)
                if scope is FloodScope.PEER and call.peer is None:
                    key = scope_key(call, FloodScope.METHOD)
                left = await self._block(key, verdict.seconds)
                if scope is FloodScope.METHOD and self.pacer is not None:
                    await self._learn(call, verdict.seconds)
                if retries >= self._cfg.flood_max_retries or not self._fits(call, left):
                    raise self._blocked_error(call, scope, key, left, True) from exc
                retries += 1
                ctx.stage = "flood"
                await self._sleep(call, key, left, True)
                continue
            if self.pacer is not None:
                self.pacer.on_success(call.account, call.method)
            return result


__all__ = [
    "PACE_BACKOFF",
    "PACE_HORIZON",
    "PACE_MARGIN",
    "PACE_MIN_CALLS",
    "PACE_MIN_PERIOD",
    "PACE_MIN_WAIT",
    "AdaptivePacer",
    "FloodLedger",
    "scope_key",
    "scopes_of",
]
