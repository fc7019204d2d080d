"""The guard pipeline every MTProto request passes through: the whole request path.

::

    Pipeline.invoke(call, send)            outcome counts, RequestFinished, DeadlineExceeded event
      -> DeadlineLayer     (deadline.py)   fill call.deadline_at / budget; fail if already passed
      -> SharedAdmit       (shared_admit.py) Redis only: breaker, ledger and limiter decided in
                                           ONE round trip, the answer left on call.admitted
                                           for the three layers below (chosen at construction)
      -> CircuitBreaker    (breaker.py)    fail fast while OPEN; one HALF_OPEN probe
      -> FloodLedger       (flood.py)      wait out / fail fast on recorded FLOOD_WAITs; record
                                           server FLOOD_*_WAITs and wait-and-retry when they fit
      -> TransferSlots     (transfer_slots.py) file parts in flight per (account, method),
                                           an AIMD window (slow start, halved on a flood)
                                           (only when ``transfer_concurrency`` is set)
      -> RateLimitLayer    (limiter.py)    wait for a slot in every window (only when limits or
                                           adaptive pacing are configured)
      -> RetryPolicy       (retry.py)      exponential backoff with full jitter, inside the deadline
      -> Attempt.run       (attempt.py)    ONE network attempt: timers, classification, breaker
                                           verdict, typed transport errors

A difference request of Telethon's update loop (``call.update_loop`` set) runs through
:attr:`Pipeline.update_layers` instead (update_path.py): UpdatePath (never wait; errors the
loop tolerates; the channel's difference re-begun when the wait ends) -> deadline -> breaker ->
flood ledger -> one attempt. No limiter wait, no retry backoff: sleeping there stalls every chat.

:attr:`Pipeline.layers` is that list, in that order, and it is what runs: the layers are
composed ONCE at construction (:meth:`Pipeline.compose`). Each layer has one entry point,
``handle(call, call_next)`` (like gotd's middlewares / mtcute's network middlewares), returning
an awaitable. A layer whose cheap check passes synchronously returns ``call_next(call)`` itself
(no coroutine frame of its own: the deadline, the breaker on local storage, the limiter when
the slot is free now); otherwise it returns its own coroutine, which waits, fails fast or
retries. The per-call object is :class:`~telethon_guard.call.CallInfo`.

The fast path (:meth:`Pipeline.fuse`, run by :meth:`Pipeline.invoke`) is the same layers,
in the same order, with the nesting flattened into one coroutine. Each layer's ``handle`` is
split into the pieces it is made of (``handle`` itself runs them):

* ``enter(call, rest)``: the layer's synchronous check; ``None`` = "passes now, nothing to
  wait for" (deadline filled, breaker CLOSED, nothing blocked in the flood ledger, the
  limiter's slot free now and taken, no verdict yet for the retry policy); otherwise the
  awaitable ``handle`` would return (it waits, probes or fails fast) around ``rest``, the
  composed chain of the layers after it. May raise (fail fast).
* ``on_success(call)`` (the flood ledger): the bookkeeping ``handle`` does after
  ``call_next`` returned.
* ``recover(call, exc, rest)`` (the flood ledger, the retry policy): what ``handle`` does
  after its first ``call_next`` raised ``exc``: wait and go on with ``handle`` (a flood wait
  that fits, a retry after backoff), or raise.

So a call that passes every check runs ``enter`` of each layer in order, ONE attempt
(:meth:`Attempt.run`) and the ``on_success`` of the layers around it, inside
:meth:`Pipeline.invoke`'s own frame; the first ``enter`` that does not pass hands the call to
that layer's own coroutine and the composed chain after it; an error of the attempt is given
to the ``recover`` of the layers around it, innermost first, as the exception would travel
through their ``handle`` frames. tests/guard/test_guard_pipeline.py checks that both give the
same results, events, breaker and ledger state, and which layers run.

The straight lane (lane.py, ``_client_call.lane_call``) is the common case of a guarded
client's ``client(request)`` without this class's entry points: a call that no layer would stop
has the layers' work done inline in one coroutine frame; a call it cannot admit before sending
runs :meth:`Pipeline.invoke`, and an attempt of it that raised continues in
:meth:`Pipeline.resume` (:meth:`Attempt.failed <telethon_guard.attempt.Attempt.failed>`, then
the ``recover`` of the layers around the attempt, as in the fast path above).
tests/guard/test_guard_lane.py checks that the lane gives what :meth:`invoke` gives.

Cancellation: a caller cancelling its task gets ``CancelledError`` unchanged and everything the
call held is released (limiter slot given back, breaker probe freed). Telethon cancelling the
request on ``disconnect()`` is a disconnect (see :mod:`telethon_guard.attempt`).

Re-entrant: nothing is locked across ``send()`` except the breaker's HALF_OPEN probe, which is
re-entrant per task, so calls nested on one task (entity resolution, DC switch) never deadlock.

Network budget (:func:`~telethon_guard.network_budget.network_budget`: ``min(attempt_timeout or 1 s,
10 % of the call's deadline budget)``): an attempt that would start with less time than that
before the deadline (after a limiter, flood or backoff wait) is not sent: the call fails with
``DeadlineExceeded`` at once and the breaker is told nothing; the limiter refuses such a slot
up front and the retry policy stops (raising the real error) instead of backing off into it. A
deadline timeout during an attempt counts as a breaker failure only when the attempt had at
least that budget.

``observe_only``: the limiter, the flood-ledger pre-check and the breaker's fail-fast only
report (``ObservedDelay`` events) instead of delaying or failing. Retry of transient errors,
waiting out server FLOOD_WAITs that fit, and the deadline stay active: they replace Telethon's own
sleeping/retrying, which is switched off underneath.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from .attempt import Attempt
from .breaker import CircuitBreaker
from .call import CallInfo
from .clock import Clock, MonotonicClock
from .config import GuardConfig
from .deadline import DeadlineLayer
from .errors import DeadlineExceeded
from .events import (
    EVENT_ROUTE,
    EventBus,
    RequestFinished,
    RoutedEvents,
    redact_peer,
    request_outcome,
)
from .flood import FloodLedger
from .keys import account_key
from .lane import Lane
from .limiter import LimitKeys, RateLimiter, RateLimitLayer
from .network_budget import network_budget
from .retry import RetryPolicy
from .shared_admit import SharedAdmit
from .storage import AdmitStorage, GuardStorage, open_storage, stats_view
from .transfer_slots import TransferSlots
from .update_path import UpdatePath

T = TypeVar("T")

Next = Callable[[CallInfo], Awaitable[Any]]


class Layer(Protocol):
    """One pipeline layer: ``handle(call, call_next)`` returns an awaitable of the call's
    result; ``call_next(call)`` runs the rest of the pipeline. Optional, for the fast path
    (:meth:`Pipeline.fuse`): ``enter(call, call_next) -> Awaitable | None``,
    ``on_success(call)``, ``recover(call, exc, call_next) -> Awaitable`` (module docstring).
    A layer without ``enter`` always runs its ``handle`` (the fast path ends there)."""

    def handle(self, call: CallInfo, call_next: Next) -> Awaitable[Any]: ...


Enter = Callable[[CallInfo, Next], "Awaitable[Any] | None"]


class FastPath:
    """The fast path of a layer list (:meth:`Pipeline.fuse`), read by :meth:`Pipeline.invoke`.

    ``layers``: the layers, outermost first; ``rests[i]``: the composed chain of the layers
    after ``layers[i]`` (links shared with :meth:`Pipeline.compose`'s chain, nothing built
    twice); ``entries``: ``(enter, rest)`` per layer, in order; ``attempt``: the terminal
    step; ``depth``: the number of layers; ``succeed``: the ``on_success`` of every layer that
    has one, innermost first (what runs after an attempt that every ``enter`` let through)."""

    __slots__ = ("attempt", "depth", "entries", "layers", "rests", "succeed")

    def __init__(self, layers: Sequence[Layer], rests: Sequence[Next], attempt: Next) -> None:
        self.layers = tuple(layers)
        self.rests = tuple(rests)
        self.attempt = attempt
        self.entries: tuple[tuple[Enter, Next], ...] = tuple(
            (_enter_of(layer), rest) for layer, rest in zip(layers, rests, strict=True))
        self.depth = len(self.layers)  # every enter passed
        self.succeed = self.on_success_of(self.depth)

    def on_success_of(self, depth: int) -> tuple[Callable[[CallInfo], None], ...]:
        """The ``on_success`` of the layers before ``depth`` that have one, innermost
        first."""
        return tuple(lay.on_success for lay in reversed(self.layers[:depth])
                     if hasattr(lay, "on_success"))

    def around(self, depth: int) -> list[tuple[Layer, Next]]:
        """``(layer, rest)`` of the layers before ``depth`` that have a ``recover``,
        innermost first (the ``handle`` frames an exception raised at ``depth`` travels
        out through)."""
        return [(self.layers[i], self.rests[i]) for i in reversed(range(depth))
                if hasattr(self.layers[i], "recover")]


def _enter_of(layer: Layer) -> Enter:
    enter = getattr(layer, "enter", None)
    if enter is not None:
        return enter
    return layer.handle  # no synchronous check: its handle is the rest of the call


def limits_configured(config: GuardConfig) -> bool:
    """Whether any limiter window can apply to a call: configured limits or adaptive pacing
    (without them the rate limiter is left out of the chain)."""
    return bool(config.rate_limits or config.method_limits or config.send_limits
                or config.peer_limits_private or config.peer_limits_group
                or config.adaptive_pacing)


class _Link:
    """``call -> layer.handle(call, call_next)``: one layer bound to the rest of the chain.

    A slotted object (~48 bytes) rather than a closure over the bound ``handle`` (~330 bytes
    with its cells and bound method): every client builds about six, and they are called only
    when a layer takes a call over (waits, probes, retries) or on the composed chain, never
    on the fast path (:meth:`Pipeline.invoke` calls ``enter``)."""

    __slots__ = ("call_next", "layer")

    def __init__(self, layer: Layer, call_next: Next) -> None:
        self.layer = layer
        self.call_next = call_next

    def __call__(self, call: CallInfo) -> Awaitable[Any]:
        return self.layer.handle(call, self.call_next)

    def __repr__(self) -> str:
        return f"link({type(self.layer).__qualname__}.handle)"


class GuardLayers:
    """The layers of a pipeline and what is composed from them: built once per client, or
    once for every client of one ``GuardConfig`` and local storage (:func:`shared_layers`).

    Everything stateful in them is keyed by account (``acct:<a>/...`` storage keys, the pacer
    by ``(account, method)``, the transfer windows by ``(account, method)``), as it must be for
    a storage shared by processes, so clients of different accounts sharing them stay
    isolated. ``events``: the bus the layers emit on (:class:`~telethon_guard.events.
    RoutedEvents` when shared)."""

    __slots__ = ("__weakref__", "_chain", "_fast", "admit", "attempt", "breaker", "clock",
                 "config", "deadline", "events", "layers", "ledger", "limit_keys", "limiter",
                 "rate_layer", "retry", "storage", "transfers")

    def __init__(self, config: GuardConfig, storage: GuardStorage, clock: Clock,
                 events: Any) -> None:
        self.config = config
        self.storage = storage
        self.clock = clock
        self.events = events
        redact = not config.log_peer_ids
        self.deadline = DeadlineLayer(config, clock, events)
        self.breaker = CircuitBreaker(config, storage, clock, events)
        self.ledger = FloodLedger(config, storage, clock, events)
        self.limiter = RateLimiter(storage, clock, events,
                                   observe=config.observe_only, redact=redact)
        pacer = self.ledger.pacer
        self.limit_keys = LimitKeys(config, pacer.window if pacer is not None else None)
        self.rate_layer = RateLimitLayer(self.limiter, self.limit_keys)
        self.retry = RetryPolicy(config, clock, events, breaker=self.breaker)
        self.attempt = Attempt(clock, config.attempt_timeout, self.breaker)
        self.transfers = TransferSlots(config, self.ledger, clock)
        layers: list[Layer] = [self.deadline, self.breaker, self.ledger]
        self.admit: SharedAdmit | None = None
        if (not storage.is_local and isinstance(storage, AdmitStorage)
                and not config.observe_only):
            self.admit = SharedAdmit(storage, self.breaker.lease,
                                     self.limit_keys.specs if limits_configured(config)
                                     else None, pacer)
            layers.insert(1, self.admit)
        if config.transfer_concurrency is not None:
            layers.append(self.transfers)  # file parts in flight per (account, method)
        if limits_configured(config):
            layers.append(self.rate_layer)
        layers.append(self.retry)
        self.layers: tuple[Layer, ...] = tuple(layers)
        self._fast: FastPath | None = _fuse(self.attempt, self.layers)
        self._chain: Next = (_suffixes(self.attempt, self.layers)[0]
                             if self._fast is None or not self.layers
                             else _Link(self.layers[0], self._fast.rests[0]))


def _suffixes(attempt: Attempt, layers: Sequence[Layer]) -> list[Next]:
    """``[compose(layers[i:]) for i in 0..len(layers)]``, sharing their links."""
    chains: list[Next] = [attempt.run]
    for layer in reversed(layers):
        chains.append(_Link(layer, chains[-1]))
    chains.reverse()
    return chains


def _fuse(attempt: Attempt, layers: Sequence[Layer]) -> FastPath | None:
    if layers and not hasattr(layers[0], "enter"):
        return None
    return FastPath(layers, _suffixes(attempt, layers)[1:], attempt.run)


_SHARED: dict[int, weakref.WeakSet[GuardLayers]] = {}
"""Live shared layers by ``id`` of their storage (each holds its storage, so the id stays
valid while any of them lives)."""


def shared_layers(config: GuardConfig) -> GuardLayers | None:
    """The layers shared by every pipeline built from ``config`` (or a config equal to it)
    without a storage, events or clock of its own, when ``config.storage`` is a local storage
    object (:class:`~telethon_guard.storage.memory.MemoryStorage`, e.g. a pool's
    ``pool.storage``); ``None`` otherwise (each client builds its own).

    Why: a guard's layers and their composed chains are ~3-5 KiB per client, and everything
    stateful in them is keyed by account already (:class:`GuardLayers`). What stays per client
    is the :class:`Pipeline`: its event bus (the shared layers emit through
    :class:`~telethon_guard.events.RoutedEvents` to the bus of the client whose call runs), its
    outcome counts, its update path, and its ``stats()`` (``limiter_queue`` counts its own
    waiting calls, ``paces`` the accounts it called for). The layers live while a pipeline
    uses them."""
    spec = config.storage
    if spec is None or isinstance(spec, str) or getattr(spec, "is_local", False) is not True:
        return None
    if not isinstance(spec, GuardStorage):
        return None
    live = _SHARED.get(id(spec))
    if live is None:
        live = _SHARED[id(spec)] = weakref.WeakSet()
    for layers in live:
        if layers.storage is spec and (layers.config is config or layers.config == config):
            return layers
    if len(_SHARED) > 64:  # forget storages whose layers are gone
        for key in [k for k, v in _SHARED.items() if not v and k != id(spec)]:
            del _SHARED[key]
    fallback = EventBus(config.on_event, redact=not config.log_peer_ids)
    layers = GuardLayers(config, spec, MonotonicClock(), RoutedEvents(fallback))
    live.add(layers)
    return layers


class Pipeline:
    """Composes the guard layers for one client.

    ``config``: the :class:`GuardConfig`. ``storage``: a
    :class:`~telethon_guard.storage.GuardStorage` (``None``: built from ``config.storage``,
    in memory by default, on the pipeline's clock). ``events``: the :class:`EventBus`
    (``None``: one delivering to ``config.on_event`` and the ``telethon_guard`` logger).
    ``clock``: the guard clock (``None``: :class:`MonotonicClock`, i.e. ``time.monotonic``;
    ``call.deadline_at`` must be on this clock).

    With none of ``storage``, ``events`` and ``clock`` given and ``config.storage`` a local
    storage object, the layers are shared with the other pipelines of that config
    (:func:`shared_layers`; :attr:`shared` is ``True``).
    """

    def __init__(self, config: GuardConfig, storage: GuardStorage | None = None,
                 events: EventBus | None = None, clock: Clock | None = None) -> None:
        self.config = config
        self.events: EventBus = (events if events is not None
                                 else EventBus(config.on_event, redact=not config.log_peer_ids))
        self._owns_storage = storage is None
        built = (shared_layers(config) if storage is None and events is None and clock is None
                 else None)
        # Instance attributes: keep them under 30 (27 now). Past CPython's shared-key limit
        # the instance dict of every pipeline becomes a ~1.5 KiB table (was ~0.3 KiB).
        self._accounts: tuple[str, ...] = ()  # accounts called for (shared layers: stats)
        if built is not None:
            self.clock: Clock = built.clock
            self.storage: GuardStorage = built.storage
        else:
            self.clock = clock if clock is not None else MonotonicClock()
            self.storage = (
                storage if storage is not None
                else open_storage(config.storage, clock=self.clock,
                                  max_peer_keys=config.max_peer_keys,
                                  storage_fallback=config.storage_fallback,
                                  timeout=config.storage_timeout)
            )
        bind_events = getattr(self.storage, "bind_events", None)
        if callable(bind_events):  # shared storage reports StorageFallback on this bus
            bind_events(self.events)
        redact = not config.log_peer_ids
        # The shared layers (their pipelines keep them alive), else None: see shared.
        self._built = built
        if built is None:
            built = GuardLayers(config, self.storage, self.clock, self.events)
        self.deadline = built.deadline
        self.breaker = built.breaker
        self.ledger = built.ledger
        self.limiter = built.limiter
        self.limit_keys = built.limit_keys
        self.rate_layer = built.rate_layer
        self.retry = built.retry
        self.attempt = built.attempt
        self.transfers = built.transfers
        self.admit: SharedAdmit | None = built.admit
        """The shared-storage admission layer (shared_admit.py), or ``None``."""
        self.layers: tuple[Layer, ...] = built.layers
        """The layers, outermost first: the order in which they run (then :attr:`attempt`)."""
        self._fast: FastPath | None = built._fast
        self._chain = built._chain
        """What :meth:`invoke` runs (the same layers; ``None``: the composed chain)."""
        self.update_path = UpdatePath(self.clock)
        self.update_layers: tuple[Layer, ...] = (
            self.update_path, self.deadline, self.breaker, self.ledger)
        """The layers of a difference request made by Telethon's update loop (no waiting)."""
        # Composed on the first difference request (a client without updates never makes
        # one: four links, ~1.4 KiB, saved per client).
        self._update_chain: Next | None = None
        self._outcomes: dict[str, dict[str, int]] = {}
        self._redact = redact
        self.outcomes = self._outcomes
        """``{method: {outcome: count}}``, the live table behind ``stats()["calls"]``."""
        self.lane: Lane | None = Lane.of(self) if self._fast is not None else None
        """The straight lane (lane.py): the common case's precomputed state, or ``None``."""

    @property
    def shared(self) -> bool:
        """``True`` when the layers are shared with other clients (:func:`shared_layers`)."""
        return self._built is not None

    async def close_storage_connections(self) -> None:
        """Close the connections of a storage this pipeline opened itself from
        ``config.storage`` (e.g. a Redis URL): the main client's ``disconnect()`` calls it. The
        storage connects again on its next operation; a storage passed in is left alone."""
        disconnect = getattr(self.storage, "disconnect", None)
        if self._owns_storage and callable(disconnect):
            await disconnect()

    def compose(self, layers: Sequence[Layer]) -> Next:
        """``layers`` (outermost first) composed around :meth:`Attempt.run`: a function
        ``chain(call)`` returning the awaitable result. :meth:`invoke` runs
        ``compose(self.layers)`` (built once at construction) when the fast path hands over
        or there is none."""
        return self._suffixes(layers)[0]

    def _suffixes(self, layers: Sequence[Layer]) -> list[Next]:
        """``[compose(layers[i:]) for i in 0..len(layers)]``, sharing their links."""
        return _suffixes(self.attempt, layers)

    def fuse(self, layers: Sequence[Layer]) -> FastPath | None:
        """The fast path of ``layers`` (outermost first) around :meth:`Attempt.run`: the same
        layer objects' ``enter`` / ``on_success`` / ``recover`` (module docstring), each
        ``rest`` being ``compose(layers[i + 1:])``. ``None`` when the first layer has no
        ``enter`` (nothing to flatten: :meth:`invoke` runs the composed chain)."""
        return _fuse(self.attempt, layers)

    def _compose_update_chain(self) -> Next:
        chain = self._update_chain = self.compose(self.update_layers)
        return chain

    def stats(self) -> dict[str, Any]:
        """A snapshot for ``client.guard.stats()``: ``calls`` (``{method: {outcome: count}}``,
        outcome one of :data:`~telethon_guard.events.OUTCOMES`, as in the ``RequestFinished``
        events: ``"ok"``, ``"flood_wait"``, ``"deadline"``, ``"rpc_error"``...), ``breakers``
        (``{key: state}``),
        ``blocked`` (flood scopes with seconds left), ``limiter_queue`` (calls waiting for a
        slot), ``paces`` (``{method: (count, period)}`` learned by adaptive pacing). Peer ids are
        redacted unless ``log_peer_ids``. Breakers and blocks come from the storage's
        :class:`~telethon_guard.storage.StatsView` (shared storage: as this process last
        learned them from it)."""
        local = stats_view(self.storage)
        breakers: dict[str, str] = {}
        blocked: dict[str, float] = {}
        if local is not None:
            for key in local.breaker_keys():
                breakers[key] = local.breaker_state_sync(key).state
            scopes = local.flood_scopes()
            blocked = {redact_peer(k) if self._redact else k: v for k, v in scopes.items()}
        paces: dict[str, tuple[int, float]] = {}
        pacer = self.ledger.pacer
        if pacer is not None:
            paces = pacer.learned()
        queue = self.limiter.queue_length
        if self._built is not None:  # this client's: its waiting calls, accounts called for
            queue = self.limiter.queue_length_of(self.events)
            accounts = self._accounts
            paces = {k: v for k, v in paces.items() if k.split("/", 1)[0] in accounts}
            # The shared storage holds every client's breakers and blocks: keep this client's
            # accounts' (as pool_entry.own_stats does for clients sharing only a storage).
            own = tuple(account_key(a) + "/" for a in accounts)
            breakers = {k: v for k, v in breakers.items() if k.startswith(own)}
            blocked = {k: v for k, v in blocked.items() if k.startswith(own)}
        return {
            "calls": {m: dict(c) for m, c in self._outcomes.items()},
            "breakers": breakers,
            "blocked": blocked,
            "limiter_queue": queue,
            "paces": paces,
        }

    def _count(self, method: str, outcome: str) -> None:
        per = self._outcomes.get(method)
        if per is None:
            if len(self._outcomes) >= 1024:  # bounded: TL has ~700 methods
                method = "other"
                per = self._outcomes.setdefault(method, {})
            else:
                per = self._outcomes[method] = {}
        per[outcome] = per.get(outcome, 0) + 1

    async def invoke(self, call: CallInfo, send: Callable[[], Awaitable[T]]) -> T:
        """Run ``send()`` (one network attempt of ``call.request``, raising what Telethon raises)
        through every layer and return its result.

        Raises the real last error when retries end (``GuardConnectionError`` from a
        disconnect, ``TransportFloodError`` from a bare transport -429), ``FloodWaitBlocked`` /
        ``SlowModeBlocked`` / ``FloodPremiumBlocked`` when a flood wait (or the wait of a
        learned adaptive pace) does not fit,
        ``CircuitOpenError`` while the breaker is OPEN, ``DeadlineExceeded`` when the deadline
        ends a wait or the network attempt, ``MayHaveRunError`` when an attempt of a call that
        is not idempotent timed out, ``AlreadyDelivered`` for RANDOM_ID_DUPLICATE,
        ``AuthKeyInvalidError`` for transport -404, and any other Telethon error unchanged.
        """
        call.send = send
        started = self.clock.now() if self.events.wants_request_events else None
        result: T
        route = self._route(call) if self._built is not None else None
        try:
            fast = self._fast
            if fast is None or call.update_loop is not None:
                if call.update_loop is None:
                    chain = self._chain
                else:
                    chain = self._update_chain or self._compose_update_chain()
                result = await chain(call)
            else:  # the fast path (module docstring): enter each layer, one attempt
                depth = 0
                try:
                    for enter, rest in fast.entries:
                        inner = enter(call, rest)
                        if inner is not None:  # this layer waits / probes / fails: its own
                            break
                        depth += 1
                    else:
                        inner = fast.attempt(call)
                    result = await inner
                except Exception as exc:  # as it travels out through the layers' handle
                    result = await self._unwind(call, exc, fast, depth)
                else:
                    for on_success in (fast.succeed if depth == fast.depth
                                       else fast.on_success_of(depth)):
                        on_success(call)
        except BaseException as exc:
            self._failed(call, exc, started)
            raise
        finally:
            if route is not None:
                EVENT_ROUTE.reset(route)
        per = self._outcomes.get(call.method)  # _count(call.method, "ok"), inline
        if per is not None:
            per["ok"] = per.get("ok", 0) + 1
        else:
            self._count(call.method, "ok")
        if started is not None:
            self._finished(call, started, None)
        return result

    async def resume(self, call: CallInfo, exc: BaseException, fired: bool,
                     task: asyncio.Task[Any] | None, now: float, started: float | None) -> Any:
        """Go on with a call of the straight lane (lane.py) whose first attempt, started at
        clock time ``now``, raised ``exc`` (``fired``: its timer had fired and cancelled
        ``task``): from there exactly what :meth:`invoke` does after that attempt raised
        (the attempt's classification and breaker verdict, :meth:`_unwind` through the
        layers' ``recover``, the outcome count, ``RequestFinished`` when ``started`` is not
        ``None``, the ``DeadlineExceeded`` event). ``call``: :meth:`Lane.call_of`."""
        fast = self._fast
        assert fast is not None
        lane = self.lane
        assert lane is not None
        when = None if lane.length is None else now + lane.length
        floor = 0.0
        if call.deadline_at is not None:
            floor = network_budget(call.budget or 0.0, self.config.attempt_timeout)
        result: Any
        route = self._route(call) if self._built is not None else None
        try:
            try:
                await self.attempt.failed(call, exc, fired, task, when, now, lane.by_deadline,
                                          floor)
            except Exception as e:
                result = await self._unwind(call, e, fast, fast.depth)
        except BaseException as e:
            self._failed(call, e, started)
            raise
        finally:
            if route is not None:
                EVENT_ROUTE.reset(route)
        self._count(call.method, "ok")
        if started is not None:
            self._finished(call, started, None)
        return result

    def _route(self, call: CallInfo) -> Any:
        """Shared layers (:attr:`shared`): their events go to this client's bus while the
        call runs (:data:`~telethon_guard.events.EVENT_ROUTE`; returns the token to reset) and
        ``call.account`` is remembered for ``stats()``."""
        if call.account not in self._accounts:
            self._accounts += (call.account,)
        return EVENT_ROUTE.set(self.events)

    def _failed(self, call: CallInfo, exc: BaseException, started: float | None) -> None:
        """The bookkeeping of a call that ends with ``exc`` (:meth:`invoke`, :meth:`resume`):
        the ``DeadlineExceeded`` event, the outcome count, ``RequestFinished`` when
        ``started`` (clock time) is not ``None``."""
        if isinstance(exc, DeadlineExceeded):
            self.deadline.report(call)
        self._count(call.method, request_outcome(exc))
        if started is not None:
            self._finished(call, started, exc)

    def note_account(self, account: str) -> None:
        """Remember that this client called for ``account`` (shared layers: ``stats()``)."""
        if account not in self._accounts:
            self._accounts += (account,)

    def count(self, method: str, outcome: str) -> None:
        """Count one call of ``method`` that ended with ``outcome`` (``stats()["calls"]``)."""
        self._count(method, outcome)

    def finished(self, method: str, started: float, attempts: int,
                 account: str | None) -> None:
        """Emit ``RequestFinished`` for a call of ``method`` that succeeded after
        ``attempts`` attempts, started at clock time ``started``."""
        self.events.emit(RequestFinished(
            method, "ok", max(0.0, self.clock.now() - started), "", attempts, account))

    async def _unwind(self, call: CallInfo, exc: Exception, fast: FastPath, depth: int) -> Any:
        """The fast path's error: ``exc`` raised inside the ``depth`` layers that passed
        their ``enter``. Each of them with a ``recover`` (innermost first) gets it, as its
        ``handle`` frame would: it retries / waits and goes on (then the ``on_success`` of
        the layers outside it), or raises, and the next one out gets that."""
        for layer, rest in fast.around(depth):
            try:
                result = await layer.recover(call, exc, rest)  # type: ignore[attr-defined]
            except Exception as e:
                exc = e
                continue
            for on_success in fast.on_success_of(fast.layers.index(layer)):
                on_success(call)
            return result
        raise exc

    def _finished(self, call: CallInfo, started: float, exc: BaseException | None) -> None:
        self.events.emit(RequestFinished(
            call.method, request_outcome(exc), max(0.0, self.clock.now() - started),
            "" if exc is None else type(exc).__name__, call.attempt, call.account))


__all__ = ["DeadlineLayer", "FastPath", "Layer", "Pipeline", "limits_configured"]
