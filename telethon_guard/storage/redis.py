"""Guard state shared on Redis: one Telegram account used by many processes.

::

    client = GuardedTelegramClient(session, api_id, api_hash,
                                   storage="redis://127.0.0.1:6379/0", account="main")

or ``storage=RedisStorage(redis.asyncio.Redis(...), prefix="myapp")``, or a
``redis.asyncio.Redis`` instance (wrapped with the defaults).

What lives in Redis (see :mod:`telethon_guard.storage` for the operations' meaning):

* limiter reservations: one sorted set per limiter key (member = reservation token, score = the
  slot on the Redis server's clock), trimmed by the key's longest period and expiring one
  second after its latest slot has left that period;
* the flood ledger: one string per blocked scope holding the end of the block, expiring when the
  block ends;
* circuit breakers: one hash per (account, DC), expiring ``breaker_ttl`` seconds after the last
  write (and never before an OPEN period ends).

A guarded call's admission (:meth:`RedisStorage.admit`: breaker acquire, flood check, limiter
reservation; see :mod:`telethon_guard.shared_admit`) is one script too. Each operation is ONE
Lua script run with ``EVALSHA`` (reloaded on ``NOSCRIPT`` by redis-py's
``register_script``): exactly one round trip per decision, atomic on the server, timed by the
server's ``TIME`` so hosts with skewed clocks agree. Only relative seconds cross the wire.

Redis Cluster: ``redis+cluster://host:port`` (or ``?cluster=true``, or a ``RedisCluster``
client); see :func:`from_url`. A mismatch of client and server (cluster URL on a plain Redis,
plain URL on a cluster node) is named in the fallback reason and by :meth:`RedisStorage.check`.

Stats view: the flood blocks and breaker states this process last learned from Redis are kept
(bounded) for ``client.guard.stats()`` and health (:class:`~telethon_guard.storage.StatsView`);
:meth:`RedisStorage.refresh_view` reads other processes' too, and ``stats()`` starts it in the
background when the view is older than 1 s (:mod:`~telethon_guard.storage.redis_view`). A
block in the view also wins over a Redis that lost it (restart without persistence, failover
before replication) and is written back; on recovery from an outage every live block known is
written back.

Key layout: ``<prefix>:[<account_namespace>:]<kind>:{acct:<a>}<rest>`` where ``kind`` is ``rl``
(limiter), ``fl`` (flood ledger) or ``br`` (breaker) and ``acct:<a><rest>`` is the guard's own
key (e.g. ``acct:42/dc:2/method:messages.getHistory``). The ``{acct:<a>}`` hash tag keeps every
key of one account in one Redis Cluster slot, so a multi-key reservation stays one script.

Redis trouble never hangs a call: every operation is bounded by ``timeout`` seconds (an
overall ``asyncio`` timeout around each operation, also for clients you pass in; clients built
here also have a socket connect timeout of ``timeout`` and no hidden retry loops). When Redis
cannot serve guard state -- any ``redis.exceptions.RedisError``, ``OSError`` or timeout: connection
refused or reset, timeout, loading, read-only replica, out of memory, a wrong database index
(``redis://host:6379/99``: ``DB index is out of range``), or a server on the port that does not
speak Redis (``InvalidResponse``/``ProtocolError``, e.g. an HTTP server):

The policy, ``storage_fallback`` (the one public name: ``GuardConfig.storage_fallback``,
``RedisStorage(storage_fallback=...)``, ``?storage_fallback=`` in a URL; ``on_unavailable`` is
its deprecated alias and still works), is its own object,
:class:`~telethon_guard.storage.fallback.OutageFallback`, wrapping every operation:

* ``storage_fallback="local"`` (alias ``"fallback"``, the default): the operation is served by a
  process-local :class:`~telethon_guard.storage.memory.MemoryStorage`; the switch is logged once
  and emitted once as :class:`~telethon_guard.events.StorageFallback` (``active=True``). Redis is
  tried again at most every ``probe_interval`` seconds; when it answers, state is shared again
  (``StorageFallback(active=False)``), flood blocks learned meanwhile are copied to Redis and
  paces learned meanwhile are published (:mod:`~telethon_guard.shared_pace`).
* ``storage_fallback="fail"``: :class:`~telethon_guard.errors.StorageUnavailableError` (a
  ``ConnectionError``) is raised ``from`` the redis-py error; between probes it is raised at
  once, without a network attempt.

``NOSCRIPT`` (Redis restarted, ``SCRIPT FLUSH``) is not a failure: the script is loaded and run
again. A run-time error of one of our own Lua scripts (``ERR Error running script ...
user_script:N``) is a bug in telethon-guard, not an outage; it is treated the same way (fallback
or ``StorageUnavailableError``, so one bad script never takes the service down) and, in
addition, logged once at ERROR with the server's message so the bug is seen.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import hashlib
import inspect
import itertools
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import GuardConfigError
from ..keys import hash_tagged
from . import (
    Admission,
    BreakerDecision,
    BreakerPolicy,
    LimitSpec,
    Reservation,
)
from . import redis_moveup as moveup
from . import redis_pace as pace_lua
from . import redis_scripts as lua
from .fallback import POLICIES, BackendUnavailable, OutageFallback
from .memory import MemoryStorage
from .redis_view import ViewRefresher
from .redis_wire import AdmitWire

_timeout: Any = getattr(asyncio, "timeout", None)  # Python 3.11+


async def _within(aw: Any, seconds: float) -> Any:
    """``await aw`` bounded by ``seconds`` (``asyncio.timeout`` where available: no task)."""
    if _timeout is not None:
        async with _timeout(seconds):
            return await aw
    return await asyncio.wait_for(aw, seconds)


logger = logging.getLogger("telethon_guard.storage.redis")

DEFAULT_PREFIX = "tg-guard"
DEFAULT_TIMEOUT = 0.25
"""Seconds one storage operation may take (socket connect, round trip, script) before Redis is
considered unavailable. A local Redis answers in well under a millisecond."""
DEFAULT_PROBE_INTERVAL = 2.0
"""Seconds between attempts to reach Redis again while it is unavailable."""
DEFAULT_BREAKER_TTL = 3600.0
"""Seconds a breaker's hash is kept after its last write (and after its OPEN period)."""

_URL_OPTIONS = ("prefix", "account_namespace", "timeout", "storage_fallback", "on_unavailable",
                "probe_interval", "cluster")
_FALLBACK_NAMES = ("storage_fallback", "on_unavailable")  # the setting and its deprecated alias


def _fallback_setting(storage_fallback: str | None, on_unavailable: str | None) -> tuple[str, str]:
    """``(policy, the name it was given under)`` from ``storage_fallback`` and its deprecated
    alias ``on_unavailable`` (a ``DeprecationWarning`` when used). Raises ``GuardConfigError``
    when both are given with different policies."""
    if on_unavailable is None:
        return ("local" if storage_fallback is None else storage_fallback), "storage_fallback"
    warnings.warn("RedisStorage(on_unavailable=...) is a deprecated alias of storage_fallback=",
                  DeprecationWarning, stacklevel=3)
    if storage_fallback is not None and (
            POLICIES.get(storage_fallback, storage_fallback)
            != POLICIES.get(on_unavailable, on_unavailable)):
        raise GuardConfigError("storage_fallback", "give storage_fallback or its deprecated "
                               f"alias on_unavailable, not both ({storage_fallback!r} vs "
                               f"{on_unavailable!r})")
    return on_unavailable, "on_unavailable"

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    # Every redis-py error means "this Redis cannot serve guard state now": refused, reset,
    # closed, auth, loading, read-only replica, out of memory, cluster down, but also a wrong
    # database index (``ResponseError: DB index is out of range`` on ``SELECT``) and a server
    # that does not speak RESP at all (``InvalidResponse`` / ``ProtocolError``, e.g. an HTTP
    # server on the port). ``NOSCRIPT`` never gets here: :class:`_Script` reloads and retries.
    rexc.RedisError,
    rexc.RedisClusterException,  # a cluster client that cannot build its slot table
    TimeoutError,  # asyncio.timeout (builtin TimeoutError on 3.11+)
    asyncio.TimeoutError,
    OSError,
)

_SCRIPT_ERROR_MARKERS = ("user_script", "error running script", "script attempted",
                         "wrong number of arguments")


def _is_our_bug(exc: BaseException) -> bool:
    """``True`` for errors that point at telethon-guard itself rather than at the Redis server:
    a Lua script of ours failing at run time (``ERR Error running script ... user_script:N``,
    ``Script attempted to access a non local key``) or an argument redis-py cannot encode
    (``DataError``)."""
    if isinstance(exc, rexc.DataError):
        return True
    if isinstance(exc, rexc.ResponseError) and not isinstance(exc, rexc.NoScriptError):
        text = str(exc).lower()
        return any(marker in text for marker in _SCRIPT_ERROR_MARKERS)
    return False


_CLUSTER_HINT = ("the server is a Redis Cluster node (it answered MOVED/ASK): use a cluster "
                 "URL, redis+cluster://host:port, or ?cluster=true")
_PLAIN_HINT = ("the server is not a Redis Cluster (cluster mode is not enabled on it): use "
               "redis://host:port/db without +cluster / cluster=true")


def _wrong_mode(exc: BaseException) -> str | None:
    """The clear message of a client/server mismatch (cluster URL on a plain Redis, or a
    plain URL on a cluster node), else ``None``."""
    if isinstance(exc, rexc.AskError):  # MovedError too: only a plain client sees these
        return _CLUSTER_HINT
    if isinstance(exc, rexc.RedisClusterException) and "not enabled" in str(exc):
        return _PLAIN_HINT
    return None


def _is_cluster_client(client: Any) -> bool:
    return type(client).__name__ == "RedisCluster"


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_ALLOW_CLOSED = BreakerDecision("allow", "CLOSED", "CLOSED", 0.0, 0)


def _decision(reply: Sequence[Any]) -> BreakerDecision:
    return BreakerDecision(_str(reply[0]), _str(reply[1]), _str(reply[2]), float(reply[3]),
                           int(reply[4]))


class RedisStorage:
    """:class:`~telethon_guard.storage.GuardStorage` on Redis (``is_local = False``).

    Args:
        client: a ``redis.asyncio.Redis`` (or ``RedisCluster``) to use; not closed by
            :meth:`aclose`. ``None``: one is built from ``url`` with a connect timeout of
            ``timeout`` seconds and one immediate retry on a broken connection (a pooled
            connection to a restarted Redis), and closed by :meth:`aclose`.
        url: ``redis://[user:pass@]host:port/db``, ``rediss://...`` or ``unix://...`` (used
            when ``client`` is ``None``; default ``redis://127.0.0.1:6379/0``).
        prefix: first segment of every key (default ``"tg-guard"``).
        account_namespace: optional second segment, e.g. a deployment name, to keep several
            applications' guard state apart on one Redis. The account itself is already part of
            every key (``{acct:<account>}``, from ``GuardConfig.account``).
        timeout: seconds one operation may take in total (default 0.25); must be > 0.
        storage_fallback: ``"local"`` (default; alias ``"fallback"``) or ``"fail"``; see the
            module docstring. ``on_unavailable``: its deprecated alias (a ``DeprecationWarning``).
        probe_interval: seconds between attempts to reach Redis while unavailable (default 2).
        breaker_ttl: seconds a breaker's state is kept after its last write (default 3600).
        events: an :class:`~telethon_guard.events.EventBus` for ``StorageFallback``; pipelines
            using this storage also attach theirs through :meth:`bind_events`.
        clock: the guard clock (``now()`` in monotonic seconds): times the outage (probes
            every ``probe_interval``, the outage's length in events) and runs the fallback
            :class:`MemoryStorage`; ``None`` for ``time.monotonic``.
        max_peer_keys: cap of per-peer limiter keys in the fallback storage (in Redis, per-peer
            keys simply expire).

    Raises:
        GuardConfigError: on a bad argument, at construction.
    """

    is_local = False
    name = "redis"

    def __init__(
        self,
        client: Any = None,
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        account_namespace: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        storage_fallback: str | None = None,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        breaker_ttl: float = DEFAULT_BREAKER_TTL,
        events: Any = None,
        clock: Any = None,
        max_peer_keys: int = 10_000,
        on_unavailable: str | None = None,
    ) -> None:
        policy, setting = _fallback_setting(storage_fallback, on_unavailable)
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{} \n"):
            raise GuardConfigError("prefix", f"must be a non-empty str without braces/spaces, "
                                   f"got {prefix!r}")
        if account_namespace is not None and (
                not isinstance(account_namespace, str) or not account_namespace
                or any(c in account_namespace for c in "{} \n")):
            raise GuardConfigError("account_namespace",
                                   f"must be None or a non-empty str, got {account_namespace!r}")
        for field, value in (("timeout", timeout), ("probe_interval", probe_interval),
                             ("breaker_ttl", breaker_ttl)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not value > 0 or value == float("inf")):
                raise GuardConfigError(field, f"must be a finite number > 0, got {value!r}")
        self.fallback = OutageFallback(self.name, policy, probe_interval, clock=clock,
                                       max_peer_keys=max_peer_keys, events=events,
                                       copy_back=self._copy_blocks, setting=setting)
        """The fallback policy (:mod:`telethon_guard.storage.fallback`) around every
        operation."""
        self.timeout = float(timeout)
        self.breaker_ttl = float(breaker_ttl)
        self.prefix = prefix if account_namespace is None else f"{prefix}:{account_namespace}"
        if client is None:
            client = _client_from_url(*_cluster_url(url or "redis://127.0.0.1:6379/0"),
                                      timeout=self.timeout)
            self._owns_client = True
        else:
            if url is not None:
                raise GuardConfigError("url", "give either a client or a url, not both")
            if not hasattr(client, "evalsha"):
                raise GuardConfigError("client", f"{client!r} is not a redis.asyncio client")
            self._owns_client = False
        self.client = client
        self._reserve = _Script(lua.RESERVE)
        self._release = _Script(moveup.RELEASE)  # also bumps the give-back epoch
        self._move_up = _Script(moveup.MOVE_UP)
        self._seed = _Script(lua.SEED)
        self._flood_block = _Script(lua.FLOOD_BLOCK)
        self._flood_left = _Script(lua.FLOOD_LEFT)
        self._br_acquire = _Script(lua.BREAKER_ACQUIRE)
        self._br_failure = _Script(lua.BREAKER_FAILURE)
        self._br_success = _Script(lua.BREAKER_SUCCESS)
        self._br_release = _Script(lua.BREAKER_RELEASE_PROBE)
        self._br_state = _Script(lua.BREAKER_STATE)
        self._br_reconnected = _Script(lua.BREAKER_RECONNECTED)
        self._admit = _Script(lua.ADMIT)
        self._admit_paced = _Script(pace_lua.admit_paced(lua.ADMIT))  # + the shared pace
        self._pace_publish = _Script(pace_lua.PUBLISH)
        self._wire = AdmitWire.for_client(client, self.timeout)
        """The admission's own wire path on a plain Redis client (``None``: a cluster client
        or Python < 3.11, ``execute_command`` then); see :mod:`.redis_wire`."""
        self._plans: dict[Any, _AdmitPlan] = {}
        self._window_args: dict[Any, bytes] = {}
        self._token_base = f"{os.getpid():x}.{os.urandom(4).hex()}.".encode()
        self._tokens = itertools.count(1)
        self._keys: dict[str, bytes] = {}
        self._bugs_logged: set[str] = set()
        self._now = self.fallback._now
        # The stats view: what this process last learned from Redis (or the fallback).
        self._seen_blocks: dict[str, float] = {}  # scope -> guard-clock time the block ends
        self._seen_breakers: dict[str, tuple[BreakerDecision, float]] = {}  # key -> (d, at)
        self.view_refresher = ViewRefresher(self.refresh_view, self._now)
        """Refreshes the stats view in the background when ``client.guard.stats()`` finds it
        older than ``view_refresher.max_age`` seconds (:mod:`~.redis_view`)."""
        self.closed = False

    # ------------------------------------------------------------------ plumbing
    def bind_events(self, bus: Any) -> None:
        """Also deliver :class:`~telethon_guard.events.StorageFallback` to ``bus`` (an
        :class:`~telethon_guard.events.EventBus`); the pipeline calls this."""
        self.fallback.bind_events(bus)

    @property
    def available(self) -> bool:
        """``False`` while Redis is considered unavailable (between failure and recovery)."""
        return self.fallback.available

    @property
    def storage_fallback(self) -> str:
        """The fallback policy: ``"local"`` or ``"fail"``."""
        return "fail" if self.fallback.policy == "fail" else "local"

    @property
    def on_unavailable(self) -> str:
        """Deprecated spelling of :attr:`storage_fallback`: ``"fallback"`` or ``"fail"``."""
        return self.fallback.policy

    @property
    def probe_interval(self) -> float:
        """Seconds between attempts to reach Redis while it is unavailable."""
        return self.fallback.probe_interval

    @property
    def local(self) -> MemoryStorage:
        """The fallback storage (used only while Redis is unavailable and the policy is
        ``"fallback"``)."""
        return self.fallback.local

    @property
    def fallbacks(self) -> int:
        """Number of times Redis became unavailable (for stats and tests)."""
        return self.fallback.fallbacks

    def _key(self, kind: str, key: str) -> bytes:
        full_key = kind + key
        rk = self._keys.get(full_key)
        if rk is None:
            rk = f"{self.prefix}:{kind}:{hash_tagged(key)}".encode()
            if len(self._keys) >= 65_536:
                self._keys.clear()
            self._keys[full_key] = rk
        return rk

    def _reason(self, exc: BaseException) -> str:
        """Why Redis cannot serve guard state (for the fallback's event); a failing script of
        ours is also logged once at ERROR (a bug in telethon-guard, not an outage)."""
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError, rexc.TimeoutError)):
            return f"no answer within {self.timeout:.3g} s"
        wrong_mode = _wrong_mode(exc)
        if wrong_mode is not None:
            if wrong_mode not in self._bugs_logged:
                self._bugs_logged.add(wrong_mode)
                logger.error("telethon-guard's Redis storage is misconfigured: %s", wrong_mode)
            return wrong_mode
        if isinstance(exc, rexc.ResponseError) and str(exc).startswith("BUSY"):
            return ("Redis is BUSY running a script (another application's, or SCRIPT KILL / "
                    "SHUTDOWN NOSAVE needed): " + str(exc))
        if _is_our_bug(exc):
            key = f"{type(exc).__name__}: {exc}"
            if key not in self._bugs_logged:
                if len(self._bugs_logged) >= 64:
                    self._bugs_logged.clear()
                self._bugs_logged.add(key)
                logger.error("telethon-guard's Redis script failed on the server; this is a "
                             "bug in telethon-guard, please report it: %s", key)
            return f"guard script failed ({type(exc).__name__}: {exc})"
        return f"{type(exc).__name__}: {exc}"

    async def _copy_blocks(self, blocks: dict[str, float]) -> None:
        """When Redis answers again: flood blocks learned while it was away, and every live
        block this process had learned from it before (a restarted Redis without persistence
        lost them), are written to Redis, keeping a later end already there (the fallback's
        ``copy_back``; raises on failure, the fallback logs it)."""
        merged = self.flood_scopes()
        for scope, left in blocks.items():
            merged[scope] = max(left, merged.get(scope, 0.0))
        for scope, left in merged.items():
            await _within(self._flood_block.run(self.client, (self._key("fl", scope),),
                                                (repr(left),)), self.timeout)

    def _local_flood_left(self, scope: str) -> float:
        """Seconds left of ``scope`` while Redis is away: the fallback storage's block, or a
        block learned from Redis before the outage (the view), whichever ends later."""
        return max(self.local.flood_left_sync(scope), self._view_left(scope))

    async def _write_back(self, scope: str, left: float) -> None:
        """Redis lost a block this process knows (see :meth:`_view_left`): write it again so
        the other processes see it too (one more round trip, only then)."""
        await self._call(self._flood_block, (self._key("fl", scope),), (repr(left),))

    def _view_left(self, scope: str) -> float:
        """Seconds left of ``scope`` as this process last learned it (0.0: none known). A
        FLOOD_WAIT never ends early, so a Redis that answers "free" while the view says
        "blocked" has lost it (restarted without persistence, failed over before the write
        reached the replica): the view wins until the copy-back has written it again."""
        end = self._seen_blocks.get(scope)
        return 0.0 if end is None else max(0.0, end - self._now())

    async def _remote(self, script: _Script | None, keys: Sequence[bytes],
                      args: Sequence[Any]) -> Any:
        """Run ``script`` (``None``: ``DEL keys``) with the overall timeout; raises
        :class:`~telethon_guard.storage.fallback.BackendUnavailable` when Redis cannot serve."""
        try:
            if script is None:
                return await _within(self.client.delete(*keys), self.timeout)
            return await _within(script.run(self.client, keys, args), self.timeout)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(self._reason(exc)) from exc

    async def _call(self, script: _Script | None, keys: Sequence[bytes],
                    args: Sequence[Any]) -> Any:
        """One operation through the fallback policy: Redis's reply, or ``_LOCAL`` when the
        caller must use the local storage (``StorageUnavailableError`` under ``"fail"``)."""
        if self.closed:
            raise RuntimeError("RedisStorage is closed")
        return await self.fallback.run(lambda: self._remote(script, keys, args), _local)

    # ------------------------------------------------------------------ admission
    async def admit(self, breaker_key: str, lease: float, scopes: Sequence[str],
                    specs: Sequence[LimitSpec], pace: tuple[str, bytes] | None = None,
                    ) -> Admission:
        """Breaker acquire, flood check of ``scopes`` and limiter reservation of ``specs`` in
        ONE script (one round trip); see :class:`~telethon_guard.storage.AdmitStorage`. Every
        key must carry the same account hash tag (one cluster slot): the caller checks.
        ``pace``: ``(pace key, version seen)``: also read the shared pace record in the same
        script (:mod:`~telethon_guard.storage.redis_pace`), returned in ``Admission.pace``
        when its version is not the one seen."""
        if self.closed:
            raise RuntimeError("RedisStorage is closed")
        token = self._token_base + b"%x" % next(self._tokens)
        plan_key = (breaker_key, lease, tuple(scopes), tuple(specs), pace)
        plan = self._plans.get(plan_key)
        if plan is None:
            plan = self._admit_plan(plan_key)
        if self._wire is not None and not self._wire.saturated:
            reply = await self.fallback.run(
                functools.partial(self._wire_admit, plan, token), _local)
        else:
            reply = await self._call(plan.script, plan.keys,
                                     [*plan.before, token, *plan.after])
        if reply is _LOCAL:
            return self._admit_local(breaker_key, lease, scopes, specs)
        paced: str | None = None
        if pace is not None and isinstance(reply, list) and len(reply) > 8:
            paced = _str(reply[8])  # the pace record changed (see redis_pace.admit_paced)
        if isinstance(reply, (bytes, str)):
            # the script's fast path: no breaker state, no scope blocked; reply = the delay
            if self._seen_breakers:
                self._seen_breakers.pop(breaker_key, None)
            d = _ALLOW_CLOSED
            index = -1
            left = 0.0
            res = Reservation(float(reply), token) if reply else None
        else:
            d = self._saw_breaker(breaker_key, _decision(reply))
            index = int(reply[6]) - 1
            left = float(reply[5])
            delay = _str(reply[7])
            res = Reservation(float(delay), token) if delay else None
        if index < 0 and self._seen_blocks and d.decision != "reject":
            for i, scope in enumerate(scopes):  # a block Redis lost (see _view_left)
                view = self._view_left(scope)
                if view > left:
                    left, index = view, i
            if index >= 0:
                await self._write_back(scopes[index], left)
                if res is not None:
                    await self.release(specs, token)  # the call waits or fails: not this slot
                    res = None
        if index >= 0:
            self._saw_block(scopes[index], left)
        return Admission(d, left, index, res, paced)

    async def pace_publish(self, key: str, record: bytes, ttl: float) -> bool:
        """Store the shared pace record of ``key`` (``acct:<a>/pace:<m>``) for ``ttl``
        seconds (one round trip; :mod:`~telethon_guard.shared_pace`). Returns ``True`` when
        Redis stored it, ``False`` when Redis was unavailable and the policy ``"local"``
        (nothing stored: the publisher publishes again at recovery, :meth:`on_recovery`);
        raises ``StorageUnavailableError`` under ``"fail"``."""
        reply = await self._call(self._pace_publish, (self._key("pc", key),),
                                 (record, str(max(1, int(ttl * 1000)))))
        return reply is not _LOCAL

    def on_recovery(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once, when Redis answers again after the current outage (the
        next one when registered while Redis answers); see
        :meth:`~telethon_guard.storage.fallback.OutageFallback.on_recovery`."""
        self.fallback.on_recovery(listener)

    def _admit_plan(self, plan_key: tuple[str, float, tuple[str, ...], tuple[LimitSpec, ...],
                                          tuple[str, bytes] | None]) -> _AdmitPlan:
        """The admission's script, keys and arguments for one (breaker, lease, scopes, specs,
        pace), packed once (cached, bounded): only the token changes from call to call."""
        breaker_key, lease, scopes, specs, pace = plan_key
        keys = [self._key("br", breaker_key), *(self._key("fl", s) for s in scopes),
                *(self._key("rl", spec.key) for spec in specs)]
        before = [repr(float(lease)).encode(), repr(self.breaker_ttl).encode(),
                  b"%d" % len(scopes)]
        after = [self._windows_arg(spec.windows) for spec in specs]
        script = self._admit
        if pace is not None:  # the pace key and the version seen go last (redis_pace)
            keys.append(self._key("pc", pace[0]))
            after.append(pace[1])
            script = self._admit_paced
        head, tail = (self._wire.packer(script.sha, keys, before, after)
                      if self._wire is not None else (b"", b""))
        plan = _AdmitPlan(script, keys, before, after, head, tail)
        if len(self._plans) >= 4096:
            self._plans.clear()
        self._plans[plan_key] = plan
        return plan

    async def _wire_admit(self, plan: _AdmitPlan, token: bytes) -> Any:
        """The admission on :class:`~.redis_wire.AdmitWire` (bounded by ``timeout``); raises
        :class:`~telethon_guard.storage.fallback.BackendUnavailable` when Redis cannot serve."""
        assert self._wire is not None
        try:
            return await self._wire.call(plan.script.source, plan.head, token, plan.tail)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(self._reason(exc)) from exc

    def _admit_local(self, breaker_key: str, lease: float, scopes: Sequence[str],
                     specs: Sequence[LimitSpec]) -> Admission:
        local = self.local
        d = self._saw_breaker(breaker_key, local.breaker_acquire_sync(breaker_key, lease))
        if d.decision == "reject":
            return Admission(d, 0.0, -1, None)
        worst, index = 0.0, -1
        for i, scope in enumerate(scopes):
            left = self._local_flood_left(scope)
            if left > worst:
                worst, index = left, i
        if index >= 0:
            self._saw_block(scopes[index], worst)
            return Admission(d, worst, index, None)
        return Admission(d, 0.0, -1, local.reserve_sync(specs) if specs else None)

    def _windows_arg(self, windows: Any) -> bytes:
        wargs = self._window_args
        enc = wargs.get(windows)
        if enc is None:
            pmax = max((float(p) for _, p in windows), default=0.0)
            enc = " ".join([repr(pmax), *(f"{int(n)} {float(p)!r}" for n, p in windows)]
                           ).encode()
            if len(wargs) >= 4096:
                wargs.clear()
            wargs[windows] = enc
        return enc

    # ------------------------------------------------------------------ limiter
    async def reserve(self, specs: Sequence[LimitSpec], *, observe: bool = False,
                      ) -> Reservation:
        """One script: the earliest slot free in every window of every key, committed in all
        of them (see :mod:`telethon_guard.storage`). The token is ``bytes``."""
        if not specs:
            return Reservation(0.0, None)
        token = self._token_base + b"%x" % next(self._tokens)
        keys = []
        args: list[Any] = [token, b"1" if observe else b"0"]
        for key, windows, _bounded in specs:
            keys.append(self._key("rl", key))
            args.append(self._windows_arg(windows))
        reply = await self._call(self._reserve, keys, args)
        if reply is _LOCAL:
            return self.local.reserve_sync(specs, observe)
        return Reservation(float(reply), token)

    async def release(self, specs: Sequence[LimitSpec], token: Any) -> None:
        """Remove reservation ``token`` from every key of ``specs`` (unknown tokens ignored).
        Tokens of the fallback storage (floats) are released there."""
        if isinstance(token, bytes):
            if specs:
                keys = [self._key("rl", s.key) for s in specs]
                keys.append(self._key("gb", specs[0].key.partition("/")[0]))
                await self._call(self._release, keys, (token,))
        elif token is not None:
            self.local.release_sync(specs, token)

    async def move_up(self, account_tag: str, seen: bytes | None,
                      waiting: Sequence[tuple[Sequence[LimitSpec], Any]],
                      ) -> tuple[bytes, list[float | None]] | None:
        """Move the reservations ``waiting`` (``(specs, token)`` of this process's waiters on
        account ``account_tag`` = ``"acct:<a>"``, FIFO order) up to earlier slots freed by
        give-backs of any process (:mod:`~telethon_guard.storage.redis_moveup`): ONE script.
        ``seen``: the give-back epoch last returned (``None``: unknown). Returns ``None`` when
        the epoch is still ``seen`` (nothing given back) or Redis is unavailable (nothing
        moves); else ``(epoch, delays)``: the new delay in seconds from now of each waiter
        that moved up, ``None`` for the others (slot not earlier, token gone, or a token of
        the fallback storage)."""
        keys = [self._key("gb", account_tag)]
        args: list[Any] = [seen or b"", _NUMKEYS[0]]
        n = 0
        for specs, token in waiting:
            if not isinstance(token, bytes) or not specs or len(specs) >= len(_NUMKEYS):
                continue
            n += 1
            args.append(token)
            args.append(_NUMKEYS[len(specs)])
            for spec in specs:
                keys.append(self._key("rl", spec.key))
                args.append(self._windows_arg(spec.windows))
        args[1] = str(n).encode()
        reply = await self._call(self._move_up, keys, args)
        if reply is _LOCAL or len(reply) == 1:
            return None
        epoch = reply[0] if isinstance(reply[0], bytes) else str(reply[0]).encode()
        out: list[float | None] = []
        it = iter(reply[1:])
        for specs, token in waiting:
            if not isinstance(token, bytes) or not specs or len(specs) >= len(_NUMKEYS):
                out.append(None)
                continue
            value = _str(next(it))
            out.append(float(value) if value else None)
        return epoch, out

    async def seed(self, spec: LimitSpec, ages: Sequence[float]) -> None:
        """Record past slots on ``spec.key``, ``ages`` seconds ago each (server clock); ages
        beyond the key's longest period are skipped."""
        if not ages:
            return
        pmax = max((p for _, p in spec.windows), default=0.0)
        base = self._token_base + b"%xs" % next(self._tokens)
        args = [repr(float(pmax)), base, *(repr(float(a)) for a in ages)]
        reply = await self._call(self._seed, (self._key("rl", spec.key),), args)
        if reply is _LOCAL:
            self.local.seed_sync(spec, ages)

    # ------------------------------------------------------------------ flood ledger
    async def flood_block(self, scope: str, seconds: float) -> float:
        reply = await self._call(self._flood_block, (self._key("fl", scope),),
                                 (repr(float(seconds)),))
        left = (self.local.flood_block_sync(scope, seconds) if reply is _LOCAL
                else float(reply))
        self._saw_block(scope, left)
        return left

    async def flood_left(self, scope: str) -> float:
        reply = await self._call(self._flood_left, (self._key("fl", scope),), ())
        if reply is _LOCAL:
            left = self._local_flood_left(scope)
        else:
            left = float(reply)
            if left <= 0 and self._seen_blocks:
                left = self._view_left(scope)
                if left > 0:
                    await self._write_back(scope, left)
        self._saw_block(scope, left)
        return left

    async def flood_clear(self, scope: str) -> None:
        self.local.flood_clear_sync(scope)
        self._seen_blocks.pop(scope, None)
        await self._call(None, (self._key("fl", scope),), ())

    # ------------------------------------------------------------------ breaker
    async def breaker_acquire(self, key: str, lease: float) -> BreakerDecision:
        reply = await self._call(self._br_acquire, (self._key("br", key),),
                                 (repr(float(lease)), repr(self.breaker_ttl)))
        return self._saw_breaker(key, self.local.breaker_acquire_sync(key, lease) if reply is _LOCAL
                                 else _decision(reply))

    async def breaker_failure(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        reply = await self._call(
            self._br_failure, (self._key("br", key),),
            (policy.threshold, repr(float(policy.open_seconds)), repr(float(policy.growth)),
             repr(float(policy.max_open)), repr(self.breaker_ttl)))
        return self._saw_breaker(key, self.local.breaker_failure_sync(key, policy)
                                 if reply is _LOCAL else _decision(reply))

    async def breaker_success(self, key: str) -> BreakerDecision:
        reply = await self._call(self._br_success, (self._key("br", key),), ())
        return self._saw_breaker(key, self.local.breaker_success_sync(key) if reply is _LOCAL
                                 else _decision(reply))

    async def breaker_release_probe(self, key: str) -> None:
        reply = await self._call(self._br_release, (self._key("br", key),), ())
        if reply is _LOCAL:
            self.local.breaker_release_probe_sync(key)
        seen = self._seen_breakers.get(key)
        if seen is not None and seen[0].state == "HALF_OPEN":  # the view: no probe out now
            self._seen_breakers[key] = (seen[0]._replace(retry_after=0.0), self._now())

    async def breaker_reconnected(self, key: str) -> BreakerDecision:
        reply = await self._call(self._br_reconnected, (self._key("br", key),),
                                 (repr(self.breaker_ttl),))
        return self._saw_breaker(key, self.local.breaker_reconnected_sync(key)
                                 if reply is _LOCAL else _decision(reply))

    async def breaker_state(self, key: str) -> BreakerDecision:
        reply = await self._call(self._br_state, (self._key("br", key),), ())
        return self._saw_breaker(key, self.local.breaker_state_sync(key) if reply is _LOCAL
                                 else _decision(reply))

    # ------------------------------------------------------------------ stats view
    def _saw_block(self, scope: str, left: float) -> None:
        if left > 0:
            if scope not in self._seen_blocks and len(self._seen_blocks) >= 4096:
                self._sweep_seen()
            self._seen_blocks[scope] = self._now() + left
        else:
            self._seen_blocks.pop(scope, None)

    def _sweep_seen(self) -> None:
        now = self._now()
        for scope in [s for s, end in self._seen_blocks.items() if end <= now]:
            del self._seen_blocks[scope]
        if len(self._seen_blocks) >= 4096:  # still full of live blocks: forget the oldest
            self._seen_blocks.pop(next(iter(self._seen_blocks)))

    def _saw_breaker(self, key: str, d: BreakerDecision) -> BreakerDecision:
        if d.state == "CLOSED" and d.failures == 0:  # a healthy DC leaves no state behind
            self._seen_breakers.pop(key, None)
        elif key in self._seen_breakers or len(self._seen_breakers) < 4096:
            self._seen_breakers[key] = (d, self._now())
        return d

    def flood_scopes(self) -> dict[str, float]:
        """Blocked scopes with seconds left (stats), as this process last learned them from
        Redis: every block it recorded or checked, and every block :meth:`refresh_view` read
        (blocks recorded by other processes). Synchronous, no I/O."""
        now = self._now()
        return {s: end - now for s, end in self._seen_blocks.items() if end > now}

    def breaker_keys(self) -> list[str]:
        """Keys of the breakers this process has seen (its own calls, :meth:`refresh_view`)."""
        return list(self._seen_breakers)

    def breaker_state_sync(self, key: str) -> BreakerDecision:
        """The state of breaker ``key`` as last seen (``CLOSED`` when never seen); an OPEN
        breaker's ``retry_after`` (a HALF_OPEN one's: its probe lease left, as last seen)
        counts down on the guard clock. Synchronous, no I/O: the authoritative state is
        :meth:`breaker_state`."""
        seen = self._seen_breakers.get(key)
        if seen is None:
            return BreakerDecision("", "CLOSED", "CLOSED", 0.0, 0)
        d, at = seen
        left = (max(0.0, d.retry_after - (self._now() - at)) if d.state != "CLOSED"
                else 0.0)
        return BreakerDecision("", d.state, d.state, left, d.failures)

    async def refresh_view(self) -> None:
        """Read every flood block and breaker under this storage's prefix from Redis (``SCAN``
        on every primary of a cluster, then one script per key) into the stats view, so
        :meth:`flood_scopes` also shows blocks other processes recorded. Bounded by
        ``timeout`` per round trip; raises ``StorageUnavailableError`` under ``"fail"`` and
        keeps the view as it was when Redis is unavailable under ``"fallback"``."""
        for kind, script in (("fl", self._flood_left), ("br", self._br_state)):
            head = f"{self.prefix}:{kind}:"
            match = "".join("\\" + c if c in "*?[]\\" else c for c in head) + "*"
            keys = await self.fallback.run(functools.partial(self._remote_scan, match), _local)
            if keys is _LOCAL:
                return
            for rk in keys:
                guard_key = _unhash_tag(rk.decode()[len(head):])
                reply = await self._call(script, (rk,), ())
                if reply is _LOCAL:
                    return
                if kind == "fl":
                    self._saw_block(guard_key, float(reply))
                else:
                    self._saw_breaker(guard_key, _decision(reply))

    async def _remote_scan(self, match: str) -> list[bytes]:
        """Every key matching ``match`` (every primary of a cluster), bounded in time."""
        async def scan() -> list[bytes]:
            return [k async for k in self.client.scan_iter(match=match, count=1000)]
        try:
            keys: list[bytes] = await _within(scan(), self.timeout * 8)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(self._reason(exc)) from exc
        return keys

    # ------------------------------------------------------------------ lifecycle
    async def check(self) -> None:
        """Check the server matches the client (bounded by ``4 * timeout``): raises
        :class:`~telethon_guard.errors.GuardConfigError` (field ``storage``) for a cluster URL
        on a plain Redis or a plain URL on a Redis Cluster node, and
        :class:`~telethon_guard.errors.StorageUnavailableError` when Redis does not answer."""
        from ..errors import StorageUnavailableError

        try:
            info = await _within(self.client.info("cluster"), self.timeout * 4)
        except _UNAVAILABLE as exc:
            hint = _wrong_mode(exc)
            if hint is not None:
                raise GuardConfigError("storage", hint) from exc
            raise StorageUnavailableError(
                self.name, f"guard storage redis is unavailable: {self._reason(exc)}") from exc
        if isinstance(info, dict) and not _is_cluster_client(self.client):
            if int(info.get("cluster_enabled", 0)):
                raise GuardConfigError("storage", _CLUSTER_HINT)

    async def ping(self) -> bool:
        """``True`` when Redis answers a ``PING`` within ``timeout`` (never raises)."""
        try:
            return bool(await _within(self.client.ping(), self.timeout))
        except Exception:
            return False

    async def disconnect(self) -> None:
        """Close the connections of a client this storage built (from a URL); the storage stays
        usable and connects again on its next operation (a client passed in is left alone).
        ``disconnect()`` of the guarded client that opened this storage calls it. Never
        raises; bounded by ``4 * timeout`` seconds. The admission's own connections
        (:mod:`.redis_wire`) are closed in either case."""
        if self.closed:
            return
        await self._close_wire()
        if self._owns_client:
            try:
                await _within(self.client.aclose(), self.timeout * 4)
            except Exception:  # closing a dead connection must not raise
                logger.debug("closing the Redis connections failed", exc_info=True)

    async def _close_wire(self) -> None:
        if self._wire is not None:
            try:
                await _within(self._wire.close(), self.timeout * 4)
            except Exception:  # closing a dead connection must not raise
                logger.debug("closing the admission's connections failed", exc_info=True)

    async def aclose(self) -> None:
        """Close the client if this storage built it (a client passed in stays open), and the
        admission's own connections."""
        if self.closed:
            return
        self.closed = True
        self.view_refresher.cancel()
        await self._close_wire()
        if self._owns_client:
            try:
                await _within(self.client.aclose(), self.timeout * 4)
            except Exception:  # closing a dead connection must not raise
                logger.debug("closing the Redis client failed", exc_info=True)

    def __repr__(self) -> str:
        state = "available" if self.available else f"unavailable ({self.on_unavailable})"
        return f"<RedisStorage prefix={self.prefix!r} {state}>"


_NUMKEYS = [str(i).encode() for i in range(64)]


class _AdmitPlan(NamedTuple):
    """One admission's script, its keys and arguments but the token (``before`` it, ``after``
    it), and the same packed for :class:`~.redis_wire.AdmitWire` (``head``, ``tail``)."""

    script: _Script
    keys: list[bytes]
    before: list[bytes]
    after: list[bytes]
    head: bytes
    tail: bytes


class _Script:
    """A Lua script run with ``EVALSHA`` (one round trip); on ``NOSCRIPT`` (Redis restarted,
    ``SCRIPT FLUSH``, failover) it is loaded and run again."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest().encode()

    async def run(self, client: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        # Arguments are bytes where possible: redis-py packs bytes several times faster.
        try:
            return await client.execute_command("EVALSHA", self.sha, _NUMKEYS[len(keys)],
                                                *keys, *args)
        except rexc.NoScriptError:
            await client.script_load(self.source)
            return await client.execute_command("EVALSHA", self.sha, _NUMKEYS[len(keys)],
                                                *keys, *args)


def _unhash_tag(key: str) -> str:
    """``{acct:42}/dc:2`` -> ``acct:42/dc:2`` (the inverse of :func:`keys.hash_tagged`)."""
    if key.startswith("{"):
        head, _, rest = key[1:].partition("}")
        return head + rest
    return key


class _LocalMarker:
    __slots__ = ()


_LOCAL: Any = _LocalMarker()


def _local() -> Any:
    return _LOCAL


_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def _split_url(url: object, field: str) -> tuple[SplitResult, bool]:
    """``(the URL's parts with a redis-py scheme, is a cluster)``: ``redis+cluster://`` and
    ``rediss+cluster://`` name a cluster. :raises GuardConfigError: (``field``) not a str, or
    not a Redis scheme."""
    if not isinstance(url, str):
        raise GuardConfigError(field, f"redis url must be a str, got {url!r}")
    parts = urlsplit(url)
    cluster = parts.scheme in _CLUSTER_SCHEMES
    if cluster:
        parts = parts._replace(scheme=_CLUSTER_SCHEMES[parts.scheme])
    elif parts.scheme not in ("redis", "rediss", "unix"):
        raise GuardConfigError(field, f"not a redis url: {url!r}")
    return parts, cluster


def _with_query(parts: SplitResult, query: list[tuple[str, str]]) -> str:
    """The URL of ``parts`` with ``query`` as its query string. ``urlunsplit`` drops the
    ``//`` of a URL with no host (``unix:///run/redis.sock`` -> ``unix:/run/redis.sock``),
    which redis-py then refuses as a scheme it does not know: put it back."""
    url = urlunsplit(parts._replace(query=urlencode(query)))
    if not parts.netloc and not url.startswith(f"{parts.scheme}://"):
        url = f"{parts.scheme}://{url[len(parts.scheme) + 1:]}"
    return url


def _cluster_url(url: str) -> tuple[str, bool]:
    """``(url for redis-py, is a cluster)`` of a URL given to ``RedisStorage(url=...)``: the
    ``redis+cluster://`` schemes and ``?cluster=true`` name a cluster; the guard's other URL
    options belong to :func:`from_url` (here they are keywords).

    :raises GuardConfigError: not a str, a bad ``cluster`` value, or a guard option in the
        query."""
    parts, cluster = _split_url(url, "url")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = [name for name, _ in query if name in _URL_OPTIONS and name != "cluster"]
    if ours:
        raise GuardConfigError("url", f"{', '.join(ours)} in the URL: give them as keywords of "
                               "RedisStorage, or build it with from_url(url)")
    rest = []
    for name, value in query:
        if name == "cluster":
            cluster = _cluster_flag(value) or cluster
        else:
            rest.append((name, value))
    return _with_query(parts, rest), cluster


def _cluster_flag(value: str) -> bool:
    flag = str(value).lower()
    if flag not in ("", "1", "0", "true", "false", "yes", "no"):
        raise GuardConfigError("cluster", f"must be true or false, got {flag!r}")
    return flag in ("", "1", "true", "yes")


def _client_from_url(url: str, cluster: bool = False, *, timeout: float) -> Any:
    if cluster and not urlsplit(url).hostname:
        raise GuardConfigError("storage", f"a Redis Cluster URL names one node, host:port "
                               f"(e.g. redis+cluster://127.0.0.1:7000), got {url!r}")
    # Reads are bounded by the per-operation asyncio timeout instead: redis-py's asyncio
    # socket_timeout wraps every read and write in asyncio.wait_for (a task per command on
    # Python 3.11), which roughly halves the decision rate. One immediate retry replaces a
    # pooled connection that died with a restarted Redis (on a cluster: also one refresh of
    # the slot table after a failover); the overall per-operation timeout bounds everything.
    try:
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(url, socket_timeout=None,
                                         socket_connect_timeout=timeout,
                                         retry=Retry(NoBackoff(), 1))
        client = aioredis.Redis.from_url(url, socket_timeout=None,
                                         socket_connect_timeout=timeout,
                                         retry=Retry(NoBackoff(), 1), retry_on_timeout=False)
    except (ValueError, TypeError, rexc.RedisError) as exc:
        raise GuardConfigError("storage", f"bad redis url: {exc}") from exc
    _check_url_options(url, client.connection_pool.connection_class)
    return client


def _init_keywords(cls: type) -> set[str]:
    """The keyword names ``cls(...)`` accepts, over its MRO's ``__init__`` signatures."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names.update(p.name for p in params
                     if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self")
    return names


def _check_url_options(url: str, connection_class: type) -> None:
    """Refuse a query option neither the guard nor redis-py knows (``?timout=0.5``): redis-py
    passes unknown options on to its connection class, which raises ``TypeError`` only when
    the first connection is made, on every call, whatever the fallback policy.

    :raises GuardConfigError: (``storage``) naming the unknown options."""
    known = _init_keywords(connection_class) | set(URL_QUERY_ARGUMENT_PARSERS)
    unknown = [name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)
               if name not in known]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known | set(_URL_OPTIONS)), n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise GuardConfigError("storage", f"unknown Redis URL option {', '.join(hints)}: the "
                           f"guard takes {', '.join(_URL_OPTIONS)}; the rest must be options "
                           "of redis-py's connection")


def from_url(url: str, **options: Any) -> RedisStorage:
    """Build a :class:`RedisStorage` from ``url`` (what ``GuardConfig(storage="redis://...")``
    uses). Query parameters ``prefix``, ``account_namespace``, ``timeout``,
    ``storage_fallback`` (or its deprecated alias ``on_unavailable``), ``probe_interval`` and
    ``cluster`` are taken by the guard (e.g.
    ``redis://127.0.0.1:6379/0?prefix=myapp&timeout=0.5``); the rest go to redis-py.
    Keyword ``options`` are :class:`RedisStorage` arguments (and ``cluster=True``); the URL's
    parameters win over them (``GuardConfig.storage_timeout`` / ``storage_fallback`` arrive
    as options).

    A Redis Cluster: ``redis+cluster://host:port`` (``rediss+cluster://`` with TLS), or
    ``?cluster=true``, or ``cluster=True``: served by ``redis.asyncio.cluster.RedisCluster``,
    which finds the other nodes from the one named. Every key of one account carries the hash
    tag ``{acct:<account>}``, so every script runs on the one node owning that slot.

    Raises:
        GuardConfigError: not a str, an unknown scheme, a bad option value, an option
            neither the guard nor redis-py's connection takes (``?timout=``), a cluster URL
            with a database other than 0 or over ``unix://``.
    """
    parts, cluster = _split_url(url, "storage")
    ours: dict[str, Any] = {}
    rest = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _URL_OPTIONS:
            ours[name] = value
        else:
            rest.append((name, value))
    for name in ("timeout", "probe_interval"):
        if name in ours:
            try:
                ours[name] = float(ours[name])
            except ValueError:
                raise GuardConfigError(name, f"must be a number, got {ours[name]!r}") from None
    if "cluster" in ours:
        cluster = _cluster_flag(ours.pop("cluster")) or cluster
    if any(name in ours for name in _FALLBACK_NAMES):  # the URL's policy wins over options'
        for name in _FALLBACK_NAMES:
            options.pop(name, None)
    if options.pop("cluster", None):
        cluster = True
    if cluster and parts.scheme == "unix":
        raise GuardConfigError("storage", "a Redis Cluster is reached over TCP, not unix://")
    if cluster and parts.path not in ("", "/", "/0"):
        raise GuardConfigError("storage", f"a Redis Cluster has only database 0: {url!r}")
    for name, value in options.items():
        if value is not None:
            ours.setdefault(name, value)
    clean = _with_query(parts, rest)
    timeout = ours.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise GuardConfigError("timeout", f"must be a finite number > 0, got {timeout!r}")
    client = _client_from_url(clean, cluster, timeout=float(timeout))
    storage = RedisStorage(client, **ours)
    storage._owns_client = True
    return storage


__all__ = ["DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "RedisStorage", "from_url"]
