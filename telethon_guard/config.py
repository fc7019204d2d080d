"""Every guard setting in one frozen, validated :class:`GuardConfig`.

Units: every duration is in seconds (float), measured on the guard clock (monotonic).
A rate window is ``(count, period)``: at most ``count`` requests in any interval of
``period`` seconds (a sliding window, not calendar seconds). Several windows apply at once,
e.g. ``((10, 1.0), (200, 60.0))`` means 10 per second AND 200 per minute.

Sources of the defaults:

* ``deadline``: TDLib ``NetQueryDelayer`` gives one query a total budget of 60 s for user
  accounts and 8 s for bots; :meth:`GuardConfig.for_user` / :meth:`GuardConfig.for_bot` use those.
* ``max_flood_wait``: 60 s, the same as Telethon's ``flood_sleep_threshold`` default.
* ``reconnect_pacing``: TDLib ``ConnectionCreator`` allows 1 new connection per 1 s, 2 per 4 s
  and 3 per 8 s after transport errors.
* ``reconnect_backoff_base`` / ``reconnect_backoff_cap``: 1 s doubling up to 16 s, TDLib
  ``ConnectionCreator::ClientInfo::Backoff`` (``MAX_BACKOFF = 16`` on desktop). TDLib adds no
  jitter; ``reconnect_jitter=0.25`` is ours (see :mod:`telethon_guard.reconnect`).
* ``max_reconnect_seconds``: 60 s is our choice, not a Telegram or TDLib number (TDLib keeps
  reconnecting for ever): it matches the default ``deadline`` (TDLib ``NetQueryDelayer``'s 60 s
  per user query), so a pending call is not kept waiting for a reconnect past its budget.
* :data:`COMMUNITY_USER_LIMITS` / :data:`COMMUNITY_BOT_LIMITS`: observed community limits, not
  official (design-notes section 3): about 30 ``messages.getHistory`` per 30 s per account, about
  1 message per second into one private chat, about 20 messages per minute into one group,
  bots about 30 messages per second overall. Opt-in only.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from ._tl import known_method_names
from .errors import GuardConfigError

Window = tuple[int, float]
"""``(count, period)``: at most ``count`` requests in any ``period`` seconds."""

Windows = tuple[Window, ...]

EventCallback = Callable[[Any], Any]
"""An ``on_event`` callback: ``callback(event)``; may return an awaitable (it is scheduled)."""

_SHARED_RNG = random.Random()
"""Jitter RNG of every unseeded config (see :meth:`GuardConfig.make_rng`)."""

TDLIB_RECONNECT_PACING: Windows = ((1, 1.0), (2, 4.0), (3, 8.0))
"""TDLib ConnectionCreator: after transport errors, 1 connection per 1 s, 2 per 4 s, 3 per 8 s."""

MAX_FLOOD_WAIT_CLAMP = 14 * 24 * 3600.0
"""Upper clamp of a server flood wait (TDLib NetQueryDelayer): 14 days, in seconds."""

COMMUNITY_USER_LIMITS: Mapping[str, Any] = MappingProxyType(
    {
        "method_limits": {"messages.getHistory": ((30, 30.0),)},
        "peer_limits_private": ((1, 1.0),),
        "peer_limits_group": ((20, 60.0),),
    }
)
"""Opt-in preset of observed (unofficial) limits for user accounts:
``GuardConfig.for_user(**COMMUNITY_USER_LIMITS)``."""

COMMUNITY_BOT_LIMITS: Mapping[str, Any] = MappingProxyType(
    {
        "send_limits": ((30, 1.0),),
        "peer_limits_private": ((1, 1.0),),
        "peer_limits_group": ((20, 60.0),),
    }
)
"""Opt-in preset of observed (unofficial) limits for bots:
``GuardConfig.for_bot(**COMMUNITY_BOT_LIMITS)``."""


def _finite(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False,
            allow_none: bool = False) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise GuardConfigError(name, "must be a number, not None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GuardConfigError(name, f"must be a number of seconds, got {value!r}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise GuardConfigError(name, f"must be finite, got {value!r}")
    if strict and v <= minimum:
        raise GuardConfigError(name, f"must be > {minimum:g}, got {value!r}")
    if not strict and v < minimum:
        raise GuardConfigError(name, f"must be >= {minimum:g}, got {value!r}")
    return v


def _int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GuardConfigError(name, f"must be an integer, got {value!r}")
    if value < minimum:
        raise GuardConfigError(name, f"must be >= {minimum}, got {value!r}")
    return value


def _windows(name: str, value: Any) -> Windows:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):  # iterated, it would be read char by char
        raise GuardConfigError(
            name, f"must be a sequence of (count, period) windows, period in seconds, e.g. "
                  f"((10, 1.0),) for 10 per second; got the {type(value).__name__} {value!r}")
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
    ):
        value = (value,)  # a single window given without the outer tuple
    try:
        items = list(value)
    except TypeError:
        raise GuardConfigError(
            name, f"must be a sequence of (count, period), got {value!r}") from None
    out: list[Window] = []
    for item in items:
        try:
            if isinstance(item, (str, bytes)):
                raise TypeError
            count, period = item
        except (TypeError, ValueError):
            raise GuardConfigError(
                name, f"each window must be (count, period), period in seconds, e.g. "
                      f"(10, 1.0); got {item!r}") from None
        c = _int(name, count, minimum=1)
        p = _finite(name, period, minimum=0.0, strict=True)
        assert p is not None
        out.append((c, p))
    return tuple(sorted(set(out), key=lambda w: (w[1], w[0])))


_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"})
"""URL schemes ``storage`` accepts (``telethon_guard.storage.redis.from_url`` serves them)."""

@dataclass(frozen=True, slots=True)
class GuardConfig:
    """All guard settings, validated once at construction.

    Raises :class:`~telethon_guard.errors.GuardConfigError` (a ``ValueError``) naming the field
    for any bad value. Build with ``GuardConfig(...)``, :meth:`for_user` or :meth:`for_bot`;
    derive with :meth:`replace`.

    Attributes (durations in seconds on the monotonic guard clock):

    * ``account``: key of the account in flood scopes, limiter keys and shared storage
      (``None``: the client fills in ``user:<id>``, the logged-in user's Telegram id, so every
      session of one user shares it; ``key:<auth key id>`` before the id is known, i.e. before
      login; see :func:`telethon_guard._link.account_key`). Never a phone number.
    * ``deadline``: total budget of one call (limiter waits, flood waits, backoff and network);
      ``None`` for no deadline. Exceeding it raises ``DeadlineExceeded``.
    * ``attempt_timeout``: optional timeout of one network attempt, seconds (``None``: only the
      deadline), counted from the request's send on a live connection of a guarded sender:
      time queued behind a paced reconnect does not count, and a request re-sent after a
      reconnect gets the full timeout again (capped at the deadline), so an attempt timeout
      (a circuit breaker failure) means no answer on a live connection. A timed-out
      idempotent request is retried (same ``random_id``); one that is not raises
      ``MayHaveRunError``.
    * ``max_flood_wait``: longest FLOOD_WAIT / SLOWMODE_WAIT / FLOOD_PREMIUM_WAIT the guard waits;
      longer ones are raised at once as ``FloodWaitBlocked`` & co.
    * ``rate_limits``: windows for all requests of the account.
    * ``method_limits``: ``{"messages.getHistory": ((30, 30.0),)}``; keyed per account, DC, method.
    * ``send_limits``: windows for all message sends of the account (bots: ~30/s).
    * ``peer_limits_private`` / ``peer_limits_group``: windows for sends into one private chat /
      one group or channel, keyed per account and peer; at most ``max_peer_keys`` peers are
      tracked (least recently used dropped first).
    * ``breaker_failure_threshold``: consecutive failures (transport errors, timeouts, 5xx) that
      open the breaker of an (account, DC); ``breaker_open_seconds`` how long it stays OPEN,
      multiplied by ``breaker_open_growth`` each time the HALF_OPEN probe fails, at most
      ``breaker_max_open_seconds``.
    * ``retry_max_attempts``: network attempts per call for transient errors (1 = no retry);
      backoff ``uniform(0, min(retry_max_delay, retry_base_delay * 2**n))`` (full jitter).
    * ``flood_max_retries``: server FLOOD_WAITs waited and retried within one call.
    * ``flood_widen_chats`` / ``flood_widen_window`` / ``flood_narrow_after``: scope of a
      FLOOD_WAIT on a write to a chat (:mod:`telethon_guard.flood_scope`): it blocks that chat
      only until floods of the method come from ``flood_widen_chats`` (default 3, >= 1; 1 makes
      every write flood account-wide) chats within ``flood_widen_window`` seconds (default 60,
      > 0), or the account was at a ``send_limits`` window; then the method is blocked
      account-wide, until ``flood_narrow_after`` (default 5, >= 1) writes to other chats
      succeed in a row. Our numbers, not Telegram's (it publishes no scope).
    * ``transfer_concurrency``: file-part calls (``upload.getFile``, ``saveFilePart``...) in
      flight at once per account and method, across the main and exported senders
      (:mod:`telethon_guard.transfer_slots`): the largest window; default 16, Telegram
      Desktop's 16 parts per download session (``kMaxWaitedInSession``; older
      ``kMaxFileQueries``); ``None``: unbounded (the layer is off).
      ``transfer_start_parts``: the window of parts in flight a transfer opens with, per
      account and method (default 4, Telegram Desktop's ``kStartWaitedInSession``); it doubles
      each second it is full until the first flood, then grows by one part per second, up to
      ``transfer_concurrency``, and halves on a ``FLOOD_WAIT`` (AIMD; not below the start),
      so the opening second draws at most this many floods. Above ``transfer_concurrency`` it
      is that; ``None``: no slow start (a fixed bound of ``transfer_concurrency``).
    * ``rate_margin``: seconds added to the period of every *configured* window (``rate_limits``,
      ``method_limits``, ``send_limits``, peer limits; not ``reconnect_pacing``), default 0.05.
      The limiter spaces its reservations by the period, but Telegram counts *arrivals*, one
      variable send latency later: without a margin a request admitted at the end of one
      window can arrive after an early request of the next, and the server sees ``count + 1``.
      The margin must exceed the latency *jitter* (not the latency); it costs
      ``margin / (period + margin)`` of the allowed rate at saturation (0.05 s: 4.8 % of a 1 s
      window, 2.4 % of 2 s, 0.2 % of 30 s). ``0`` restores exact spacing.
    * ``adaptive_pacing``: learn a method's pace after a FLOOD_WAIT (see
      :mod:`telethon_guard.pacing`). ``pace_recover``: seconds after a first FLOOD_WAIT_X's
      wait within which its pace climbs back to the pre-flood rate and is dropped (a one-off
      flood never holds a method below its pre-flood rate longer than ``X + pace_recover``).
      ``pace_relax``: seconds a pace *held* by repeated FLOOD_WAITs is kept unchanged
      after its last FLOOD_WAIT (at least twice its period); then its period halves every
      further ``pace_relax`` seconds, and it is dropped at a quarter of its learned period
      (so a limit that went away stops costing rate within ``3 * pace_relax`` seconds).
      A flood on a relaxing pace doubles the hold of that method's next pace (at most 8x).
    * ``observe_only``: measure and report (events) what would have been delayed or blocked,
      without delaying or blocking (staged rollout). Server errors still propagate.
    * ``storage``: ``None``/``"memory"`` (in process), ``"redis://..."``, a ``GuardStorage``, or
      a ``redis.asyncio.Redis`` client (wrapped in ``telethon_guard.storage.redis.RedisStorage``).
      ``storage_fallback``: ``"local"`` (use in-memory state while shared storage is down) or
      ``"fail"`` (raise ``StorageUnavailableError``); ``storage_timeout`` bounds each call.
    * ``durable_storage``: with local storage (``storage=None``), keep flood blocks, login
      floods and OPEN breakers in a SQLite file so a restarted process still refuses a blocked
      call (:mod:`telethon_guard.storage.sqlite`); the file is ``storage_path``, by default
      ``<session>.guard.sqlite`` next to a file session (a ``StringSession`` / in-memory
      session without ``storage_path`` stays in memory). ``False``: memory only.
      ``durable_fallback``: ``"memory"`` (a file that cannot be opened or is corrupt is logged
      and memory is used) or ``"fail"`` (the client's construction raises
      ``GuardConfigError('storage_path')``).
    * ``on_event``: callables receiving every event (sync or async).
    * ``reconnect_pacing``: windows of new connections after transport errors (TDLib).
    * ``reconnect_backoff_base``: seconds of backoff after the first consecutive connection
      failure, doubling per failure up to ``reconnect_backoff_cap`` seconds (TDLib
      ``ConnectionCreator``: 1 s up to 16 s). ``reconnect_jitter``: fraction in ``[0, 1]`` of
      each backoff that is random (0.25: the last quarter; 1.0: full jitter; 0.0: TDLib's
      deterministic doubling).
    * ``max_reconnect_seconds``: seconds (monotonic, from the first failure of an outage) that
      pending calls wait for a reconnect before failing with ``TransportFloodError`` (after
      -429) or ``GuardConnectionError``; new calls then fail fast until a reconnect succeeds
      (a ``ReconnectGaveUp`` event is emitted). ``None``: wait for ever.
    * ``liveness``: replace a connection that is open but silent (:mod:`telethon_guard.liveness`):
      requests awaiting a reply and nothing received for ``liveness_timeout`` seconds, a
      keepalive ping unanswered that long, or a request unanswered that long after Telethon
      ignored a message ("very old" replies after an event-loop stall). ``liveness_timeout``
      ``None`` (default) is derived: ``2 * attempt_timeout`` within [4, 64] s, else 15 s.
      ``keepalive_interval``: seconds without any message before an idle connection is
      pinged (default 30, Telegram Desktop's; ``None``: never). ``False``: no watchdog.
    * ``connect_timeout``: seconds ``connect()`` may take in all (TCP, handshake, the init
      request, paced retries); past it, it fails with ``DeadlineExceeded("connect", s)`` and
      the client is left as before the call. ``None`` (default): ``deadline`` (no bound when
      that is ``None`` too).
    * ``seed`` / ``rng``: randomness of the backoff jitter (tests pass a seed).
    * ``log_peer_ids``: include peer ids in events and logs (off: a short hash instead).
    """

    account: str | None = None
    deadline: float | None = 60.0
    attempt_timeout: float | None = None
    max_flood_wait: float = 60.0
    rate_limits: Windows = ()
    method_limits: Mapping[str, Windows] = field(default_factory=dict)
    send_limits: Windows = ()
    peer_limits_private: Windows = ()
    peer_limits_group: Windows = ()
    max_peer_keys: int = 10_000
    breaker_failure_threshold: int = 5
    breaker_open_seconds: float = 5.0
    breaker_open_growth: float = 2.0
    breaker_max_open_seconds: float = 300.0
    retry_max_attempts: int = 5
    retry_base_delay: float = 0.5
    retry_max_delay: float = 10.0
    flood_max_retries: int = 5
    flood_widen_chats: int = 3
    flood_widen_window: float = 60.0
    flood_narrow_after: int = 5
    transfer_concurrency: int | None = 16
    transfer_start_parts: int | None = 4
    rate_margin: float = 0.05
    adaptive_pacing: bool = True
    pace_relax: float = 5.0
    pace_recover: float = 2.0
    observe_only: bool = False
    storage: Any = None
    storage_fallback: str = "local"
    storage_timeout: float = 0.5
    durable_storage: bool = True
    storage_path: str | None = None
    durable_fallback: str = "memory"
    on_event: tuple[EventCallback, ...] = ()
    reconnect_pacing: Windows = TDLIB_RECONNECT_PACING
    reconnect_backoff_base: float = 1.0
    reconnect_backoff_cap: float = 16.0
    reconnect_jitter: float = 0.25
    max_reconnect_seconds: float | None = 60.0
    connect_timeout: float | None = None
    seed: int | None = None
    rng: random.Random | None = field(default=None, compare=False)
    log_peer_ids: bool = False
    liveness: bool = True
    liveness_timeout: float | None = None
    keepalive_interval: float | None = 30.0

    def __post_init__(self) -> None:
        s = object.__setattr__
        if self.account is not None and not isinstance(self.account, str):
            raise GuardConfigError("account", f"must be a str or None, got {self.account!r}")
        if self.account is not None and (not self.account or self.account.startswith("+")):
            raise GuardConfigError("account", "must be a non-empty id, never a phone number")
        s(self, "deadline", _finite("deadline", self.deadline, strict=True, allow_none=True))
        s(self, "attempt_timeout",
          _finite("attempt_timeout", self.attempt_timeout, strict=True, allow_none=True))
        s(self, "max_flood_wait", _finite("max_flood_wait", self.max_flood_wait))
        for name in ("rate_limits", "send_limits", "peer_limits_private", "peer_limits_group",
                     "reconnect_pacing"):
            s(self, name, _windows(name, getattr(self, name)))
        if not isinstance(self.method_limits, Mapping):
            raise GuardConfigError("method_limits", "must be a mapping of method -> windows")
        ml: dict[str, Windows] = {}
        for method, windows in self.method_limits.items():
            if not isinstance(method, str) or not method:
                raise GuardConfigError("method_limits", f"bad method name {method!r}")
            if method not in known_method_names():
                raise GuardConfigError(
                    "method_limits",
                    f"unknown TL method {method!r}: use the TL name, e.g. 'messages.getHistory'")
            ml[method] = _windows(f"method_limits[{method!r}]", windows)
        s(self, "method_limits", MappingProxyType(ml))
        s(self, "max_peer_keys", _int("max_peer_keys", self.max_peer_keys, minimum=1))
        s(self, "breaker_failure_threshold",
          _int("breaker_failure_threshold", self.breaker_failure_threshold, minimum=1))
        s(self, "breaker_open_seconds",
          _finite("breaker_open_seconds", self.breaker_open_seconds, strict=True))
        s(self, "breaker_open_growth",
          _finite("breaker_open_growth", self.breaker_open_growth, minimum=1.0))
        s(self, "breaker_max_open_seconds",
          _finite("breaker_max_open_seconds", self.breaker_max_open_seconds, strict=True))
        if self.breaker_max_open_seconds < self.breaker_open_seconds:
            raise GuardConfigError("breaker_max_open_seconds",
                                   "must be >= breaker_open_seconds")
        s(self, "retry_max_attempts", _int("retry_max_attempts", self.retry_max_attempts,
                                           minimum=1))
        s(self, "retry_base_delay", _finite("retry_base_delay", self.retry_base_delay))
        s(self, "retry_max_delay", _finite("retry_max_delay", self.retry_max_delay))
        if self.retry_max_delay < self.retry_base_delay:
            raise GuardConfigError("retry_max_delay", "must be >= retry_base_delay")
        s(self, "flood_max_retries", _int("flood_max_retries", self.flood_max_retries,
                                          minimum=0))
        s(self, "flood_widen_chats", _int("flood_widen_chats", self.flood_widen_chats,
                                          minimum=1))
        s(self, "flood_widen_window",
          _finite("flood_widen_window", self.flood_widen_window, strict=True))
        s(self, "flood_narrow_after", _int("flood_narrow_after", self.flood_narrow_after,
                                           minimum=1))
        if self.transfer_concurrency is not None:
            s(self, "transfer_concurrency",
              _int("transfer_concurrency", self.transfer_concurrency, minimum=1))
        if self.transfer_start_parts is not None:
            s(self, "transfer_start_parts",
              _int("transfer_start_parts", self.transfer_start_parts, minimum=1))
        for name in ("adaptive_pacing", "observe_only", "log_peer_ids"):
            if not isinstance(getattr(self, name), bool):
                raise GuardConfigError(name, f"must be a bool, got {getattr(self, name)!r}")
        s(self, "rate_margin", _finite("rate_margin", self.rate_margin))
        s(self, "pace_relax", _finite("pace_relax", self.pace_relax, strict=True))
        s(self, "pace_recover", _finite("pace_recover", self.pace_recover, strict=True))
        st = self.storage
        if isinstance(st, str):
            scheme = st.split("://", 1)[0].lower() if "://" in st else None
            if st != "memory" and scheme not in _REDIS_SCHEMES:
                raise GuardConfigError(
                    "storage", "must be None, 'memory', a Redis URL ('redis://...', "
                    "'rediss://...', 'unix://...', 'redis+cluster://...', "
                    f"'rediss+cluster://...') or a GuardStorage, got {st!r}")
        elif (st is not None and not hasattr(st, "is_local")
              and type(st).__module__.split(".")[0] != "redis"):  # a redis.asyncio client
            raise GuardConfigError("storage", f"{st!r} does not implement GuardStorage")
        if self.storage_fallback not in ("local", "fail"):
            raise GuardConfigError("storage_fallback", "must be 'local' or 'fail'")
        s(self, "storage_timeout",
          _finite("storage_timeout", self.storage_timeout, strict=True))
        self._check_durable()
        s(self, "reconnect_backoff_base",
          _finite("reconnect_backoff_base", self.reconnect_backoff_base, strict=True))
        s(self, "reconnect_backoff_cap",
          _finite("reconnect_backoff_cap", self.reconnect_backoff_cap, strict=True))
        if self.reconnect_backoff_cap < self.reconnect_backoff_base:
            raise GuardConfigError("reconnect_backoff_cap", "must be >= reconnect_backoff_base")
        jitter = _finite("reconnect_jitter", self.reconnect_jitter)
        assert jitter is not None
        if jitter > 1.0:
            raise GuardConfigError("reconnect_jitter", f"must be in [0, 1], got {jitter!r}")
        s(self, "reconnect_jitter", jitter)
        s(self, "max_reconnect_seconds",
          _finite("max_reconnect_seconds", self.max_reconnect_seconds, strict=True,
                  allow_none=True))
        s(self, "connect_timeout",
          _finite("connect_timeout", self.connect_timeout, strict=True, allow_none=True))
        cbs = self.on_event
        if cbs is None:
            cbs = ()
        elif callable(cbs):
            cbs = (cbs,)
        elif isinstance(cbs, Iterable):
            cbs = tuple(cbs)
        else:
            raise GuardConfigError("on_event", "must be a callable or a sequence of callables")
        for cb in cbs:
            if not callable(cb):
                raise GuardConfigError("on_event", f"{cb!r} is not callable")
        s(self, "on_event", cbs)
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int)):
            raise GuardConfigError("seed", f"must be an int or None, got {self.seed!r}")
        if self.rng is not None and not isinstance(self.rng, random.Random):
            raise GuardConfigError("rng", "must be a random.Random or None")
        if not isinstance(self.liveness, bool):
            raise GuardConfigError("liveness", f"must be a bool, got {self.liveness!r}")
        s(self, "liveness_timeout",
          _finite("liveness_timeout", self.liveness_timeout, strict=True, allow_none=True))
        s(self, "keepalive_interval",
          _finite("keepalive_interval", self.keepalive_interval, strict=True, allow_none=True))

    def _check_durable(self) -> None:
        """Validate ``durable_storage`` / ``storage_path`` / ``durable_fallback`` (the file's
        content is checked when a client opens it)."""
        if not isinstance(self.durable_storage, bool):
            raise GuardConfigError("durable_storage",
                                   f"must be a bool, got {self.durable_storage!r}")
        if self.durable_fallback not in ("memory", "fail"):
            raise GuardConfigError("durable_fallback", "must be 'memory' or 'fail'")
        path = self.storage_path
        if path is None:
            return
        if not isinstance(path, (str, os.PathLike)):
            raise GuardConfigError("storage_path", f"must be a file path, got {path!r}")
        text = os.fspath(path)
        if not isinstance(text, str) or not text or text == ":memory:" or "\0" in text:
            raise GuardConfigError("storage_path", f"must be a file path, got {path!r}")
        if not self.durable_storage:
            raise GuardConfigError("storage_path", "given with durable_storage=False")
        if self.storage is not None:
            raise GuardConfigError("storage_path", "applies to local storage only "
                                   "(storage=None), not with storage=...")
        if os.path.isdir(text):
            raise GuardConfigError("storage_path", f"{text!r} is a directory")
        parent = os.path.dirname(os.path.abspath(text))
        if not os.path.isdir(parent):
            raise GuardConfigError("storage_path", f"directory {parent!r} does not exist")
        object.__setattr__(self, "storage_path", text)

    # ----------------------------------------------------------------- presets
    @classmethod
    def for_user(cls, **overrides: Any) -> GuardConfig:
        """Preset for user accounts: 60 s deadline per call (TDLib NetQueryDelayer)."""
        return cls._preset({"deadline": 60.0}, overrides)

    @classmethod
    def for_bot(cls, **overrides: Any) -> GuardConfig:
        """Preset for bots: 8 s deadline per call (TDLib NetQueryDelayer), 8 s max flood wait."""
        return cls._preset({"deadline": 8.0, "max_flood_wait": 8.0}, overrides)

    @classmethod
    def _preset(cls, base: dict[str, Any], overrides: dict[str, Any]) -> GuardConfig:
        names = {f.name for f in fields(cls)}
        for key in overrides:
            if key not in names:
                raise GuardConfigError(key, "unknown guard setting")
        return cls(**{**base, **overrides})

    def replace(self, **changes: Any) -> GuardConfig:
        """A copy with ``changes`` applied (validated again)."""
        names = {f.name for f in fields(self)}
        for key in changes:
            if key not in names:
                raise GuardConfigError(key, "unknown guard setting")
        return replace(self, **changes)

    def make_rng(self) -> random.Random:
        """The RNG used for jitter: ``rng`` if given, else ``random.Random(seed)``; without a
        seed, one process-wide RNG (a ``random.Random`` holds 2.5 KiB of state per client)."""
        if self.rng is not None:
            return self.rng
        return random.Random(self.seed) if self.seed is not None else _SHARED_RNG

    @staticmethod
    def field_names() -> frozenset[str]:
        """Names of every setting (the client accepts them as keyword arguments)."""
        return frozenset(f.name for f in fields(GuardConfig))


__all__ = [
    "COMMUNITY_BOT_LIMITS",
    "COMMUNITY_USER_LIMITS",
    "MAX_FLOOD_WAIT_CLAMP",
    "TDLIB_RECONNECT_PACING",
    "EventCallback",
    "GuardConfig",
    "Window",
    "Windows",
]
