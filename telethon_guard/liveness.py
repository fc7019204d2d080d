"""Liveness: notice a connection that is open but silent, and say when to replace it.

A TCP connection can stay open while nothing comes back on it: a NAT mapping that timed out, a
DC that stopped answering (issue 10). Telethon then waits for ever: every call ends in its
deadline, pushed updates are lost, and its own keepalive (a ping every 60 s, a reconnect only
when the *previous* ping is still unanswered) takes two minutes at best. After an event-loop
stall, Telethon drops replies as "very old" (``telethon/network/mtprotostate.py``: a message
whose msg_id time is more than 300 s behind the client's clock, or 30 s ahead) and the
requests they answered are never completed.

:class:`LivenessWatchdog` is the pure logic (no I/O, no clock of its own: every method takes
``now``, seconds on the monotonic clock). The sender feeds it (:meth:`~LivenessWatchdog.received`
for every message it accepted, :meth:`~LivenessWatchdog.ignored` for every message Telethon
ignored) and asks it every :attr:`LivenessPolicy.tick` seconds with the msg_ids it still
awaits (:meth:`~LivenessWatchdog.check`). The verdict is one of:

* ``REPLACE`` -- **silent**: requests have been awaiting a reply and *nothing at all* was
  received for ``timeout`` seconds (since the later of the last received message and the
  oldest pending request); or **ignored replies**: a message was ignored while a request was
  pending, and that request is still unanswered ``timeout`` seconds after it was sent (its
  reply was most likely the message Telethon dropped);
* ``PING`` -- nothing pending and nothing received for ``keepalive`` seconds: send a ping, so
  an idle connection that went silent is noticed too (the ping then is a pending request);
* ``OK``.

The sender (:mod:`telethon_guard.sender`) replaces the connection through its paced reconnect
path on ``REPLACE``: requests safe to send again (:func:`resend_is_safe`: a ``random_id`` that
Telegram de-duplicates, or an idempotent read) are re-sent on the new connection; the others
fail with :class:`SilentConnectionMayHaveRun` (a :class:`~telethon_guard.errors.MayHaveRunError`).

Bounds (seconds): a silent connection with a request pending is replaced at most
``timeout + tick`` after the request was sent; an idle one at most
``keepalive + timeout + 2 * tick`` after the last message received. Then the reconnect
waits its pacer turn (the first after a stable connection goes at once, see
:class:`~telethon_guard.reconnect.ReconnectPacer`).

Default numbers, from Telegram Desktop's ``mtproto/session_private.cpp``: it pings 30 s after
the last ping (``kPingSendAfter``) and restarts the connection when a ping is still unanswered
at 45 s (``kPingSendAfterForce``): our ``keepalive`` 30 s + ``timeout`` 15 s gives the same
45 s for an idle connection. With an ``attempt_timeout`` the silence bound is
``2 * attempt_timeout`` within Telegram Desktop's receive timeout range of 4 s
(``kMinReceiveTimeout``) to 64 s (``kMaxReceiveTimeout``).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import math
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._tl import method_name, random_id_of
from .errors import GuardConfigError, GuardConnectionError, MayHaveRunError
from .keys import is_idempotent

__all__ = [
    "DEFAULT_KEEPALIVE_INTERVAL",
    "DEFAULT_LIVENESS_TIMEOUT",
    "MAX_DERIVED_TIMEOUT",
    "MIN_DERIVED_TIMEOUT",
    "LivenessPolicy",
    "LivenessVerdict",
    "LivenessWatch",
    "LivenessWatchdog",
    "SilentConnectionError",
    "SilentConnectionMayHaveRun",
    "Verdict",
    "liveness_policy",
    "resend_is_safe",
    "run_watchdog",
    "watch_liveness",
]

log = logging.getLogger("telethon_guard")

DEFAULT_LIVENESS_TIMEOUT = 15.0
"""Seconds of silence while a reply is awaited, without an ``attempt_timeout`` (Telegram
Desktop: ping at 30 s, restart when still unanswered at 45 s; 45 - 30 = 15)."""

DEFAULT_KEEPALIVE_INTERVAL = 30.0
"""Seconds without any message before an idle connection is pinged (Telegram Desktop's
``kPingSendAfter``)."""

MIN_DERIVED_TIMEOUT = 4.0
"""Lower clamp of ``2 * attempt_timeout`` (Telegram Desktop's ``kMinReceiveTimeout``)."""

MAX_DERIVED_TIMEOUT = 64.0
"""Upper clamp of ``2 * attempt_timeout`` (Telegram Desktop's ``kMaxReceiveTimeout``)."""

MAX_TICK = 1.0
"""Longest pause between two checks, seconds."""

STALL_GAP = 3.0
"""A check more than this many ticks after the previous one follows an event-loop stall."""


_PINGS = frozenset({"ping", "pingDelayDisconnect"})


class SilentConnectionError(GuardConnectionError):
    """The connection was open but silent (or its replies were ignored) and was replaced.
    The cause of the paced reconnect; callers see it only as a ``__cause__``."""


class SilentConnectionMayHaveRun(MayHaveRunError):
    """A request that is not safe to send again (no ``random_id``, not a read: see
    :func:`telethon_guard.keys.is_idempotent`) was in flight on a connection that went silent
    for ``timeout`` seconds and was replaced. It reached the server or not, and may have run:
    it is not sent again. Final (never retried by the guard)."""

    def __init__(self, method: str, timeout: float) -> None:
        super().__init__(method, timeout)
        self.args = (f"{method}: the connection went silent for {timeout:.3f} s and was "
                     "replaced; not idempotent, so not sent again (it may have run)",)


def _seconds(name: str, value: Any, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        more = " or None" if allow_none else ""
        raise GuardConfigError(name, f"must be a finite number of seconds > 0{more}, "
                                     f"got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LivenessPolicy:
    """The watchdog's bounds, validated at construction.

    :param timeout: seconds (monotonic) a connection may stay silent while a reply is awaited
        (or a request may stay unanswered after one of its connection's messages was ignored)
        before it is replaced. Finite, > 0.
    :param keepalive: seconds without any received message after which an idle connection is
        pinged; ``None``: never (an idle connection that went silent is then only noticed
        when a request is sent on it). Finite, > 0 or ``None``.
    :raises GuardConfigError: naming ``liveness_timeout`` / ``keepalive_interval``.
    """

    timeout: float = DEFAULT_LIVENESS_TIMEOUT
    keepalive: float | None = DEFAULT_KEEPALIVE_INTERVAL

    def __post_init__(self) -> None:
        object.__setattr__(self, "timeout",
                           _seconds("liveness_timeout", self.timeout, allow_none=False))
        object.__setattr__(self, "keepalive",
                           _seconds("keepalive_interval", self.keepalive, allow_none=True))

    @property
    def tick(self) -> float:
        """Seconds between two checks: a fifth of the shorter bound, at most :data:`MAX_TICK`."""
        shortest = self.timeout if self.keepalive is None else min(self.timeout, self.keepalive)
        return min(MAX_TICK, shortest / 5)

    @property
    def silent_bound(self) -> float:
        """Longest time (s) from sending a request on a silent connection to its replacement."""
        return self.timeout + self.tick

    @property
    def idle_bound(self) -> float | None:
        """Longest time (s) from the last message received on an idle connection that went
        silent to its replacement (``None`` without keepalive pings)."""
        if self.keepalive is None:
            return None
        return self.keepalive + self.timeout + 2 * self.tick


def liveness_policy(config: Any) -> LivenessPolicy | None:
    """The policy of a :class:`~telethon_guard.config.GuardConfig` (or anything with its
    ``liveness``, ``liveness_timeout``, ``keepalive_interval``, ``attempt_timeout``
    attributes; missing ones take the defaults). ``None`` when ``liveness`` is off.

    ``liveness_timeout=None`` is derived: ``2 * attempt_timeout`` clamped to
    [:data:`MIN_DERIVED_TIMEOUT`, :data:`MAX_DERIVED_TIMEOUT`] when an ``attempt_timeout`` is
    set, else :data:`DEFAULT_LIVENESS_TIMEOUT`.
    """
    if config is None:
        return LivenessPolicy()
    if not getattr(config, "liveness", True):
        return None
    timeout = getattr(config, "liveness_timeout", None)
    if timeout is None:
        attempt = getattr(config, "attempt_timeout", None)
        if attempt is None:
            timeout = DEFAULT_LIVENESS_TIMEOUT
        else:
            timeout = min(MAX_DERIVED_TIMEOUT, max(MIN_DERIVED_TIMEOUT, 2 * float(attempt)))
    keepalive = getattr(config, "keepalive_interval", DEFAULT_KEEPALIVE_INTERVAL)
    return _policy(timeout, keepalive)


@functools.lru_cache(maxsize=64)
def _policy(timeout: float, keepalive: float | None) -> LivenessPolicy:
    """One (frozen) policy per distinct bounds, shared by every sender that has them."""
    return LivenessPolicy(timeout=timeout, keepalive=keepalive)


def resend_is_safe(request: Any) -> bool:
    """``True`` when ``request`` may be sent again on a new connection although it may have
    run: it carries a ``random_id`` (Telegram de-duplicates it) or is idempotent
    (:func:`telethon_guard.keys.is_idempotent`), or is a ping (harmless twice)."""
    method = method_name(request)
    return method in _PINGS or is_idempotent(method, random_id_of(request))


class Verdict(enum.Enum):
    """What the sender should do after a check."""

    OK = "ok"
    PING = "ping"
    REPLACE = "replace"


class LivenessVerdict(NamedTuple):
    """A check's outcome: ``verdict``, a human ``reason`` (for logs), ``silent_for``: seconds
    since the connection last showed life for the request(s) concerned."""

    verdict: Verdict
    reason: str = ""
    silent_for: float = 0.0


_OK = LivenessVerdict(Verdict.OK)

_NOTHING_PENDING: dict[Any, bool] = {}
"""What :meth:`LivenessWatchdog.check` reads for an empty ``pending`` (never written)."""


class LivenessWatchdog:
    """The liveness state of ONE connection (a new connection gets a new watchdog).

    :param policy: the bounds.
    :param now: when the connection opened (seconds, monotonic): counts as "last received".
    """

    __slots__ = ("_first_seen", "_ignored_since_check", "_last_check", "_last_received",
                 "_maybe_lost", "_ping_sent_at", "policy", "stalls")

    def __init__(self, policy: LivenessPolicy, now: float) -> None:
        self.policy = policy
        self._last_received = now
        self._first_seen: dict[Any, float] = {}  # pending msg_id -> first check that saw it
        # pending when a message was ignored (None: empty; an empty set costs 216 bytes)
        self._maybe_lost: set[Any] | None = None
        self._ignored_since_check = False
        self._ping_sent_at: float | None = None
        self._last_check = now
        self.stalls = 0
        """Checks skipped because the event loop had stalled (see :meth:`check`)."""

    @property
    def last_received(self) -> float:
        """When the last accepted message arrived (seconds, monotonic)."""
        return self._last_received

    def received(self, now: float) -> None:
        """A message from the server was accepted (any message: reply, ack, pong, update)."""
        self._last_received = now
        self._ping_sent_at = None

    def ignored(self) -> None:
        """A message from the server was ignored ("very old" / "very new" msg_id, a resent
        one, a security check): a pending request may have lost its reply."""
        self._ignored_since_check = True

    def pinged(self, now: float) -> None:
        """The sender sent the keepalive ping that :meth:`check` asked for."""
        self._ping_sent_at = now

    def check(self, now: float, pending: Iterable[tuple[Any, bool]]) -> LivenessVerdict:
        """Look at the connection at ``now``.

        :param pending: ``(msg_id, awaited)`` of every request sent on this connection and
            not answered yet; ``awaited`` is ``False`` when nobody waits for the answer any
            more (the caller gave up: Telegram still answers it, so it still counts for
            "silent", but its lost reply needs no recovery).

        A check more than :data:`STALL_GAP` ticks after the previous one means the event loop
        itself was blocked: replies may be waiting in the socket buffer, unread. That check
        only records what is pending and says ``OK`` (the receive loop reads the buffer before
        the next tick), so a stall is never mistaken for a silent connection.
        """
        stalled = now - self._last_check > STALL_GAP * self.policy.tick
        self._last_check = now
        seen = self._first_seen
        # An idle connection (an empty list or tuple pending) allocates nothing here: 1,000
        # connections are checked every tick, and each allocation is paid on the loop.
        current: dict[Any, bool] = dict(pending) if pending else _NOTHING_PENDING
        if seen:
            for key in [k for k in seen if k not in current]:
                del seen[key]
        maybe_lost = self._maybe_lost
        if maybe_lost is not None:
            maybe_lost.intersection_update(current)
        for key in current:
            if key not in seen:
                seen[key] = now
        if self._ignored_since_check:
            self._ignored_since_check = False
            if maybe_lost is None:
                maybe_lost = self._maybe_lost = set()
            maybe_lost.update(current)
        if stalled:
            self.stalls += 1
            return _OK
        timeout = self.policy.timeout
        pinged = self._ping_sent_at
        if pinged is not None and now - pinged >= timeout:
            return LivenessVerdict(
                Verdict.REPLACE, f"keepalive ping unanswered for {now - pinged:.1f} s",
                now - pinged)
        if seen:
            oldest = min(seen.values())
            since = max(oldest, self._last_received)
            if now - since >= timeout:
                return LivenessVerdict(
                    Verdict.REPLACE,
                    f"silent: nothing received for {now - since:.1f} s while "
                    f"{len(seen)} request(s) awaited a reply", now - since)
            lost = ([seen[k] for k in maybe_lost if current.get(k)]
                    if maybe_lost else [])
            if lost and now - min(lost) >= timeout:
                return LivenessVerdict(
                    Verdict.REPLACE,
                    f"replies ignored: {len(lost)} request(s) unanswered for "
                    f"{now - min(lost):.1f} s after a message was dropped", now - min(lost))
            return _OK
        keepalive = self.policy.keepalive
        if (keepalive is not None and self._ping_sent_at is None
                and now - self._last_received >= keepalive):
            return LivenessVerdict(Verdict.PING, f"idle for {now - self._last_received:.1f} s",
                                   now - self._last_received)
        return _OK


async def run_watchdog(
    dog: LivenessWatchdog,
    *,
    now: Callable[[], float],
    pending: Callable[[], Iterable[tuple[Any, bool]]],
    ping: Callable[[], bool],
    replace: Callable[[LivenessVerdict], None],
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> LivenessVerdict:
    """Check ``dog`` every ``tick`` seconds until it says ``REPLACE``; then call ``replace``
    once and return the verdict. ``ping()`` sends a keepalive ping (``False``: could not).
    Cancel the task to stop it (the connection ended)."""
    tick = dog.policy.tick
    while True:
        await sleep(tick)
        t = now()
        verdict = dog.check(t, pending())
        if verdict.verdict is Verdict.PING:
            if ping():
                dog.pinged(t)
        elif verdict.verdict is Verdict.REPLACE:
            replace(verdict)
            return verdict


# ---- one loop timer for every watchdog of a loop ---------------------------------------------


class LivenessWatch:
    """One connection's watchdog filed with its loop's :class:`_LoopWatchdogs` (returned by
    :func:`watch_liveness`): checked every ``tick`` seconds until it says ``REPLACE`` or
    :meth:`cancel` is called. Costs a small object per connection instead of a task, its
    coroutine frame and its sleep timer."""

    __slots__ = ("bucket", "dog", "now", "pending", "ping", "replace", "verdict", "watchdogs")

    def __init__(self, dog: LivenessWatchdog, now: Callable[[], float],
                 pending: Callable[[], Iterable[tuple[Any, bool]]], ping: Callable[[], bool],
                 replace: Callable[[LivenessVerdict], None]) -> None:
        self.dog = dog
        self.now = now
        self.pending = pending
        self.ping = ping
        self.replace = replace
        self.verdict: LivenessVerdict | None = None
        """The ``REPLACE`` verdict that ended the watch (``None``: not ended by one)."""
        self.watchdogs: _LoopWatchdogs | None = None
        self.bucket = 0  # which slice of its loop's watches it is checked with

    @property
    def active(self) -> bool:
        """``True`` until it said ``REPLACE`` or was cancelled."""
        return self.watchdogs is not None

    def cancel(self, _task: Any = None) -> None:
        """Stop checking (idempotent). Usable as a done-callback (``_task`` is ignored)."""
        watchdogs = self.watchdogs
        if watchdogs is not None:
            self.watchdogs = None
            watchdogs.discard(self)

    def check(self) -> bool:
        """One check, as :func:`run_watchdog` makes it; ``True`` when it said ``REPLACE``
        (``replace`` was called)."""
        dog = self.dog
        t = self.now()
        verdict = dog.check(t, self.pending())
        if verdict.verdict is Verdict.PING:
            if self.ping():
                dog.pinged(t)
        elif verdict.verdict is Verdict.REPLACE:
            self.verdict = verdict
            self.replace(verdict)
            return True
        return False


WATCH_SLICES = 64
"""A loop's watches are dealt round-robin into this many slices, each slice checked once per
``tick`` at its own offset (``tick / WATCH_SLICES`` apart), so each watch is checked once per
tick and 1,000 connections cost the loop bursts of at most 16 checks, not one of 1,000 (a
10 ms lag ticker's p99 sees a burst; with 10 slices of 100 checks a burst took 3-9 ms at load
3-6 with tracemalloc on, benchmarks/pool_memory.py). Empty slices are skipped: a loop with
one connection wakes once per tick."""


class _LoopWatchdogs:
    """Every :class:`LivenessWatch` of one event loop with one tick length, checked by ONE loop
    timer: the watches are dealt round-robin into :data:`WATCH_SLICES` slices; slice ``i``
    is checked at offset ``i * tick / WATCH_SLICES`` of every tick, so each watch is checked
    every ``tick`` seconds; the timer is armed for the next non-empty slice (none while
    empty)."""

    __slots__ = ("__weakref__", "_count", "_dealt", "_handle", "_slices", "_turn", "loop",
                 "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self.loop = loop
        self.tick = tick
        self._slices: list[dict[LivenessWatch, None]] = [{} for _ in range(WATCH_SLICES)]
        self._count = 0
        self._dealt = 0  # watches added so far (the next one's slice)
        self._turn = 0  # the slice the armed timer checks
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return self._count

    def add(self, watch: LivenessWatch) -> None:
        # Dealt round-robin, so the slices stay even however the connections arrive. The
        # first check comes within one tick (a check sooner than run_watchdog's first
        # sleep(tick) changes no bound: they run from the request or the last message).
        bucket = self._dealt % WATCH_SLICES
        self._dealt += 1
        self._slices[bucket][watch] = None
        self._count += 1
        watch.bucket = bucket
        watch.watchdogs = self
        if self._handle is None:
            self._turn = bucket
            self._handle = self.loop.call_later(self.tick, self._fire)

    def discard(self, watch: LivenessWatch) -> None:
        if self._slices[watch.bucket].pop(watch, 0) is None:
            self._count -= 1
        if not self._count and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        turn = self._turn
        for watch in list(self._slices[turn]):
            if watch.watchdogs is not self:  # cancelled by an earlier check of this round
                continue
            try:
                done = watch.check()
            except Exception:
                log.exception("liveness check failed; the connection is no longer watched")
                done = True
            if done:
                watch.cancel()
        if self._count and self._handle is None and not self.loop.is_closed():
            slices = self._slices
            steps = 1  # the next non-empty slice, at most a whole tick on (this one)
            while steps < WATCH_SLICES and not slices[(turn + steps) % WATCH_SLICES]:
                steps += 1
            self._turn = (turn + steps) % WATCH_SLICES
            self._handle = self.loop.call_later(self.tick * steps / WATCH_SLICES, self._fire)


_WATCHDOGS: weakref.WeakValueDictionary[tuple[int, float], _LoopWatchdogs] = (
    weakref.WeakValueDictionary())
"""``(id(loop), tick)`` -> its :class:`_LoopWatchdogs`, kept alive by its watches (and its
armed timer), so a closed loop is not kept alive by this table."""


def watch_liveness(
    dog: LivenessWatchdog,
    *,
    now: Callable[[], float],
    pending: Callable[[], Iterable[tuple[Any, bool]]],
    ping: Callable[[], bool],
    replace: Callable[[LivenessVerdict], None],
    loop: asyncio.AbstractEventLoop | None = None,
) -> LivenessWatch:
    """Check ``dog`` every ``dog.policy.tick`` seconds on ``loop`` (default: the running
    loop) until it says ``REPLACE`` (then ``replace`` is called once) or the returned watch
    is cancelled: :func:`run_watchdog`'s behaviour without a task per connection (the
    checks of every connection of the loop share one loop timer). The first check comes
    at most one tick after the call. Must be called on the loop's thread."""
    if loop is None:
        loop = asyncio.get_running_loop()
    tick = dog.policy.tick
    key = (id(loop), tick)
    watchdogs = _WATCHDOGS.get(key)
    if watchdogs is None or watchdogs.loop is not loop:
        watchdogs = _WATCHDOGS[key] = _LoopWatchdogs(loop, tick)
    watch = LivenessWatch(dog, now, pending, ping, replace)
    watchdogs.add(watch)
    return watch
