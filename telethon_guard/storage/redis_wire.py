"""The admission's wire path on a plain Redis: one pre-packed ``EVALSHA`` on held connections.

A guarded call on Redis storage makes one round trip on its fast path, the admission script
(:meth:`~telethon_guard.storage.redis.RedisStorage.admit`). Sent through redis-py's
``execute_command`` it cost about 40 µs of client CPU before the script ran (pool lock,
retry wrapper, observability hooks, every argument encoded and packed each time), plus about
5 µs for an ``asyncio.timeout`` (a timer per call); with 4 processes and Redis on 2 cores that
client cost, not Redis, bounded the decision rate. :class:`AdmitWire` sends the same command:

* packed once per (breaker, scopes, limiter keys, windows): only the reservation token changes
  per call (:meth:`AdmitWire.packer` returns the bytes before and after it);
* on connections it makes from the client's pool's own settings
  (``connection_pool.make_connection()``: same host, database, credentials, protocol, client
  name, connect timeout) and keeps in a free list: no pool lock per call; at most
  :data:`MAX_CONNECTIONS` (and at most the pool's ``max_connections``): beyond that, calls take
  redis-py's path;
* bounded by one deadline watchdog instead of a timer per call: operations start in deadline
  order (one ``timeout`` for all), so one timer armed at the oldest running operation's
  deadline is enough; when it fires, every operation past its deadline is cancelled and
  raises ``TimeoutError`` (as ``asyncio.timeout`` would: a cancellation from elsewhere stays a
  ``CancelledError``).

What the generic path did is kept: ``NOSCRIPT`` loads the script (through the client) and
runs it again; a broken connection (a restarted Redis) is retried once at once on a new
socket; redis-py's errors come out unchanged for the storage to classify. A connection whose
state is unknown after an error (neither a whole reply read nor closed by redis-py) is closed
and dropped, never reused: a late reply can never answer another call. Only for
``redis.asyncio.Redis`` clients on Python 3.11+ (``Task.uncancel``); a cluster client, or an
older Python, takes the generic path.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rexc

MAX_CONNECTIONS = 32
"""Connections one :class:`AdmitWire` makes at most (more concurrent admissions than that take
redis-py's pool, as before)."""


def _bulk(args: Sequence[bytes]) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class AdmitWire:
    """Sends pre-packed ``EVALSHA`` commands (:meth:`packer`) on connections made from
    ``client``'s pool, each call bounded by ``timeout`` seconds (``TimeoutError``).
    Build it with :meth:`for_client`; :meth:`close` disconnects its connections (it stays
    usable: the next call connects again)."""

    __slots__ = ("_client", "_conns", "_expired", "_free", "_loop", "_pool", "_running",
                 "_tasks", "_timer", "max_connections", "timeout")

    def __init__(self, client: Any, timeout: float) -> None:
        self._client = client
        self._pool = client.connection_pool
        self.timeout = timeout
        self.max_connections = min(MAX_CONNECTIONS,
                                   int(getattr(self._pool, "max_connections", MAX_CONNECTIONS)))
        """At most this many connections of its own (also at most the pool's
        ``max_connections``); while all are busy, :attr:`saturated` is ``True`` and the caller
        takes redis-py's path."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._free: list[Any] = []
        self._conns: set[Any] = set()
        self._running: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def for_client(cls, client: Any, timeout: float) -> AdmitWire | None:
        """An :class:`AdmitWire` for a plain ``redis.asyncio.Redis`` client on Python 3.11+,
        else ``None`` (the caller keeps ``execute_command``)."""
        import redis.asyncio as aioredis

        if sys.version_info < (3, 11) or not isinstance(client, aioredis.Redis):
            return None
        if not hasattr(getattr(client, "connection_pool", None), "make_connection"):
            return None
        return cls(client, timeout)

    @property
    def saturated(self) -> bool:
        """``True`` when a call now would need a connection beyond :attr:`max_connections`
        (every one busy): the caller should send this one through the client instead."""
        return (not self._free and len(self._conns) >= self.max_connections
                and self._loop is asyncio.get_running_loop())

    @staticmethod
    def packer(sha: bytes, keys: Sequence[bytes], before: Sequence[bytes],
               after: Sequence[bytes]) -> tuple[bytes, bytes]:
        """``EVALSHA sha len(keys) *keys *before <token> *after`` packed (RESP), split at the
        token: ``(head, tail)`` for :meth:`call`."""
        n = 3 + len(keys) + len(before) + 1 + len(after)
        head = b"*%d\r\n" % n + _bulk([b"EVALSHA", sha, b"%d" % len(keys), *keys, *before])
        return head, _bulk(after)

    async def call(self, source: str, head: bytes, token: bytes, tail: bytes) -> Any:
        """Run the script packed in ``head`` (Lua ``source``, loaded on ``NOSCRIPT``) with
        ``token`` between ``head`` and ``tail``; its reply. Raises ``TimeoutError`` after
        ``timeout`` seconds, redis-py's errors otherwise."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        task: Any = asyncio.current_task()  # Task.cancelling/uncancel: Python 3.11+
        cancelling = task.cancelling()
        self._running[task] = loop.time() + self.timeout
        if self._timer is None:
            self._timer = loop.call_at(self._running[task], self._fire)
        packed = b"%s$%d\r\n%s\r\n%s" % (head, len(token), token, tail)
        try:
            return await self._send(source, packed)
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                if task.uncancel() <= cancelling:
                    raise TimeoutError(f"no reply within {self.timeout} s") from None
            raise
        finally:
            self._running.pop(task, None)
            if task in self._expired:  # expired, but the cancellation was not delivered here
                self._expired.discard(task)
                task.uncancel()

    def _fire(self) -> None:
        """The watchdog: cancel every operation past its deadline (the oldest first), then
        arm the timer again at the oldest remaining one's."""
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        for task, deadline in list(self._running.items()):
            if deadline > now:
                self._timer = loop.call_at(deadline, self._fire)
                return
            del self._running[task]
            self._expired.add(task)
            task.cancel()

    async def _send(self, source: str, packed: bytes) -> Any:
        conn = self._free.pop() if self._free else self._new()
        in_step = False
        try:
            try:
                reply = await self._once(conn, packed)
            except rexc.NoScriptError:  # Redis restarted, SCRIPT FLUSH, failover
                await self._client.script_load(source)
                reply = await self._once(conn, packed)
            in_step = True
            return reply
        except rexc.ResponseError:
            in_step = True  # an error reply read in full (or redis-py closed the socket)
            raise
        finally:
            if in_step or not conn.is_connected:
                self._free.append(conn)  # closed: the next send connects it again
            else:
                self._drop(conn)

    @staticmethod
    async def _once(conn: Any, packed: bytes) -> Any:
        try:
            await conn.send_packed_command(packed, check_health=False)
            return await conn.read_response()
        except (rexc.ConnectionError, rexc.TimeoutError):
            # a held connection to a Redis that restarted: once more, on a new socket
            await conn.disconnect()
            await conn.send_packed_command(packed, check_health=False)
            return await conn.read_response()

    def _new(self) -> Any:
        conn = self._pool.make_connection()
        self._conns.add(conn)
        return conn

    def _drop(self, conn: Any) -> None:
        self._conns.discard(conn)
        task = asyncio.ensure_future(conn.disconnect(nowait=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new event loop: the old loop's connections and timer cannot be used in it."""
        self._loop = loop
        self._free = []
        self._conns = set()
        self._running = {}
        self._expired = set()
        self._timer = None

    async def close(self) -> None:
        """Disconnect every connection made on the running loop (never raises)."""
        if self._loop is not asyncio.get_running_loop():
            return
        for conn in list(self._conns):
            try:
                await conn.disconnect()
            except Exception:  # closing a dead connection must not raise
                pass


__all__ = ["AdmitWire"]
