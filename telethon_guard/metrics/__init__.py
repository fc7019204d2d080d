"""Metric exporters for the guard's events (optional extra ``telethon-guard[metrics]``).

* :class:`~telethon_guard.metrics.prometheus.PrometheusMetrics` (``prometheus-client``)
* :class:`~telethon_guard.metrics.otel.OpenTelemetryMetrics` (``opentelemetry-api``)

Both are ``on_event`` callbacks: pass them to the client
(``GuardedTelegramClient(..., on_event=[PrometheusMetrics()])``) or attach them later
(``metrics.attach(client)``). Nothing is exported unless one is passed: installing the extra
alone changes nothing. The modules import their library lazily, so
``import telethon_guard.metrics`` works without the extra; constructing an exporter without it
raises ``ImportError`` naming the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import BREAKER_STATE_VALUES, FLOOD_WAIT_BUCKETS, REQUEST_DURATION_BUCKETS

if TYPE_CHECKING:
    from .otel import OpenTelemetryMetrics
    from .prometheus import PrometheusMetrics


def __getattr__(name: str) -> Any:
    if name == "PrometheusMetrics":
        from .prometheus import PrometheusMetrics

        return PrometheusMetrics
    if name == "OpenTelemetryMetrics":
        from .otel import OpenTelemetryMetrics

        return OpenTelemetryMetrics
    raise AttributeError(name)


__all__ = [
    "BREAKER_STATE_VALUES",
    "FLOOD_WAIT_BUCKETS",
    "REQUEST_DURATION_BUCKETS",
    "OpenTelemetryMetrics",
    "PrometheusMetrics",
]
