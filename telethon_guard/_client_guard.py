"""The guard of a client: :class:`ClientGuard` (what ``client.guard`` is) and
:func:`build_config` (the client's guard keywords to a :class:`GuardConfig`)."""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .clock import MonotonicClock
from .errors import GuardConfigError
from .events import ReconnectSucceeded
from .health import unavailable_reason, wait_available
from .reconnect import ReconnectPacer

if TYPE_CHECKING:
    from .config import GuardConfig
    from .pipeline import Pipeline

__all__ = ["ClientGuard", "GuardState", "build_config"]


def _config_fields() -> frozenset[str]:
    from .config import GuardConfig

    return frozenset(f.name for f in dataclasses.fields(GuardConfig))


def build_config(
    guard_config: GuardConfig | None = None,
    preset: str | None = None,
    **fields: Any,
) -> GuardConfig:
    """Make the :class:`GuardConfig` from the client's guard keywords.

    Exactly one style: ``guard_config=GuardConfig(...)``, or ``preset="user"|"bot"`` plus
    optional field overrides, or field keywords alone (defaults for the rest). Raises
    :class:`~telethon_guard.errors.GuardConfigError` for invalid values or mixed styles and
    ``TypeError`` for a keyword that is no guard setting.
    """
    from .config import GuardConfig

    known = _config_fields()
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}: "
            "neither a Telethon nor a telethon-guard setting"
        )
    if guard_config is not None:
        if not isinstance(guard_config, GuardConfig):
            raise GuardConfigError("guard_config", "must be a telethon_guard.GuardConfig")
        if preset is not None or fields:
            raise GuardConfigError(
                "guard_config", "pass either guard_config=... or preset/field keywords, not both"
            )
        return guard_config
    if preset is not None:
        if preset == "user":
            base = GuardConfig.for_user()
        elif preset == "bot":
            base = GuardConfig.for_bot()
        else:
            raise GuardConfigError("preset", f"must be 'user' or 'bot', not {preset!r}")
        return dataclasses.replace(base, **fields) if fields else base
    if not fields:
        return _default_config()
    return GuardConfig(**fields)


_DEFAULT: list[GuardConfig] = []


def _default_config() -> GuardConfig:
    """The one ``GuardConfig()`` shared by every client built without guard keywords (it is
    frozen and holds no per-client state: a config per client would cost ~0.7 KiB each)."""
    if not _DEFAULT:
        from .config import GuardConfig

        _DEFAULT.append(GuardConfig())
    return _DEFAULT[0]


class ClientGuard:
    """What ``client.guard`` exposes: ``config`` (:class:`GuardConfig`), ``pipeline``
    (:class:`Pipeline`), ``events`` (the pipeline's event hub), ``stats()``, ``available``,
    ``unavailable_reason``, ``wait_available()`` and ``now()`` (the guard clock). One object
    may be shared by a client and the CDN clients Telethon creates from it.

    Not state of its own: a facade over the pipeline (which owns the flood ledger, limiter
    and breaker), the stats collector and the per-DC reconnect pacers. Formerly
    ``GuardState`` (still importable under that name)."""

    __slots__ = ("__weakref__", "_client_ref", "_now", "_pacers", "collector", "config",
                 "events", "pipeline")

    def __init__(self, config: GuardConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.events: Any = getattr(pipeline, "events", None)
        self._now: Callable[[], float] | None = None
        self._pacers: dict[int, ReconnectPacer] = {}
        # Observability (telethon_guard.stats / .health): an event collector for stats() and a
        # weak reference to the main client for ``available``.
        from .stats import StatsCollector

        self.collector = StatsCollector()
        subscribe = getattr(self.events, "subscribe", None)
        if callable(subscribe):
            try:
                subscribe(self.collector, request_events=False)
            except TypeError:  # an event hub without the keyword
                subscribe(self.collector)
            # A reconnect the server answered ends the outage an OPEN breaker of that
            # (account, DC) was opened on: it goes HALF_OPEN at once (breaker.py).
            try:
                subscribe(self._on_reconnected, request_events=False)
            except TypeError:
                subscribe(self._on_reconnected)
        self._client_ref: weakref.ref[Any] | None = None

    def _on_reconnected(self, event: Any) -> Awaitable[None] | None:
        """Event callback: on :class:`~telethon_guard.events.ReconnectSucceeded`, tell the
        pipeline's breaker (:meth:`CircuitBreaker.reconnected`); an awaitable it returns
        (shared storage) is run by the event bus."""
        if not isinstance(event, ReconnectSucceeded):
            return None
        breaker = getattr(self.pipeline, "breaker", None)
        if breaker is None:
            return None
        return breaker.reconnected(event.account, event.dc_id)

    @classmethod
    def create(
        cls,
        guard_config: GuardConfig | None = None,
        preset: str | None = None,
        **fields: Any,
    ) -> ClientGuard:
        from .pipeline import Pipeline

        extras: dict[str, Any] = {}
        known = _config_fields()
        for name in ("storage", "events", "clock"):
            if name in fields and name not in known:
                extras[name] = fields.pop(name)
        config = build_config(guard_config, preset, **fields)
        return cls(config, Pipeline(config, **extras))

    def pacer(self, dc_id: int | None) -> ReconnectPacer:
        """The reconnect pacer shared by this guard's senders to DC ``dc_id`` (``None``: the
        main sender), built from ``config.reconnect_pacing``, ``reconnect_backoff_base``,
        ``reconnect_backoff_cap`` and ``reconnect_jitter``, drawing its jitter from the
        config's ``rng`` / ``seed`` (``GuardConfig.make_rng``) and timing on the guard clock
        (``pipeline.clock``)."""
        key = dc_id if dc_id is not None else 0
        pacer = self._pacers.get(key)
        if pacer is None:
            cfg = self.config
            clock = self.pipeline.clock
            backoff: dict[str, Any] = {
                "backoff_base": cfg.reconnect_backoff_base,
                "backoff_cap": cfg.reconnect_backoff_cap,
                "jitter": cfg.reconnect_jitter,
                "rng": cfg.make_rng(),
                "clock": clock.now,
                "sleep": clock.sleep,
            }
            windows = cfg.reconnect_pacing
            pacer = (ReconnectPacer(windows, **backoff) if windows
                     else ReconnectPacer(**backoff))
            self._pacers[key] = pacer
        return pacer

    def now(self) -> float:
        """The guard clock (monotonic seconds) the pipeline measures deadlines against."""
        now = self._now
        if now is not None:
            return now()
        clock = getattr(self.pipeline, "clock", None)
        if getattr(type(clock), "now", None) is MonotonicClock.now:  # common case: remembered
            self._now = time.monotonic
            return time.monotonic()
        if clock is None:
            return time.monotonic()
        now = getattr(clock, "now", None)
        if callable(now):
            return float(now())
        if callable(clock):
            return float(clock())
        return time.monotonic()

    def stats(self) -> Any:
        """A :class:`~telethon_guard.stats.GuardStats` snapshot (counters by method and
        outcome, breaker states, blocked methods with seconds left, limiter queue, reconnects,
        stray futures...); ``stats["calls"]`` and ``stats.as_dict()`` work too."""
        from .stats import snapshot

        return snapshot(self.pipeline, self.collector, self.available)

    def main_client(self) -> Any:
        """The first client this guard was attached to (``None`` if gone)."""
        return self._client_ref() if self._client_ref is not None else None

    def bind_main_client(self, client: Any) -> None:
        """Remember ``client`` (weakly) as the main client unless one is bound and alive: the
        first client is the main one, the CDN clients built from it follow."""
        if self.main_client() is None:
            self._client_ref = weakref.ref(client)

    @property
    def available(self) -> bool:
        """``False`` while the main DC's breaker is OPEN (time left) or HALF_OPEN with its probe
        out (the probe's lease has time left), the main
        sender is reconnecting or gave up, or the client is disconnected; see
        :func:`telethon_guard.health.unavailable_reason`. Synchronous, no I/O."""
        return unavailable_reason(self) is None

    @property
    def unavailable_reason(self) -> str | None:
        """Why :attr:`available` is ``False`` (``None`` when available)."""
        return unavailable_reason(self)

    async def wait_available(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for :attr:`available`; ``True`` if it became
        available, ``False`` on timeout. Raises ``ValueError`` for a bad ``timeout``."""
        return await wait_available(self, timeout)

    def __repr__(self) -> str:
        return f"<ClientGuard config={self.config!r}>"


GuardState = ClientGuard
"""The former name of :class:`ClientGuard` (kept importable)."""
