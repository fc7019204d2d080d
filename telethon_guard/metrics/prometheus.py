"""Prometheus exporter: guard events -> ``prometheus_client`` metrics.

Usage (one exporter per registry; share it between clients)::

    from prometheus_client import start_http_server
    from telethon_guard.metrics import PrometheusMetrics

    metrics = PrometheusMetrics()                  # default registry
    client = GuardedTelegramClient(session, api_id, api_hash, on_event=[metrics])
    start_http_server(9100)

Metrics (names and units after Prometheus conventions; every label is bounded: TL method
names, outcome categories, transport error codes, deadline stages and breaker keys
``acct:<account>/dc:<dc>`` (one per account and DC); never peer ids):

* ``telethon_guard_requests_total{method,outcome}`` (counter): calls that ended, by outcome
  (:data:`~telethon_guard.events.OUTCOMES`: ok, flood_wait, circuit_open, deadline, ...)
* ``telethon_guard_request_duration_seconds{method}`` (histogram): time in the guard,
  waits and retries included
* ``telethon_guard_flood_wait_seconds{method}`` (histogram): FLOOD_WAIT / SLOWMODE_WAIT
  seconds Telegram announced, whether waited out or refused
* ``telethon_guard_flood_blocked_total{method}`` (counter): calls refused at once (the wait
  did not fit their budget)
* ``telethon_guard_retries_total{method}`` (counter): retries scheduled
* ``telethon_guard_rate_limited_seconds_total`` (counter): time the local limiter delayed calls
* ``telethon_guard_breaker_state{key}`` (gauge): 0 closed, 1 half-open, 2 open
* ``telethon_guard_transport_errors_total{code}`` (counter): transport errors (``-429``...)
* ``telethon_guard_reconnect_attempts_total`` / ``telethon_guard_reconnects_total``
  (counters): paced reconnect attempts / reconnects that succeeded
* ``telethon_guard_reconnect_give_ups_total`` (counter): outages longer than
  ``max_reconnect_seconds`` (pending calls failed, new calls fail fast until reconnected)
* ``telethon_guard_stray_futures_total`` (counter): stray exceptions retrieved
* ``telethon_guard_deadline_exceeded_total{stage}`` (counter): deadline hits by stage
* ``telethon_guard_loop_lag_seconds`` (gauge): event-loop lag (with a monitor)
"""

from __future__ import annotations

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


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as e:  # pragma: no cover - the extra is installed in dev
        raise ImportError(
            "PrometheusMetrics needs prometheus-client: pip install 'telethon-guard[metrics]'"
        ) from e
    return prometheus_client


class PrometheusMetrics:
    """An ``on_event`` callback that updates Prometheus metrics (see the module docstring).

    ``registry``: a ``prometheus_client.CollectorRegistry`` (``None``: the default
    ``prometheus_client.REGISTRY``). Registering two exporters on one registry raises
    ``ValueError`` (duplicate metric names): create one per registry and pass it to every
    client. ``loop_lag``: a :class:`~telethon_guard.loop.LoopLagMonitor` whose recent max lag
    (seconds, last 100 samples) is exported as ``telethon_guard_loop_lag_seconds`` at scrape
    time (or call :meth:`watch_loop_lag` later). Raises ``ImportError`` without
    prometheus-client.

    Calling it with an event is cheap (a dict lookup and a counter increment) and never raises
    for a well-formed event.
    """

    def __init__(self, registry: Any = None, *, loop_lag: Any = None) -> None:
        pc = _prometheus()
        self.registry = registry if registry is not None else pc.REGISTRY
        reg = self.registry
        self._methods = MethodLabels()
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.requests = pc.Counter(
            "telethon_guard_requests", "Telegram calls that went through the guard, by outcome.",
            ["method", "outcome"], registry=reg)
        self.request_duration = pc.Histogram(
            "telethon_guard_request_duration_seconds",
            "Time a call spent in the guard (waits, retries and network), seconds.",
            ["method"], buckets=REQUEST_DURATION_BUCKETS, registry=reg)
        self.flood_wait = pc.Histogram(
            "telethon_guard_flood_wait_seconds",
            "FLOOD_WAIT / SLOWMODE_WAIT seconds Telegram announced (waited or refused).",
            ["method"], buckets=FLOOD_WAIT_BUCKETS, registry=reg)
        self.flood_blocked = pc.Counter(
            "telethon_guard_flood_blocked",
            "Calls refused at once because a flood wait did not fit their budget.",
            ["method"], registry=reg)
        self.retries = pc.Counter(
            "telethon_guard_retries", "Retries scheduled after transient errors.",
            ["method"], registry=reg)
        self.rate_limited = pc.Counter(
            "telethon_guard_rate_limited_seconds",
            "Seconds calls were delayed by the local rate limiter.", registry=reg)
        self.breaker_state = pc.Gauge(
            "telethon_guard_breaker_state",
            "Circuit breaker state per account and DC: 0 closed, 1 half-open, 2 open.",
            ["key"], registry=reg)
        self.transport_errors = pc.Counter(
            "telethon_guard_transport_errors", "Transport errors by code (-429, -404...).",
            ["code"], registry=reg)
        self.reconnect_attempts = pc.Counter(
            "telethon_guard_reconnect_attempts", "Paced reconnect attempts.", registry=reg)
        self.reconnects = pc.Counter(
            "telethon_guard_reconnects", "Reconnects that succeeded (the server answered).",
            registry=reg)
        self.reconnect_give_ups = pc.Counter(
            "telethon_guard_reconnect_give_ups",
            "Outages longer than max_reconnect_seconds: pending calls failed, new ones fail fast.",
            registry=reg)
        self.stray_futures = pc.Counter(
            "telethon_guard_stray_futures",
            "Exceptions of Telethon futures nobody awaited, retrieved by the guard.",
            registry=reg)
        self.deadline_exceeded = pc.Counter(
            "telethon_guard_deadline_exceeded", "Calls that ran out of their deadline.",
            ["stage"], registry=reg)
        self.loop_lag = pc.Gauge(
            "telethon_guard_loop_lag_seconds",
            "Event-loop lag: max of the last 100 samples of the loop-lag monitor, seconds.",
            registry=reg)
        if loop_lag is not None:
            self.watch_loop_lag(loop_lag)

    def watch_loop_lag(self, monitor: Any) -> None:
        """Export ``monitor``'s (a ``LoopLagMonitor``) recent lag as the loop-lag gauge."""
        self.loop_lag.set_function(lambda: recent_lag(monitor))

    def attach(self, client: Any) -> Any:
        """Subscribe to ``client``'s (or ``client.guard``'s) events; returns unsubscribe."""
        return attach_to(client, self)

    def __call__(self, event: GuardEvent) -> None:
        if type(event) is RequestFinished:  # the per-call path: cached label children
            key = (event.method, event.outcome)
            children = self._children.get(key)
            if children is None:
                method = self._methods(event.method)
                children = (self.requests.labels(method, event.outcome),
                            self.request_duration.labels(method))
                if len(self._children) < 4096:
                    self._children[key] = children
            children[0].inc()
            children[1].observe(event.duration)
        elif isinstance(event, FloodWaitStarted):
            if event.from_server:
                self.flood_wait.labels(self._methods(event.method)).observe(event.seconds)
        elif isinstance(event, FloodBlocked):
            method = self._methods(event.method)
            self.flood_blocked.labels(method).inc()
            if event.from_server:
                self.flood_wait.labels(method).observe(event.seconds)
        elif isinstance(event, RetryScheduled):
            self.retries.labels(self._methods(event.method)).inc()
        elif isinstance(event, RequestLimited):
            self.rate_limited.inc(max(0.0, event.waited))
        elif isinstance(event, BreakerStateChanged):
            self.breaker_state.labels(event.key).set(BREAKER_STATE_VALUES.get(event.new, 0))
        elif isinstance(event, TransportErrorEvent):
            self.transport_errors.labels(str(event.code)).inc()
        elif isinstance(event, ReconnectAttempt):
            self.reconnect_attempts.inc()
        elif isinstance(event, ReconnectSucceeded):
            self.reconnects.inc()
        elif isinstance(event, ReconnectGaveUp):
            self.reconnect_give_ups.inc()
        elif isinstance(event, StrayFutureRetrieved):
            self.stray_futures.inc()
        elif isinstance(event, DeadlineExceededEvent):
            self.deadline_exceeded.labels(event.stage or "unknown").inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format (``generate_latest``)."""
        data: bytes = _prometheus().generate_latest(self.registry)
        return data


__all__ = ["PrometheusMetrics"]
