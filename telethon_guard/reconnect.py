"""Reconnect pacing after transport errors (transport -429, dropped connections).

:class:`ReconnectPacer` decides *when* the next new connection to a DC may be opened. Two rules
apply at once and the later one wins:

* **Flood-control windows.** No more than ``count`` new connections in any ``seconds``-long
  window, for every ``(count, seconds)`` pair. The default ``((1, 1.0), (2, 4.0), (3, 8.0))``
  is TDLib's ``ConnectionCreator`` flood control (``flood_control.add_limit(1, 1)``,
  ``add_limit(4, 2)``, ``add_limit(8, 3)`` in ``td/telegram/net/ConnectionCreator.cpp``):
  1 connection per second, 2 per 4 seconds, 3 per 8 seconds. In steady state that is one
  attempt every ~2.7 s, so a server refusing connections for 10 s sees at most 5 attempts.
  The same windows apply, separately, to the *failures of established connections* (a
  transport -429 read from the server, a live connection lost): TDLib's
  ``mtproto_error_flood_control``, with the same three limits, counts every -429 it reads
  (``ConnectionCreator::on_mtproto_error``). So the -429 that ends a live connection opens the
  windows, not the connection's own opening seconds earlier: in the demo's 3 s storm (issue 13)
  counting only openings put the second reconnect at 3.9 s, 0.1 s before the storm ended,
  and the 3-per-8-s window then held the third until 7.9 s; counting the -429s as TDLib does
  gives 2 s, then 5 s, back 1 s after the storm. Both sets of windows must allow an attempt.
* **Exponential backoff with jitter** after consecutive failures: after the ``n``-th failure
  the next attempt waits ``c * uniform(1 - jitter, 1)`` seconds from that failure, where
  ``c = min(backoff_cap, backoff_base * 2 ** (n - 1))``. The defaults (base 1 s, cap 16 s) are
  TDLib's ``ConnectionCreator::ClientInfo::Backoff`` (``next_delay_`` 1 s doubling up to
  ``MAX_BACKOFF = 16`` on desktop, ``ConnectionCreator.h``); TDLib adds no jitter. The default
  ``jitter=0.25`` spreads clients refused together over the last quarter of each delay;
  ``jitter=1.0`` is "full jitter" (``uniform(0, c)``). Why not full jitter by default: a delay
  can then be 0, and the windows alone allow 12 attempts in 30 s; with ``jitter <= 0.25`` a DC
  that refuses every connection for 30 s sees at most 6 attempts (the first one included) and
  a client refused for 10 s is back at most ~5 s after the refusal ends.

A connection counts as good (failures and backoff reset) once :meth:`record_success` was called
for it and no failure followed within ``stable_after`` seconds: a server answering -429 right
after accepting the TCP connection does not reset the backoff.

All times are seconds on the pacer's clock (monotonic by default). The pacer is pure logic
with an injectable ``clock`` and ``sleep``; one pacer may be shared by several senders that
connect to the same address (their attempts then share the windows, as in TDLib).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from .errors import GuardConfigError

__all__ = ["DEFAULT_WINDOWS", "ReconnectPacer"]

_SHARED_RNG = random.Random()

DEFAULT_WINDOWS: tuple[tuple[int, float], ...] = ((1, 1.0), (2, 4.0), (3, 8.0))
"""TDLib ``ConnectionCreator`` flood control: (connections, seconds) windows."""


def _validate_windows(windows: Sequence[tuple[int, float]]) -> tuple[tuple[int, float], ...]:
    try:
        pairs = tuple((c, s) for c, s in windows)
    except (TypeError, ValueError) as e:
        raise GuardConfigError("windows", "must be a sequence of (count, seconds) pairs") from e
    if not pairs:
        raise GuardConfigError("windows", "at least one (count, seconds) window is required")
    out = []
    for count, seconds in pairs:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise GuardConfigError("windows", f"count must be an int >= 1, got {count!r}")
        if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                or not math.isfinite(seconds) or seconds <= 0):
            raise GuardConfigError("windows",
                                   f"seconds must be a finite number > 0, got {seconds!r}")
        out.append((count, float(seconds)))
    return tuple(out)


def _positive(field: str, value: float, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GuardConfigError(field, f"must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise GuardConfigError(field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


class ReconnectPacer:
    """Paces new connections after transport errors (TDLib flood control + jittered backoff).

    :param windows: ``(count, seconds)`` pairs: at most ``count`` connection attempts in any
        window of ``seconds``. Default :data:`DEFAULT_WINDOWS` (TDLib's 1/1 s, 2/4 s, 3/8 s).
    :param backoff_base: seconds; the backoff after the first failure (doubles with each
        consecutive failure). Default 1.0 (TDLib).
    :param backoff_cap: seconds; the largest backoff. Default 16.0 (TDLib desktop).
    :param jitter: fraction in ``[0, 1]`` of each backoff that is random (see above).
        Default 0.25; 1.0 is full jitter, 0.0 is TDLib's deterministic doubling.
    :param stable_after: seconds a connection must survive after :meth:`record_success` before
        the failure count resets. Default 5.0.
    :param clock: returns the current time in seconds (monotonic). Default ``time.monotonic``.
    :param sleep: ``async`` sleep in seconds on the same clock. Default ``asyncio.sleep``.
    :param rng: ``random.Random`` for the jitter (inject a seeded one in tests).
    :raises GuardConfigError: on invalid settings (at construction).
    """

    __slots__ = (
        "_attempts",
        "_backoff_base",
        "_backoff_cap",
        "_backoff_until",
        "_clock",
        "_connected",
        "_errors",
        "_failing_since",
        "_failures",
        "_jitter",
        "_maxlen",
        "_rng",
        "_sleep",
        "_stable_after",
        "_success_at",
        "_windows",
        "attempts_total",
        "failures_total",
    )

    def __init__(
        self,
        windows: Sequence[tuple[int, float]] = DEFAULT_WINDOWS,
        *,
        backoff_base: float = 1.0,
        backoff_cap: float = 16.0,
        jitter: float = 0.25,
        stable_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._windows = _validate_windows(windows)
        self._backoff_base = _positive("backoff_base", backoff_base)
        self._backoff_cap = _positive("backoff_cap", backoff_cap)
        if self._backoff_cap < self._backoff_base:
            raise GuardConfigError("backoff_cap", "must be >= backoff_base")
        self._jitter = _positive("jitter", jitter, allow_zero=True)
        if self._jitter > 1.0:
            raise GuardConfigError("jitter", f"must be in [0, 1], got {jitter!r}")
        self._stable_after = _positive("stable_after", stable_after, allow_zero=True)
        if not callable(clock):
            raise GuardConfigError("clock", "must be a callable returning seconds")
        if not callable(sleep):
            raise GuardConfigError("sleep", "must be an async callable taking seconds")
        self._clock = clock
        self._sleep = sleep
        # One process-wide RNG unless one is injected: a Random holds 2.5 KiB of state.
        self._rng = rng if rng is not None else _SHARED_RNG
        # Times of the latest attempts / failures, at most _maxlen each, oldest first (lists
        # trimmed by _log: a deque's first block is 0.7 KiB, two per pacer and client).
        self._maxlen = max(c for c, _ in self._windows)
        self._attempts: list[float] = []
        # Failures of established connections (TDLib's mtproto_error_flood_control events).
        self._errors: list[float] = []
        self._connected = False  # record_success since the last failure
        self._failures = 0
        self._backoff_until = -math.inf
        self._success_at: float | None = None
        self._failing_since: float | None = None
        self.attempts_total = 0
        """Connection attempts granted by :meth:`wait_turn` / :meth:`try_turn` (lifetime)."""
        self.failures_total = 0
        """Failures recorded with :meth:`record_failure` (lifetime)."""

    @classmethod
    def scaled(cls, factor: float, **kwargs: object) -> ReconnectPacer:
        """A pacer whose windows and backoff times are the defaults multiplied by ``factor``.

        For tests that compress TDLib's schedule in time while keeping its shape
        (``scaled(0.25)`` allows 1 attempt per 0.25 s, 2 per 1 s, 3 per 2 s).
        """
        f = _positive("factor", factor)
        windows = tuple((c, s * f) for c, s in DEFAULT_WINDOWS)
        params: dict[str, object] = {
            "backoff_base": 1.0 * f, "backoff_cap": 16.0 * f, "stable_after": 5.0 * f,
        }
        params.update(kwargs)
        return cls(windows, **params)  # type: ignore[arg-type]

    # ---- state ------------------------------------------------------------------------------

    @property
    def windows(self) -> tuple[tuple[int, float], ...]:
        return self._windows

    @property
    def backoff_cap(self) -> float:
        """Largest backoff ceiling, seconds."""
        return self._backoff_cap

    def now(self) -> float:
        """The pacer's clock, seconds."""
        return self._clock()

    def _settle(self, now: float) -> None:
        # A success that survived ``stable_after`` seconds wipes the failure history.
        if self._success_at is not None and now - self._success_at >= self._stable_after:
            self._failures = 0
            self._backoff_until = -math.inf
            self._failing_since = None
            self._success_at = None

    @property
    def failures(self) -> int:
        """Consecutive failures since the last stable success."""
        self._settle(self._clock())
        return self._failures

    @property
    def failing_since(self) -> float | None:
        """Clock time of the first failure since the last stable success, or ``None``."""
        self._settle(self._clock())
        return self._failing_since

    @property
    def last_attempt_at(self) -> float | None:
        """Clock time (seconds) of the latest connection attempt on record (a granted turn,
        moved to when its connection started by :meth:`attempt_started`), or ``None``."""
        return self._attempts[-1] if self._attempts else None

    def _log(self, times: list[float], now: float) -> None:
        times.append(now)
        if len(times) > self._maxlen:
            del times[0]

    def next_turn_at(self) -> float:
        """Earliest clock time (seconds) at which the next attempt is allowed."""
        now = self._clock()
        self._settle(now)
        earliest = max(now, self._backoff_until)
        for count, seconds in self._windows:
            if len(self._attempts) >= count:
                earliest = max(earliest, self._attempts[-count] + seconds)
            if len(self._errors) >= count:
                earliest = max(earliest, self._errors[-count] + seconds)
        return earliest

    def next_turn_in(self) -> float:
        """Seconds until the next attempt is allowed (0.0 when allowed now)."""
        return max(0.0, self.next_turn_at() - self._clock())

    # ---- taking turns -----------------------------------------------------------------------

    def try_turn(self) -> bool:
        """Take a turn now if one is allowed (records the attempt); never waits."""
        now = self._clock()
        if self.next_turn_at() > now:
            return False
        self._log(self._attempts, now)
        self.attempts_total += 1
        return True

    def record_attempt(self) -> float:
        """Record an attempt made without asking (e.g. a first connect with no failure on
        record); it still counts in the windows for the attempts that follow.

        :returns: the clock time recorded (seconds), for :meth:`attempt_started`.
        """
        now = self._clock()
        self._log(self._attempts, now)
        self.attempts_total += 1
        return now

    async def wait_turn(self, deadline: float | None = None) -> bool:
        """Wait until a new connection attempt is allowed, then record it and return ``True``.

        :param deadline: absolute clock time (seconds). If the next turn would come after it,
            return ``False`` at once without waiting and without recording an attempt.
        :returns: ``True`` when the caller may (and should) open a connection now.

        Safe with several waiters sharing one pacer: each re-checks after sleeping, so a turn
        is never handed out twice. Cancellation while waiting records nothing.
        """
        return await self.take_turn(deadline) is not None

    async def take_turn(self, deadline: float | None = None) -> float | None:
        """:meth:`wait_turn`, returning the clock time (seconds) the turn was recorded at, or
        ``None`` where :meth:`wait_turn` returns ``False``. A caller that waits for something
        else (a slot of the process connection budget) before it really opens the connection
        passes that time to :meth:`attempt_started` when it does."""
        while True:
            at = self.next_turn_at()
            if deadline is not None and at > deadline:
                return None
            now = self._clock()
            if at - now <= 0:
                self._log(self._attempts, now)
                self.attempts_total += 1
                return now
            await self._sleep(at - now)

    def attempt_started(self, turn: float) -> None:
        """The attempt whose turn was recorded at ``turn`` (:meth:`take_turn`,
        :meth:`record_attempt`) starts its connection now: the windows count it from now.

        A turn holds its place in the windows from the moment it is granted (so several
        senders sharing the pacer never get the same turn), but the windows are TDLib's limits
        on *connections*: an attempt that then waited seconds for a budget slot must count
        from when it connected, or the next turns come that much too early.
        """
        now = self._clock()
        if now <= turn:
            return
        attempts = self._attempts
        for i in range(len(attempts) - 1, -1, -1):
            if attempts[i] == turn:
                del attempts[i]
                break
        self._log(attempts, now)  # every recorded time is <= now: the log stays in order

    # ---- outcomes ---------------------------------------------------------------------------

    def record_failure(self) -> float:
        """Record a failed connection (refused, transport error, dropped before it was stable).
        The failure of a connection that was established (:meth:`record_success` since the
        last failure: a -429 read from the server, a live connection lost) also counts in the
        windows, as TDLib's ``mtproto_error_flood_control`` counts -429s.

        :returns: the backoff in seconds drawn for the next attempt.
        """
        now = self._clock()
        if self._connected:
            self._connected = False
            self._log(self._errors, now)
        self._settle(now)
        self._success_at = None
        self._failures += 1
        self.failures_total += 1
        if self._failing_since is None:
            self._failing_since = now
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** min(self._failures - 1, 62))
        backoff = self._rng.uniform(ceiling * (1.0 - self._jitter), ceiling)
        self._backoff_until = now + backoff
        return backoff

    def record_success(self) -> None:
        """Record that a connection works (the server answered on it).

        The failure history is wiped once ``stable_after`` seconds pass without a new failure.
        """
        now = self._clock()
        self._connected = True
        self._settle(now)
        if self._success_at is None:
            self._success_at = now
            self._settle(now)

    def reset(self) -> None:
        """Forget failures and backoff (the windows of past attempts still apply)."""
        self._failures = 0
        self._backoff_until = -math.inf
        self._failing_since = None
        self._success_at = None

    def __repr__(self) -> str:
        return (f"ReconnectPacer(windows={self._windows!r}, failures={self._failures}, "
                f"backoff_cap={self._backoff_cap})")
