"""A FastAPI service in the incident's shape, kept up by telethon-guard.

Endpoints:

* ``GET /health``: event-loop lag and whether Telegram is reachable now
  (``client.guard.available``). Never touches Telegram: it answers in microseconds of handler
  time whatever Telegram does. Always HTTP 200 while the process can answer; ``status`` is
  ``"degraded"`` when Telegram is unavailable.
* ``GET /channels?user_id=...``: the same through that user's own account, from a pool of
  per-user clients (:mod:`examples.fastapi_service.tenants`, when the app has one).
* ``GET /channels``: a few public channels (title, participants, about) fetched live through
  MTProto (``contacts.resolveUsername`` once, then ``channels.getFullChannel``), each live
  answer written to a SQLite cache. When the guard knows Telegram cannot answer within the
  budget (breaker OPEN, reconnecting, a FLOOD_WAIT longer than the budget) the handler answers
  from the cache at once (:func:`telethon_guard.health.with_fallback`); ``source`` says which.
  HTTP 503 only when neither live data nor a cached copy exists.
* ``GET /metrics``: Prometheus text format (:class:`~telethon_guard.metrics.PrometheusMetrics`).
* ``GET /stats``: ``client.guard.stats()`` as JSON.
* ``GET /messages?chat=ID&limit=N``: the newest messages the event handler stored. The
  service is event-driven too: a ``NewMessage`` handler writes every incoming message into
  the SQLite cache (once per chat and message id), and keeps doing so through floods and
  -429 storms (the guard never stalls Telethon's update loop: telethon_guard/update_path.py).

Build it with :func:`create_app` around a :class:`ChannelService`; ``python -m
examples.fastapi_service`` runs it against the embedded MTProto test server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from telethon import events
from telethon.tl import functions

from telethon_guard.errors import CircuitOpenError
from telethon_guard.health import with_fallback
from telethon_guard.loop import LoopLagMonitor
from telethon_guard.metrics.prometheus import PrometheusMetrics

DEFAULT_CHANNELS: tuple[str, ...] = ("news", "chat_a", "chat_b", "chat_c")
"""Usernames of public channels in the test server's world."""


class ChannelCache:
    """SQLite cache of channel summaries (stdlib ``sqlite3``; one row per username).

    ``path``: database file (``":memory:"`` for a throw-away cache). Each operation is one
    short local statement (well under a millisecond), run on the event loop.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS channels ("
            " username TEXT PRIMARY KEY, data TEXT NOT NULL, updated REAL NOT NULL)")
        self._db.commit()
        self._has_messages = False

    def store(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace ``rows`` (each with a ``username`` key), stamped with wall time."""
        now = time.time()
        self._db.executemany(
            "INSERT OR REPLACE INTO channels (username, data, updated) VALUES (?, ?, ?)",
            [(r["username"], json.dumps(r), now) for r in rows])
        self._db.commit()

    def load(self, usernames: Sequence[str]) -> list[dict[str, Any]]:
        """Cached rows for ``usernames`` (those present), each with ``cached_at`` (unix s)."""
        out: list[dict[str, Any]] = []
        for name in usernames:
            row = self._db.execute(
                "SELECT data, updated FROM channels WHERE username = ?", (name,)).fetchone()
            if row is not None:
                out.append({**json.loads(row[0]), "cached_at": row[1]})
        return out

    def store_message(self, chat_id: int, msg_id: int, text: str, date: float) -> bool:
        """Store one incoming message (``date``: unix seconds); ``False`` if that chat's
        message id was stored already (a duplicate delivery is ignored)."""
        if not self._has_messages:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS messages (chat_id INTEGER NOT NULL, msg_id INTEGER"
                " NOT NULL, text TEXT NOT NULL, date REAL NOT NULL, PRIMARY KEY (chat_id,"
                " msg_id))")
            self._has_messages = True
        cur = self._db.execute(
            "INSERT OR IGNORE INTO messages (chat_id, msg_id, text, date) VALUES (?, ?, ?, ?)",
            (chat_id, msg_id, text, date))
        self._db.commit()
        return cur.rowcount == 1

    def messages(self, chat_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` stored messages (of ``chat_id``, or of every chat), newest
        first."""
        if not self._has_messages:
            return []
        where, args = ("WHERE chat_id = ?", (chat_id,)) if chat_id is not None else ("", ())
        rows = self._db.execute(
            f"SELECT chat_id, msg_id, text, date FROM messages {where}"
            " ORDER BY date DESC, msg_id DESC LIMIT ?", (*args, limit)).fetchall()
        return [{"chat_id": c, "id": i, "text": t, "date": d} for c, i, t, d in rows]

    def close(self) -> None:
        self._db.close()


async def fetch_channels(client: Any, channels: Sequence[str]) -> list[dict[str, Any]]:
    """Every channel of ``channels`` from Telegram through ``client`` (concurrently); raises
    what the guard raises. When one fails the others are cancelled, except when it failed
    with ``CircuitOpenError``: then one of the others may be the breaker's HALF_OPEN probe
    (the one call let through), and cancelling it would throw its verdict away every time
    (the breaker stays HALF_OPEN); the others run on to their end, bounded by the caller's
    timeout."""
    async def one(username: str) -> dict[str, Any]:
        peer = await client.get_input_entity(username)
        full = await client(functions.channels.GetFullChannelRequest(peer))
        chat = full.chats[0]
        return {"username": username, "id": chat.id, "title": chat.title,
                "participants": full.full_chat.participants_count,
                "about": full.full_chat.about}

    tasks = [asyncio.ensure_future(one(u)) for u in channels]
    try:
        return list(await asyncio.gather(*tasks))
    except CircuitOpenError:
        await asyncio.gather(*tasks, return_exceptions=True)  # let a HALF_OPEN probe finish
        raise
    except BaseException:
        for t in tasks:  # one failed (or we were cancelled): stop the others too
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class ChannelService:
    """What the endpoints use: the guarded client, the cache, metrics and the lag monitor.

    ``client``: a :class:`~telethon_guard.GuardedTelegramClient` (not yet connected is fine:
    :meth:`start` connects it). ``timeout``: seconds one ``/channels`` request may spend on
    Telegram before it answers from the cache. ``metrics``: a ``PrometheusMetrics`` (default:
    a new one on a private registry), subscribed to the client's events. ``connect_timeout``:
    seconds :meth:`start` waits for the first connection (the service starts degraded if it
    fails: ``/channels`` then serves the cache).
    """

    def __init__(self, client: Any, *, cache: ChannelCache | None = None,
                 channels: Sequence[str] = DEFAULT_CHANNELS, timeout: float = 2.0,
                 metrics: PrometheusMetrics | None = None,
                 lag_monitor: LoopLagMonitor | None = None,
                 connect_timeout: float = 10.0) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.client = client
        self.cache = cache if cache is not None else ChannelCache()
        self.channels = tuple(channels)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        # 10 ms ticks, 10 s of samples: stats() sorts at most 1000 floats per /health.
        self.lag = lag_monitor if lag_monitor is not None else LoopLagMonitor(0.01, 1000)
        self.metrics = (metrics if metrics is not None
                        else PrometheusMetrics(CollectorRegistry(), loop_lag=self.lag))
        if metrics is not None:
            self.metrics.watch_loop_lag(self.lag)
        self._unsubscribe = self.metrics.attach(client)
        self.started = False
        client.add_event_handler(self.on_message, events.NewMessage(incoming=True))

    async def start(self) -> None:
        """Start the lag monitor and connect the client (bounded by ``connect_timeout``)."""
        if self.started:
            return
        self.started = True
        self.lag.start()
        try:
            await asyncio.wait_for(self.client.connect(), self.connect_timeout)
        except (ConnectionError, TimeoutError, asyncio.TimeoutError):
            pass  # start degraded; the guard reports unavailable and /channels serves cache

    async def stop(self) -> None:
        """Disconnect the client and stop the monitor."""
        if not self.started:
            return
        self.started = False
        await self.client.disconnect()
        await self.lag.stop()
        self._unsubscribe()

    async def on_message(self, event: Any) -> None:
        """The event-driven part: store every incoming message in the cache."""
        self.cache.store_message(event.chat_id, event.id, event.raw_text,
                                 event.date.timestamp() if event.date else time.time())

    async def fetch_live(self) -> list[dict[str, Any]]:
        """Every configured channel from Telegram (concurrently); raises what the guard raises."""
        return await fetch_channels(self.client, self.channels)

    async def channels_payload(self) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, body)`` of ``/channels``: live, or the cache at once."""
        reason: list[str] = []

        def note(error: BaseException | None) -> None:
            reason.append(type(error).__name__ if error is not None
                          else f"unavailable: {self.client.guard.unavailable_reason}")

        sentinel: list[dict[str, Any]] = []
        rows = await with_fallback(self.fetch_live, sentinel, timeout=self.timeout,
                                   guard=self.client, on_fallback=note)
        if rows is not sentinel:
            self.cache.store(rows)
            return 200, {"source": "live", "channels": rows}
        cached = self.cache.load(self.channels)
        if not cached:
            return 503, {"source": "none", "reason": reason[0] if reason else "",
                         "channels": []}
        return 200, {"source": "cache", "reason": reason[0] if reason else "",
                     "channels": cached}

    def health_payload(self) -> dict[str, Any]:
        """``/health``: loop lag (ms) and Telegram availability; no Telegram I/O."""
        guard = self.client.guard
        reason = guard.unavailable_reason
        lag = self.lag.stats()
        return {
            "status": "ok" if reason is None else "degraded",
            "telegram": {"available": reason is None, "reason": reason},
            "loop_lag_ms": {k: round(lag[k] * 1000, 3) for k in ("p50", "p99", "max")},
        }


def create_app(service: ChannelService, tenants: Any = None) -> FastAPI:
    """The FastAPI app around ``service``; its lifespan starts and stops the service (an ASGI
    test transport without lifespan can call ``service.start()`` itself). ``tenants``: a
    :class:`~examples.fastapi_service.tenants.TenantChannels` serving
    ``/channels?user_id=...`` from a pool of per-user clients (closed with the service)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            if tenants is not None:
                await tenants.close()

    app = FastAPI(title="telethon-guard example service", lifespan=lifespan)
    app.state.service = service

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return service.health_payload()

    @app.get("/channels")
    async def channels(user_id: str | None = None) -> JSONResponse:
        if user_id is not None:  # one user's own account, from the pool
            if tenants is None:
                return JSONResponse({"source": "none", "reason": "no per-user accounts",
                                     "channels": []}, status_code=404)
            status, body = await tenants.channels_payload(user_id)
        else:
            status, body = await service.channels_payload()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/messages")
    async def messages(chat: int | None = None, limit: int = 100) -> dict[str, Any]:
        return {"messages": service.cache.messages(chat, max(1, min(limit, 1000)))}

    @app.get("/stats")
    async def stats() -> JSONResponse:
        data = service.client.guard.stats().as_dict()
        data["transport_errors"] = {str(k): v for k, v in data["transport_errors"].items()}
        return JSONResponse(data)

    return app


__all__ = ["DEFAULT_CHANNELS", "ChannelCache", "ChannelService", "create_app", "fetch_channels"]
