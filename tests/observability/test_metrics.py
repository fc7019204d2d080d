"""Prometheus and OpenTelemetry exporters: names, units, label bounds, and a real client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from telethon_guard import GuardedTelegramClient
from telethon_guard.errors import FloodWaitBlocked
from telethon_guard.events import (
    OUTCOMES,
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
    request_outcome,
)
from telethon_guard.loop import LoopLagMonitor
from telethon_guard.metrics import OpenTelemetryMetrics, PrometheusMetrics
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import ErrorOnCalls

KEY = "acct:key:00ff/dc:2"

STORY: list[GuardEvent] = [
    RequestFinished("messages.getHistory", "ok", 0.02, "", 1),
    RequestFinished("messages.getHistory", "ok", 0.03, "", 1),
    RequestFinished("messages.getHistory", "flood_wait", 0.001, "FloodWaitBlocked", 1),
    FloodWaitStarted("messages.getHistory", "acct:1/method:messages.getHistory", 7.0, True),
    FloodWaitStarted("messages.getHistory", "acct:1/method:messages.getHistory", 6.5, False),
    FloodBlocked("contacts.resolveUsername", "acct:1/method:x", 48038.0, True),
    RetryScheduled("RpcCallFailError", 1, 0.2, "users.getUsers"),
    RequestLimited("acct:1/peer#abcdef", 0.25, "messages.sendMessage"),
    TransportErrorEvent(-429, "full", 2),
    TransportErrorEvent(-429, "full", 2),
    TransportErrorEvent(-404, "raw", 2),
    ReconnectAttempt(2, 1, 1.0),
    ReconnectSucceeded(2, 1, 1.5),
    ReconnectGaveUp(2, 60.0, 3, -429),
    StrayFutureRetrieved("loop_handler:future", "InvalidBufferError"),
    DeadlineExceededEvent("messages.getHistory", 5.0, "flood"),
    BreakerStateChanged(KEY, "CLOSED", "OPEN", 5.0),
]


def test_request_outcome_is_a_small_fixed_vocabulary() -> None:
    from telethon import errors as tl_errors

    from telethon_guard import errors as g

    cases: list[tuple[BaseException | None, str]] = [
        (None, "ok"),
        (g.FloodWaitBlocked(None, 30.0, method="m", scope="s", from_server=True),
         "flood_wait"),
        (g.CircuitOpenError("k", 1.0), "circuit_open"),
        (g.DeadlineExceeded("m", 1.0), "deadline"),
        (g.TransportFloodError(-429, None), "transport_flood"),
        (g.GuardConnectionError("x"), "connection"),
        (g.AuthKeyInvalidError(2), "auth_key"),
        (g.AlreadyDelivered(None, 1, 2), "delivered"),
        (tl_errors.RpcCallFailError(None), "server_error"),
        (tl_errors.ChannelPrivateError(None), "rpc_error"),
        (asyncio.CancelledError(), "cancelled"),
        (KeyError("x"), "error"),
    ]
    for exc, want in cases:
        assert request_outcome(exc) == want, exc
        assert want in OUTCOMES


def test_prometheus_names_units_and_values() -> None:
    reg = CollectorRegistry()
    m = PrometheusMetrics(reg)
    for ev in STORY:
        m(ev)
    v = reg.get_sample_value
    assert v("telethon_guard_requests_total",
             {"method": "messages.getHistory", "outcome": "ok"}) == 2
    assert v("telethon_guard_requests_total",
             {"method": "messages.getHistory", "outcome": "flood_wait"}) == 1
    assert v("telethon_guard_request_duration_seconds_count",
             {"method": "messages.getHistory"}) == 3
    # only waits Telegram announced: the ledger's repeat (from_server=False) is not counted
    assert v("telethon_guard_flood_wait_seconds_count",
             {"method": "messages.getHistory"}) == 1
    assert v("telethon_guard_flood_wait_seconds_sum", {"method": "messages.getHistory"}) == 7.0
    assert v("telethon_guard_flood_wait_seconds_bucket",
             {"method": "contacts.resolveUsername", "le": "86400.0"}) == 1
    assert v("telethon_guard_flood_blocked_total", {"method": "contacts.resolveUsername"}) == 1
    assert v("telethon_guard_retries_total", {"method": "users.getUsers"}) == 1
    assert v("telethon_guard_rate_limited_seconds_total") == 0.25
    assert v("telethon_guard_transport_errors_total", {"code": "-429"}) == 2
    assert v("telethon_guard_transport_errors_total", {"code": "-404"}) == 1
    assert v("telethon_guard_reconnect_attempts_total") == 1
    assert v("telethon_guard_reconnects_total") == 1
    assert v("telethon_guard_reconnect_give_ups_total") == 1
    assert v("telethon_guard_stray_futures_total") == 1
    assert v("telethon_guard_deadline_exceeded_total", {"stage": "flood"}) == 1
    assert v("telethon_guard_breaker_state", {"key": KEY}) == 2
    m(BreakerStateChanged(KEY, "OPEN", "HALF_OPEN"))
    assert v("telethon_guard_breaker_state", {"key": KEY}) == 1
    m(BreakerStateChanged(KEY, "HALF_OPEN", "CLOSED"))
    assert v("telethon_guard_breaker_state", {"key": KEY}) == 0
    text = m.render().decode()
    assert "# TYPE telethon_guard_flood_wait_seconds histogram" in text
    assert "# TYPE telethon_guard_breaker_state gauge" in text
    assert "peer" not in text  # RequestLimited's key never becomes a label


def test_prometheus_labels_stay_bounded_and_registry_clash_is_clear() -> None:
    reg = CollectorRegistry()
    m = PrometheusMetrics(reg)
    for i in range(1500):
        m(RequestFinished(f"fake.method{i}", "ok", 0.0))
    m(RequestFinished("", "ok", 0.0))
    methods = {s.labels["method"] for metric in reg.collect()
               if metric.name == "telethon_guard_requests" for s in metric.samples}
    assert len(methods) <= 1024 + 2 and {"other", "unknown"} <= methods
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusMetrics(reg)


async def test_prometheus_loop_lag_gauge_reads_the_monitor() -> None:
    reg = CollectorRegistry()
    async with LoopLagMonitor(0.005, 1000) as mon:
        m = PrometheusMetrics(reg, loop_lag=mon)
        await asyncio.sleep(0.05)
        time.sleep(0.06)  # noqa: ASYNC251 - block the loop 60 ms on purpose: a lag to see
        await asyncio.sleep(0.02)
        lag = reg.get_sample_value("telethon_guard_loop_lag_seconds")
    assert lag is not None and 0.04 <= lag < 1.0, lag
    assert m.registry is reg


def _otel_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
                out.setdefault("unit:" + metric.name, []).append(metric.unit)
    return out


def test_opentelemetry_instruments_and_values() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    m = OpenTelemetryMetrics(provider)
    for ev in STORY:
        m(ev)
    pts = _otel_points(reader)

    def value(name: str, **attrs: str) -> Any:
        for p in pts[name]:
            if dict(p.attributes) == attrs:
                return p
        raise AssertionError(f"{name}{attrs} not in {pts.get(name)}")

    assert value("telethon_guard_requests", method="messages.getHistory", outcome="ok").value == 2
    assert value("telethon_guard_request_duration", method="messages.getHistory").count == 3
    assert pts["unit:telethon_guard_request_duration"] == ["s"]
    flood = value("telethon_guard_flood_wait", method="messages.getHistory")
    assert flood.count == 1 and flood.sum == 7.0
    assert value("telethon_guard_transport_errors", code="-429").value == 2
    assert value("telethon_guard_reconnects").value == 1
    assert value("telethon_guard_reconnect_give_ups").value == 1
    assert value("telethon_guard_stray_futures").value == 1
    assert value("telethon_guard_breaker_state", key=KEY).value == 2
    assert value("telethon_guard_deadline_exceeded", stage="flood").value == 1
    provider.shutdown()


async def test_exporters_on_a_real_client() -> None:
    plan = FaultPlan(ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_60", times=1))
    reg = CollectorRegistry()
    prom = PrometheusMetrics(reg)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel = OpenTelemetryMetrics(provider)
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=5, max_flood_wait=2,
                               on_event=[prom])
        otel.attach(client)  # attaching later works as well as on_event=
        async with client:
            await asyncio.wait_for(client.get_me(), 20)
            with pytest.raises(FloodWaitBlocked):
                await asyncio.wait_for(client.get_dialogs(), 20)
    v = reg.get_sample_value
    assert (v("telethon_guard_requests_total",
              {"method": "users.getUsers", "outcome": "ok"}) or 0) >= 1
    assert v("telethon_guard_requests_total",
             {"method": "messages.getDialogs", "outcome": "flood_wait"}) == 1
    assert v("telethon_guard_flood_wait_seconds_sum", {"method": "messages.getDialogs"}) == 60
    assert v("telethon_guard_flood_blocked_total", {"method": "messages.getDialogs"}) == 1
    pts = _otel_points(reader)
    ok = [p for p in pts["telethon_guard_requests"]
          if dict(p.attributes) == {"method": "users.getUsers", "outcome": "ok"}]
    assert ok and ok[0].value >= 1
    provider.shutdown()
