"""OpenTelemetry exporter: guard events -> ``opentelemetry-api`` instruments.

Usage::

    from telethon_guard.metrics import OpenTelemetryMetrics

    metrics = OpenTelemetryMetrics()               # the global MeterProvider
    client = GuardedTelegramClient(session, api_id, api_hash, on_event=[metrics])

Only the API is needed; without an SDK ``MeterProvider`` configured the instruments are
no-ops. Instruments (meter ``telethon_guard``; a Prometheus exporter of the SDK turns these
into the same names as :mod:`telethon_guard.metrics.prometheus`, the unit becoming the
``_seconds`` suffix and counters getting ``_total``):

==========================================  ===================  ====  =========================
name                                        kind                 unit  attributes
==========================================  ===================  ====  =========================
``telethon_guard_requests``                 Counter              1     method, outcome
``telethon_guard_request_duration``         Histogram            s     method
``telethon_guard_flood_wait``               Histogram            s     method
``telethon_guard_flood_blocked``            Counter              1     method
``telethon_guard_retries``                  Counter              1     method
``telethon_guard_rate_limited``             Counter              s
``telethon_guard_breaker_state``            ObservableGauge      1     key (0/1/2)
``telethon_guard_transport_errors``         Counter              1     code
``telethon_guard_reconnect_attempts``       Counter              1
``telethon_guard_reconnects``               Counter              1
``telethon_guard_reconnect_give_ups``       Counter              1
``telethon_guard_stray_futures``            Counter              1
``telethon_guard_deadline_exceeded``        Counter              1     stage
``telethon_guard_loop_lag``                 ObservableGauge      s     (with a monitor)
==========================================  ===================  ====  =========================

Attributes are bounded exactly as for Prometheus (never peer ids).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..events import (
    BreakerStateChanged,
    DeadlineExceededEvent,
    FloodBlocked,
    FloodWaitStarted,
    GuardEvent,
    ReconnectAttempt,
    ReconnectGaveUp,
    ReconnectSucceeded,
    RequestFinished,
    RequestLimited,
    RetryScheduled,
    StrayFutureRetrieved,
    TransportErrorEvent,
)
from ._common import (
    BREAKER_STATE_VALUES,
    FLOOD_WAIT_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    MethodLabels,
    attach_to,
    recent_lag,
)


def _otel_metrics() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as e:  # pragma: no cover - the extra is installed in dev
        raise ImportError(
            "OpenTelemetryMetrics needs opentelemetry-api: pip install 'telethon-guard[metrics]'"
        ) from e
    return metrics


def _histogram(meter: Any, name: str, unit: str, description: str,
               buckets: tuple[float, ...]) -> Any:
    try:  # bucket advice: opentelemetry-api >= 1.23
        return meter.create_histogram(name, unit=unit, description=description,
                                      explicit_bucket_boundaries_advisory=list(buckets))
    except TypeError:  # pragma: no cover - older API
        return meter.create_histogram(name, unit=unit, description=description)


class OpenTelemetryMetrics:
    """An ``on_event`` callback recording OpenTelemetry metrics (see the module docstring).

    ``meter_provider``: an ``opentelemetry.metrics.MeterProvider`` (``None``: the global one,
    ``opentelemetry.metrics.get_meter_provider()``). ``loop_lag``: a
    :class:`~telethon_guard.loop.LoopLagMonitor` observed by the ``telethon_guard_loop_lag``
    gauge (recent max, seconds). Raises ``ImportError`` without opentelemetry-api.
    """

    def __init__(self, meter_provider: Any = None, *, loop_lag: Any = None) -> None:
        otel = _otel_metrics()
        provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
        from .. import __version__ as version

        meter = provider.get_meter("telethon_guard", version)
        self._otel = otel
        self._methods = MethodLabels()
        self._breakers: dict[str, int] = {}
        self._lag_monitor = loop_lag
        self.requests = meter.create_counter(
            "telethon_guard_requests", unit="1",
            description="Telegram calls that went through the guard, by outcome.")
        self.request_duration = _histogram(
            meter, "telethon_guard_request_duration", "s",
            "Time a call spent in the guard (waits, retries and network).",
            REQUEST_DURATION_BUCKETS)
        self.flood_wait = _histogram(
            meter, "telethon_guard_flood_wait", "s",
            "FLOOD_WAIT / SLOWMODE_WAIT seconds Telegram announced (waited or refused).",
            FLOOD_WAIT_BUCKETS)
        self.flood_blocked = meter.create_counter(
            "telethon_guard_flood_blocked", unit="1",
            description="Calls refused at once because a flood wait did not fit their budget.")
        self.retries = meter.create_counter(
            "telethon_guard_retries", unit="1",
            description="Retries scheduled after transient errors.")
        self.rate_limited = meter.create_counter(
            "telethon_guard_rate_limited", unit="s",
            description="Seconds calls were delayed by the local rate limiter.")
        self.transport_errors = meter.create_counter(
            "telethon_guard_transport_errors", unit="1",
            description="Transport errors by code (-429, -404...).")
        self.reconnect_attempts = meter.create_counter(
            "telethon_guard_reconnect_attempts", unit="1",
            description="Paced reconnect attempts.")
        self.reconnects = meter.create_counter(
            "telethon_guard_reconnects", unit="1",
            description="Reconnects that succeeded (the server answered).")
        self.reconnect_give_ups = meter.create_counter(
            "telethon_guard_reconnect_give_ups", unit="1",
            description="Outages longer than max_reconnect_seconds: pending calls failed.")
        self.stray_futures = meter.create_counter(
            "telethon_guard_stray_futures", unit="1",
            description="Exceptions of Telethon futures nobody awaited, retrieved by the guard.")
        self.deadline_exceeded = meter.create_counter(
            "telethon_guard_deadline_exceeded", unit="1",
            description="Calls that ran out of their deadline.")
        meter.create_observable_gauge(
            "telethon_guard_breaker_state", callbacks=[self._observe_breakers], unit="1",
            description="Circuit breaker state per account and DC: 0 closed, 1 half-open, "
                        "2 open.")
        meter.create_observable_gauge(
            "telethon_guard_loop_lag", callbacks=[self._observe_lag], unit="s",
            description="Event-loop lag: max of the last 100 samples of the monitor.")

    def watch_loop_lag(self, monitor: Any) -> None:
        """Observe ``monitor`` (a ``LoopLagMonitor``) in the loop-lag gauge."""
        self._lag_monitor = monitor

    def attach(self, client: Any) -> Any:
        """Subscribe to ``client``'s (or ``client.guard``'s) events; returns unsubscribe."""
        return attach_to(client, self)

    def _observe_breakers(self, options: Any) -> Iterable[Any]:
        obs = self._otel.Observation
        return [obs(v, {"key": k}) for k, v in self._breakers.items()]

    def _observe_lag(self, options: Any) -> Iterable[Any]:
        if self._lag_monitor is None:
            return []
        return [self._otel.Observation(recent_lag(self._lag_monitor))]

    def __call__(self, event: GuardEvent) -> None:
        if isinstance(event, RequestFinished):
            method = self._methods(event.method)
            self.requests.add(1, {"method": method, "outcome": event.outcome})
            self.request_duration.record(event.duration, {"method": method})
        elif isinstance(event, FloodWaitStarted):
            if event.from_server:
                self.flood_wait.record(event.seconds, {"method": self._methods(event.method)})
        elif isinstance(event, FloodBlocked):
            attrs = {"method": self._methods(event.method)}
            self.flood_blocked.add(1, attrs)
            if event.from_server:
                self.flood_wait.record(event.seconds, attrs)
        elif isinstance(event, RetryScheduled):
            self.retries.add(1, {"method": self._methods(event.method)})
        elif isinstance(event, RequestLimited):
            self.rate_limited.add(max(0.0, event.waited))
        elif isinstance(event, BreakerStateChanged):
            if event.key in self._breakers or len(self._breakers) < 1024:
                self._breakers[event.key] = BREAKER_STATE_VALUES.get(event.new, 0)
        elif isinstance(event, TransportErrorEvent):
            self.transport_errors.add(1, {"code": str(event.code)})
        elif isinstance(event, ReconnectAttempt):
            self.reconnect_attempts.add(1)
        elif isinstance(event, ReconnectSucceeded):
            self.reconnects.add(1)
        elif isinstance(event, ReconnectGaveUp):
            self.reconnect_give_ups.add(1)
        elif isinstance(event, StrayFutureRetrieved):
            self.stray_futures.add(1)
        elif isinstance(event, DeadlineExceededEvent):
            self.deadline_exceeded.add(1, {"stage": event.stage or "unknown"})


__all__ = ["OpenTelemetryMetrics"]
