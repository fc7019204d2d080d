"""``TelegramTestServer``: a local MTProto 2.0 server that unmodified Telethon talks to.

::

    async with TelegramTestServer(dcs=2) as server:
        client = server.client()              # a TelegramClient on a fresh logged-in session
        async with client:
            me = await client.get_me()
        assert server.log.count("users.getUsers") >= 1

One asyncio listener per DC on ``host`` (port 0: the OS picks). Pre-shared sessions
(:meth:`TelegramTestServer.session`) skip the key exchange; an empty ``StringSession`` pointed
at a DC (:meth:`TelegramTestServer.empty_session`) goes through the full DH exchange with the
server's own RSA key, which is registered in this process through ``telethon.crypto.rsa.add_key``
(other processes: ``telethon_guard.testing.register_public_key(pem)``).

Transports, detected per connection: TcpFull (Telethon's default), Intermediate, padded
Intermediate, Abridged, and obfuscated2 around the last three. MTProto 2.0 sessions:
``bad_server_salt`` (Telethon starts with salt 0), ``new_session_created``, ``msgs_ack``,
containers both ways, ``gzip_packed``, ``ping`` / ``ping_delay_disconnect``,
``destroy_session``, ``get_future_salts``, ``bad_msg_notification`` (16, 17, 18),
``rpc_result`` / ``rpc_error``, transport -404 for an unknown auth key.

Limits and faults come from ``server.faults`` (a ``FaultPlan``, mutable at runtime)::

    from telethon_guard.testing.faults import FaultPlan, FloodWindow

    plan = FaultPlan(FloodWindow("messages.getHistory", limit=30, window=30))
    async with TelegramTestServer(faults=plan) as server:
        ...
        assert server.log.max_in_window("messages.getHistory", 30.0) <= 30

Updates are pushed like Telegram's (``testing/updates.py``, ``testing/world_delivery.py``): a
message an account sends reaches every other member account's clients, and
:meth:`TelegramTestServer.push_message`, :meth:`TelegramTestServer.make_gap` and
:meth:`TelegramTestServer.push_too_long` let a test write messages, leave update gaps and ask
clients to fetch the difference::

    async with TelegramTestServer() as server:
        bob = server.client(session=server.session(server.world.user_id("bob")))
        bob.add_event_handler(on_message, events.NewMessage())
        async with bob:
            server.push_message("alice", "bob", "hi")     # fires on_message
            server.make_gap("chat_a", 3)                  # filled by getChannelDifference

Ground truth is ``server.log`` (:class:`~telethon_guard.testing.log.ServerLog`); MTProto-level
counters are in ``server.stats``. Exceptions in the server's code or in a world handler are
answered with ``rpc_error 500 INTERNAL``, collected in ``server.internal_errors`` and, with
``strict=True`` (the default), raised as :class:`ServerInternalError` when ``async with``
exits, so a test never passes over a server bug.

**Telethon's class-level config cache.** ``TelegramBaseClient._get_dc`` stores the result of
``help.getConfig`` on the client *class* (``cls._config``) and never refreshes it, so a second
server in the same process would send other-DC downloads to the first server's (closed) ports.
The server therefore clears ``_config`` / ``_cdn_config`` on ``TelegramBaseClient`` and every
subclass when it starts, and :meth:`TelegramTestServer.client` builds clients of a per-server
subclass of the class you pass, so two live servers in one process never share that cache.
Clients you build yourself from your own class work too, as long as only one server is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import rsa
from telethon import TelegramClient
from telethon.client.telegrambaseclient import TelegramBaseClient
from telethon.crypto import AuthKey
from telethon.sessions import StringSession
from telethon.sessions.abstract import Session
from telethon.tl import types

from telethon_guard.testing import crypto
from telethon_guard.testing._types import AuthState, DcAddress, ListenerDown, TransportError
from telethon_guard.testing.connection import Connection
from telethon_guard.testing.context import ServerContext
from telethon_guard.testing.log import ServerLog
from telethon_guard.testing.transport import DEFAULT_MAX_SIZE
from telethon_guard.testing.updates import UpdatePusher
from telethon_guard.testing.world_delivery import Delivered
from telethon_guard.testing.world_messages import ChannelHistory
from telethon_guard.testing.world_state import UserRecord

C = TypeVar("C", bound=TelegramClient)

API_ID = 611335
API_HASH = "d524b414d21f4d37f08684c1df41ac9c"

TICK_SECONDS = 0.01
"""How often timed fault-script actions are polled while the plan has any (seconds)."""

CLIENT_DEFAULTS: dict[str, Any] = {
    "request_retries": 1,
    "connection_retries": 1,
    "retry_delay": 0.1,
    "timeout": 5,
}
"""Keyword arguments :meth:`TelegramTestServer.client` adds when the caller did not."""


class ServerInternalError(AssertionError):
    """Raised on ``async with`` exit (``strict=True``) when the server's own code failed.

    ``errors`` holds every exception collected; the first is the ``__cause__``. The clients
    got ``rpc_error 500 INTERNAL`` for them.
    """

    def __init__(self, errors: list[BaseException]) -> None:
        lines = "; ".join(f"{type(e).__name__}: {e}" for e in errors[:5])
        super().__init__(f"{len(errors)} internal error(s) in the test server: {lines}")
        self.errors = errors


def clear_config_cache() -> None:
    """Forget ``help.getConfig`` cached on ``TelegramBaseClient`` and all its subclasses."""
    stack: list[type] = [TelegramBaseClient]
    seen: set[type] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for attr in ("_config", "_cdn_config"):
            if attr in cls.__dict__:
                setattr(cls, attr, None)
        stack.extend(cls.__subclasses__())


def _sync_handler(world: Any) -> Callable[[Any], Any] | None:
    """``world.handle_sync`` if ``handle`` is the stock one that only calls it (no task needed)."""
    from telethon_guard.testing.world import World

    sync = getattr(world, "handle_sync", None)
    if sync is not None and isinstance(world, World) and type(world).handle is World.handle:
        return sync
    return None


MAX_DCS = 1000
"""Most DCs (listeners) one server opens; Telegram itself has 5 production DCs."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_arguments(*, dcs: Any, world_config: Any, faults: Any, host: Any, seed: Any,
                     world: Any, strict: Any, max_packet_size: Any, ports: Any,
                     rsa_key: Any) -> None:
    """Validate :class:`TelegramTestServer`'s arguments (``rsa_key``'s content is checked
    afterwards, by loading it).

    Raises:
        TypeError: wrong type, naming the argument.
        ValueError: out of range, naming the argument.
    """
    from telethon_guard.testing.faults import FaultPlan
    from telethon_guard.testing.world import WorldConfig

    if not _is_int(dcs):
        raise TypeError(f"dcs must be an int, got {type(dcs).__name__} {dcs!r}")
    if not 1 <= dcs <= MAX_DCS:
        raise ValueError(f"dcs must be between 1 and {MAX_DCS}, got {dcs!r}")
    if ports is not None:
        if isinstance(ports, (str, bytes)) or not isinstance(ports, (list, tuple)):
            raise TypeError(f"ports must be a list of ints (one per DC) or None, "
                            f"got {type(ports).__name__} {ports!r}")
        for i, port in enumerate(ports):
            if not _is_int(port):
                raise TypeError(f"ports[{i}] must be an int, got {type(port).__name__} {port!r}")
            if not 0 <= port <= 65535:
                raise ValueError(f"ports[{i}] must be between 0 and 65535 (0: the OS picks), "
                                 f"got {port!r}")
        if len(ports) != dcs:
            raise ValueError(f"ports must have one entry per DC ({dcs}), got {list(ports)!r}")
        fixed = [p for p in ports if p]
        if len(set(fixed)) != len(fixed):
            raise ValueError(f"ports must not repeat a fixed port, got {list(ports)!r}")
    if not isinstance(host, str):
        raise TypeError(f"host must be a str (an address to listen on), "
                        f"got {type(host).__name__} {host!r}")
    if not host.strip():
        raise ValueError("host must be a non-empty address, got an empty string")
    if not _is_int(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__} {strict!r}")
    if not _is_int(max_packet_size):
        raise TypeError(f"max_packet_size must be an int (bytes), "
                        f"got {type(max_packet_size).__name__} {max_packet_size!r}")
    if max_packet_size < 1024:
        raise ValueError(f"max_packet_size must be >= 1024 bytes, got {max_packet_size!r}")
    if rsa_key is not None and not isinstance(rsa_key, (rsa.PrivateKey, bytes, str)):
        raise TypeError(f"rsa_key must be an rsa.PrivateKey, PKCS#1 PEM bytes/str or None, "
                        f"got {type(rsa_key).__name__}")
    if faults is not None and not isinstance(faults, FaultPlan):
        raise TypeError(f"faults must be a FaultPlan or None, "
                        f"got {type(faults).__name__} {faults!r}")
    if world_config is not None and not isinstance(world_config, WorldConfig):
        raise TypeError(f"world_config must be a WorldConfig or None, "
                        f"got {type(world_config).__name__} {world_config!r}")
    if world is not None:
        if world_config is not None:
            raise ValueError("give either world or world_config, not both (world_config only "
                             "builds the default World)")
        missing = [name for name in ("set_dcs", "register_account", "handle")
                   if not callable(getattr(world, name, None))]
        if missing:
            raise TypeError(f"world must have set_dcs, register_account and async handle; "
                            f"{type(world).__name__} lacks {', '.join(missing)}")


class TelegramTestServer:
    """A Telegram for tests: MTProto 2.0 over TCP on ``host``, one listener per DC.

    Args:
        dcs: number of data centers (listeners), ids ``1..dcs``; at least 1.
        world_config: passed to ``World(world_config)`` when ``world`` is not given.
        faults: a ``FaultPlan`` (limits and fault injection); a new empty plan if ``None``.
            Mutable at runtime through ``server.faults``.
        host: address to listen on.
        seed: seeds the server's own randomness (salt); the fault plan has its own seed.
        rsa_key: the server's RSA private key (``rsa.PrivateKey`` or PKCS#1 PEM); by default
            one 2048-bit key per process, generated on the first key exchange.
        world: a ready world object (anything with ``set_dcs``, ``register_account`` and
            ``async handle(info)``) instead of building ``World(world_config)``.
        strict: raise :class:`ServerInternalError` on exit if the server's code (or a world
            handler) raised anything other than ``RpcErrorReply``.
        max_packet_size: largest accepted transport packet, bytes (2 MiB).
        ports: optional fixed ports, one per DC (default: 0 each, the OS picks).

    Raises:
        TypeError: an argument of the wrong type (at construction), naming the argument.
        ValueError: an argument out of range (at construction), naming the argument: ``dcs``
            < 1 or > 1000, a port outside ``0..65535``, ``len(ports) != dcs``, the same fixed
            port twice, an empty ``host``, ``max_packet_size`` < 1024, a bad ``rsa_key``, or
            both ``world`` and ``world_config``.
    """

    def __init__(
        self,
        *,
        dcs: int = 2,
        world_config: Any = None,
        faults: Any = None,
        host: str = "127.0.0.1",
        seed: int = 0,
        rsa_key: rsa.PrivateKey | bytes | str | None = None,
        world: Any = None,
        strict: bool = True,
        max_packet_size: int = DEFAULT_MAX_SIZE,
        ports: list[int] | None = None,
    ) -> None:
        _check_arguments(dcs=dcs, world_config=world_config, faults=faults, host=host,
                         seed=seed, world=world, strict=strict,
                         max_packet_size=max_packet_size, ports=ports, rsa_key=rsa_key)
        self._n_dcs = dcs
        self._ports = list(ports) if ports is not None else [0] * dcs
        self.host = host
        self.seed = seed
        self.strict = strict
        self.max_packet_size = max_packet_size
        self._fixed_rsa = crypto.load_rsa_key(rsa_key) if rsa_key is not None else None
        if world is None:
            from telethon_guard.testing.world import World

            world = World(world_config)
        self.world = world
        if faults is None:
            from telethon_guard.testing.faults import FaultPlan

            faults = FaultPlan(seed=seed)
        rng = random.Random(seed)
        self._ctx = ServerContext(
            salt=rng.getrandbits(63),
            world=world,
            sync_handle=_sync_handler(world),
            faults=faults,
            max_packet_size=max_packet_size,
            rsa_key=self._rsa_key,
            pq=crypto.small_pq(),
        )
        ctx = self._ctx
        self.log: ServerLog = ctx.log
        """Ground truth of what the server executed."""
        self.internal_errors: list[BaseException] = ctx.internal_errors
        self.stats: Counter[str] = ctx.stats
        """MTProto events: ``bad_server_salt``, ``new_session_created``, ``bad_msg_notification``,
        ``containers_received`` / ``containers_sent``, ``gzip_packed_received``."""
        self.salt = ctx.salt
        self.api_id = API_ID
        self.api_hash = API_HASH
        self.dcs: list[DcAddress] = []
        self._conns = ctx.conns
        self._conn_ids = itertools.count(1)
        self._servers: list[asyncio.base_events.Server] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client_classes: dict[type, type] = {}
        self._pusher = UpdatePusher(ctx)
        self._started = False

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> TelegramTestServer:
        """Bind the listeners, tell the world the DC addresses, start the fault clock."""
        if self._started:
            raise RuntimeError("server already started")
        self._started = True
        clear_config_cache()
        if self._fixed_rsa is not None:
            crypto.register_public_key(self._fixed_rsa)
        try:
            for dc_id in range(1, self._n_dcs + 1):
                srv = await asyncio.start_server(
                    self._make_handler(dc_id), self.host, self._ports[dc_id - 1]
                )
                port = srv.sockets[0].getsockname()[1]
                self._servers.append(srv)
                self.dcs.append(DcAddress(dc_id, self.host, port))
        except BaseException:
            # A later DC failed to bind (port in use, bad host): close the ones already bound.
            for srv in self._servers:
                srv.close()
            self._servers.clear()
            self.dcs.clear()
            raise
        self._ctx.dc_ids = [d.dc_id for d in self.dcs]
        self.world.set_dcs(list(self.dcs))
        set_sink = getattr(self.world, "set_update_sink", None)
        if callable(set_sink):
            set_sink(self._pusher.push, self._pusher.listeners)
        now = time.monotonic()
        if self.faults is not None and hasattr(self.faults, "start"):
            self.faults.start(now)
        self._loop = asyncio.get_running_loop()
        self._ticker = self._loop.create_task(self._tick())
        self._watch(self.faults)
        self._apply_due()  # a plan's rule due at start (a DC "down") holds once start() returns
        return self

    async def stop(self) -> None:
        """Close listeners and every connection; cancel in-flight request tasks."""
        if callable(getattr(self.faults, "watch", None)):
            self.faults.watch(None)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for srv in self._servers:
            srv.close()
        for conn in list(self._conns.values()):
            conn.close("server stopped", abort=True)
        pending = [*self._ctx.request_tasks, *self._handlers]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2)
        self._servers.clear()

    async def __aenter__(self) -> TelegramTestServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self.strict and self.internal_errors and exc_type is None:
            raise ServerInternalError(list(self.internal_errors)) from self.internal_errors[0]

    def dc(self, dc_id: int) -> DcAddress:
        """Address of DC ``dc_id``; raises ``KeyError`` if there is no such DC."""
        for d in self.dcs:
            if d.dc_id == dc_id:
                return d
        raise KeyError(f"no DC {dc_id} (server has {len(self.dcs)} DCs, started: {self._started})")

    # ---- sessions and clients ----------------------------------------------------------------

    def session(self, account: int | None = None, dc_id: int = 1) -> StringSession:
        """A ``StringSession`` with a fresh auth key already known to the server.

        The key is logged in as ``account`` (a new account when ``None``, via
        ``world.register_account``) on DC ``dc_id``. Each call returns a new session object
        and a new key; never share one session between two clients.
        """
        addr = self.dc(dc_id)
        user_id = self.world.register_account(account)
        auth_key = os.urandom(256)
        state = self._register_key(auth_key, dc_id)
        state.user_id = user_id
        session = StringSession()
        session.set_dc(dc_id, addr.host, addr.port)
        session.auth_key = AuthKey(auth_key)
        return session

    def empty_session(self, dc_id: int = 1) -> StringSession:
        """A ``StringSession`` pointing at DC ``dc_id`` with no auth key (full DH exchange)."""
        addr = self.dc(dc_id)
        session = StringSession()
        session.set_dc(dc_id, addr.host, addr.port)
        return session

    @overload
    def client_class(self) -> type[TelegramClient]: ...

    @overload
    def client_class(self, cls: type[C]) -> type[C]: ...

    def client_class(self, cls: type[TelegramClient] | None = None) -> type[TelegramClient]:
        """This server's private subclass of ``cls`` (default ``TelegramClient``).

        See the module docstring: it keeps Telethon's class-level config cache per server.
        """
        base = TelegramClient if cls is None else cls
        sub = self._client_classes.get(base)
        if sub is None:
            sub = type(base.__name__, (base,), {"_config": None, "_cdn_config": None,
                                                "__module__": base.__module__,
                                                "__qualname__": base.__qualname__})
            self._client_classes[base] = sub
        return sub

    @overload
    def client(
        self, cls: None = None, session: Session | str | None = None, **kwargs: Any
    ) -> TelegramClient: ...

    @overload
    def client(self, cls: type[C], session: Session | str | None = None, **kwargs: Any) -> C: ...

    def client(
        self,
        cls: type[TelegramClient] | None = None,
        session: Session | str | None = None,
        **kwargs: Any,
    ) -> TelegramClient:
        """A not-yet-connected client of (a per-server subclass of) ``cls``.

        ``cls`` is ``TelegramClient`` or any subclass (default ``TelegramClient``).
        ``session`` defaults to :meth:`session` (a new logged-in account on DC 1); a string
        session is parsed. ``api_id`` / ``api_hash`` are the server's; small retry and timeout
        defaults (:data:`CLIENT_DEFAULTS`) apply unless given. Every other keyword
        (``connection=``, ``receive_updates=``...) goes to the constructor unchanged.
        """
        if session is None:
            session = self.session()
        elif isinstance(session, str):
            session = StringSession(session)
        for key, value in CLIENT_DEFAULTS.items():
            kwargs.setdefault(key, value)
        sub = self.client_class(TelegramClient if cls is None else cls)
        return sub(session, self.api_id, self.api_hash, **kwargs)

    # ---- updates: new messages pushed like Telegram (see testing/updates.py) --------------------

    def _world_api(self, name: str) -> Any:
        fn = getattr(self.world, name, None)
        if not callable(fn):
            raise TypeError(f"this server's world ({type(self.world).__name__}) has no {name}(): "
                            f"pushing messages needs telethon_guard.testing.World")
        return fn

    def push_message(self, from_user: str | int | None, to_peer: str | int, text: str, *,
                     form: Literal["short", "full"] = "short") -> Delivered:
        """Store a new message ``from_user`` wrote in ``to_peer`` and push it to every
        account that receives it, like Telegram: private chats and the basic group ``group``
        go to each member account's common box (its next message id and pts), channels and
        megagroups (``news``, ``chat_a``..``chat_d``) take the channel's next pts.

        Args:
            from_user: the author: a username (``"alice"``) or a user id (an account's); may be
                ``None`` for a channel post.
            to_peer: a user (private chat), ``"group"``, a channel username, or a marked id.
            text: the message text (1..4096 characters).
            form: ``"short"``: ``updateShortMessage`` / ``updateShortChatMessage`` to common
                boxes; ``"full"``: ``updates`` with ``updateNewMessage``. Channels always get
                ``updates`` with ``updateNewChannelMessage``.

        Returns:
            :class:`~telethon_guard.testing.world.Delivered`: the message id and pts per
            account and how many connections the update was written to.

        Raises:
            UnknownPeerError: (a ``ValueError``) ``from_user`` or ``to_peer`` does not exist.
            ValueError: bad ``text`` or ``form``, a message to oneself, or no account
                involved; ``TypeError`` if the server runs a custom world without ``post``.

        Call it from the event loop running the server. Only connections of keys that called
        ``updates.getState`` / ``getDifference`` receive updates (Telethon does right after
        connecting); the sending account's own sessions get its outgoing copy too.
        """
        delivered: Delivered = self._world_api("post")(from_user, to_peer, text, push=True,
                                                        form=form)
        return delivered

    def make_gap(self, peer: str | int, count: int = 1, *,
                 from_user: str | int | None = None) -> list[Delivered]:
        """Store ``count`` messages in ``peer`` that take their pts but are never pushed: an
        update gap. The next pushed message of that box reveals it and the client fills it
        with ``updates.getDifference`` (private chats, the basic group) or
        ``updates.getChannelDifference`` (channels), each missed message exactly once.

        ``peer``: a channel (``"chat_a"``, ``"news"``...), ``"group"`` (a gap in every member
        account's box), or an account (a private chat: messages *to* it). ``from_user``: the
        author; default ``"alice"`` (``"bob"`` when ``peer`` is alice), none for broadcast
        channels.

        Raises:
            UnknownPeerError: (a ``ValueError``) no such channel, group, user or author.
            ValueError: ``count`` not an int in 1..100000, or ``peer`` is a user who is not
                an account (nobody's box would have the gap).
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
            raise ValueError(f"count must be an int in 1..100000, got {count!r}")
        post = self._world_api("post")
        target = self._world_api("resolve_peer")(peer)
        if from_user is None and not (isinstance(target, ChannelHistory)
                                      and not target.channel.megagroup):
            from_user = "bob" if getattr(target, "username", None) == "alice" else "alice"
        if isinstance(target, UserRecord) and target.id not in self.world.core.accounts:
            raise ValueError(f"{peer!r} is not an account: a private-chat gap needs the "
                             f"receiving account (server.session(user id) makes one)")
        return [post(from_user, peer, f"gap message {i + 1} of {count}", push=False)
                for i in range(count)]

    def push_too_long(self, account: str | int | None = None, *,
                      channel: str | int | None = None) -> int:
        """Push ``updatesTooLong`` to ``account`` (``None``: every account): the client calls
        ``updates.getDifference``. With ``channel``, push ``updateChannelTooLong`` for that
        channel instead: the client calls ``updates.getChannelDifference`` for it (if it
        already tracks the channel). Returns the connections written to.

        Raises:
            UnknownPeerError: (a ``ValueError``) unknown account or channel.
            ValueError: ``account`` names a user who is not an account, or ``channel`` is not
                a channel.
        """
        resolve = self._world_api("resolve_peer")
        core = self.world.core
        if account is None:
            users = sorted(core.accounts)
        else:
            user = resolve(account)
            if not isinstance(user, UserRecord) or user.id not in core.accounts:
                raise ValueError(f"{account!r} is not an account")
            users = [user.id]
        upd: Any = types.UpdatesTooLong()
        if channel is not None:
            hist = resolve(channel)
            if not isinstance(hist, ChannelHistory):
                raise ValueError(f"{channel!r} is not a channel")
            upd = types.Updates(
                updates=[types.UpdateChannelTooLong(channel_id=hist.channel.id, pts=hist.top)],
                users=[], chats=[hist.channel.to_tl()], date=datetime.now(timezone.utc), seq=0)
        return sum(self._pusher.push(uid, upd) for uid in users)

    # ---- shared state ------------------------------------------------------------------------

    @property
    def faults(self) -> Any:
        """The :class:`~telethon_guard.testing.faults.FaultPlan` consulted for every connection
        and request; replace or mutate it at runtime."""
        return self._ctx.faults

    @faults.setter
    def faults(self, plan: Any) -> None:
        old = self._ctx.faults
        if old is not plan and callable(getattr(old, "watch", None)):
            old.watch(None)
        self._ctx.faults = plan
        if self._ticker is not None:
            self._watch(plan)
            self._apply_due_soon()

    def _watch(self, plan: Any) -> None:
        if callable(getattr(plan, "watch", None)):
            plan.watch(self._apply_due_soon)

    def _apply_due_soon(self) -> None:
        """A rule was added at runtime: apply timed actions due now (``"down"`` closes the
        port) at once rather than at the next tick, so a connection opened right after
        ``faults.add(...)`` already meets the fault. From another thread: on the loop's next
        turn."""
        loop = self._loop
        if self._ticker is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._apply_due()
        else:
            loop.call_soon_threadsafe(self._apply_due)

    @property
    def _sync_handle(self) -> Callable[[Any], Any] | None:
        return self._ctx.sync_handle

    def _register_key(self, auth_key: bytes, dc_id: int) -> AuthState:
        return self._ctx.register_key(auth_key, dc_id)

    def auth_states(self) -> list[AuthState]:
        """Every auth key the server knows (pre-shared and exchanged)."""
        return [s for s, _ in self._ctx.keys.values()]

    def _rsa_key(self) -> rsa.PrivateKey:
        return self._fixed_rsa if self._fixed_rsa is not None else crypto.server_rsa_key()

    def _make_handler(
        self, dc_id: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                conn = Connection(self._ctx, next(self._conn_ids), dc_id, reader, writer)
                await conn.serve()
            except asyncio.CancelledError:
                # Only stop() cancels handlers. Ending normally keeps asyncio's stream callback
                # from logging "Exception in callback ... CancelledError".
                pass
            finally:
                self._handlers.discard(task)

        return handler

    def _listener_down(self, dc_id: int | None, seconds: float | None) -> None:
        """Close the listening socket of DC ``dc_id`` (``None``: every DC) so new connections
        get ECONNREFUSED; listen again on the same port after ``seconds`` (``None``: never)."""
        loop = asyncio.get_running_loop()
        for i, dc in enumerate(self.dcs):
            if dc_id is None or dc.dc_id == dc_id:
                self._servers[i].close()
                if seconds is not None:
                    loop.call_later(seconds, self._relisten, i)

    def _relisten(self, i: int) -> None:
        if self._ticker is None or self._servers[i].is_serving():
            return  # stopped meanwhile, or already listening again

        async def reopen() -> None:
            dc = self.dcs[i]
            try:
                self._servers[i] = await asyncio.start_server(
                    self._make_handler(dc.dc_id), dc.host, dc.port)
            except Exception as e:  # the port was taken meanwhile
                self._ctx.internal_error(e)

        task = asyncio.get_running_loop().create_task(reopen())
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _tick(self) -> None:
        """Apply timed fault-script actions (``faults.due(now)``) to live connections."""
        while True:
            faults = self.faults
            if faults is None or not getattr(faults, "has_timed", False):
                await asyncio.sleep(0.1)
                continue
            await asyncio.sleep(TICK_SECONDS)
            self._apply_due()

    def _apply_due(self) -> None:
        """Apply the plan's timed actions due now to the listeners and live connections."""
        faults = self.faults
        if self._ticker is None or faults is None or not getattr(faults, "has_timed", False):
            return
        try:
            due = faults.due(time.monotonic())
            for dc_id, action in due:
                if isinstance(action, ListenerDown):
                    self._listener_down(dc_id, action.seconds)
                    continue
                if isinstance(action, TransportError) and action.refuse_seconds > 0:
                    self._ctx.start_refusing(dc_id, action)
                for conn in list(self._conns.values()):
                    if dc_id is None or conn.dc_id == dc_id:
                        conn.apply(action)
        except Exception as e:
            self._ctx.internal_error(e)
