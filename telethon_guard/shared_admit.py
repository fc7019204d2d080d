"""One round trip per admitted call on shared storage: the admission step of Redis.

On shared storage each layer's own question is a network round trip: the breaker's acquire,
the ledger's check of every flood scope, the limiter's reservation, the breaker's success
record: up to four per call. :class:`SharedAdmit` asks them all at once.

The choice (a Redis-only fusion decided at construction, the layers' shared halves reading
its answer): the pipeline inserts this layer right after the deadline only when the storage
is shared and implements :class:`~telethon_guard.storage.AdmitStorage` (Redis), and not in
``observe_only`` mode. It computes what the three layers
below would ask (the breaker key, the ledger's scopes, the limiter's keys) and asks the
storage ONE question, :meth:`~telethon_guard.storage.AdmitStorage.admit` (one Lua script),
leaving the answer on the call (:class:`Admitted`, ``call.admitted``). The layers stay where
they are and stay readable: each one's shared half takes its pre-decided answer when there is
one (breaker: the acquire decision; ledger: "nothing blocked" on its first check; limiter: the
reservation) and asks the storage itself otherwise. The breaker skips recording a success
when the breaker was CLOSED without failures at admission (nothing changes). So a call
admitted at once costs one round trip; it costs more only when it must wait (a flood block,
a limiter slot later than now, a HALF_OPEN probe) or reports an outcome that changes state
(a failure, a success after failures, a FLOOD_WAIT). Local storage never gets this layer: its
decisions cost no round trip.

A file transfer's limiter slot is not reserved at admission (the transfer-slot layer may make
it wait between the admission and the limiter: the slot would be stale); the limiter reserves
it itself. Keys of several accounts in one call (a login flood key is per bot token / phone)
cannot be one cluster slot: such a call skips the admission and the layers ask one by one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .call import CallInfo
from .flood import scope_key, scopes_of
from .keys import breaker_key
from .pacing import AdaptivePacer
from .shared_pace import PaceStorage, SharedPaces
from .storage import Admission, AdmitStorage, LimitSpec

Next = Callable[[CallInfo], Awaitable[Any]]


class Admitted:
    """The admission of one call (``call.admitted``), consumed once by each layer.

    ``decision``: the breaker's acquire decision; ``flood_clear``: ``True`` until the ledger's
    first check (no scope of the call was blocked at admission); ``reservation`` and
    ``specs``: the limiter's slot (``None`` once taken, or when none was reserved); ``clean``:
    the breaker was CLOSED without failures and no failure was recorded since (a success then
    changes nothing and is not written)."""

    __slots__ = ("clean", "decision", "flood_clear", "reservation", "specs")

    def __init__(self, a: Admission, specs: Sequence[LimitSpec]) -> None:
        d = a.breaker
        self.decision = d
        rejected = d.decision == "reject"
        self.flood_clear = not rejected and a.flood_index < 0
        self.reservation: tuple[float, Any] | None = (
            None if a.reservation is None else (a.reservation.delay, a.reservation.token))
        self.specs = specs
        self.clean = d.decision == "allow" and d.state == "CLOSED" and d.failures == 0

    def take_reservation(self) -> tuple[float, Any] | None:
        res = self.reservation
        self.reservation = None
        return res


def _tag(key: str) -> str:
    return key.partition("/")[0]


class SharedAdmit:
    """Pipeline layer (first after the deadline) on storage that implements
    :class:`~telethon_guard.storage.AdmitStorage`: one ``admit()`` per call, its answer left
    on ``call.admitted`` for the breaker, ledger and limiter layers. ``specs``: the limiter's
    ``LimitKeys.specs`` (``None``: no limiter layer); ``lease``: the breaker's probe lease;
    ``pacer``: the adaptive pacer whose paces are shared through the storage
    (:mod:`telethon_guard.shared_pace`; the admission also reads the method's pace)."""

    __slots__ = ("_lease", "_specs", "_storage", "paces")

    def __init__(self, storage: AdmitStorage, lease: float,
                 specs: Callable[[CallInfo], Sequence[LimitSpec]] | None,
                 pacer: AdaptivePacer | None = None) -> None:
        self._storage = storage
        self._lease = lease
        self._specs = specs
        self.paces: SharedPaces | None = (
            SharedPaces(pacer, storage)
            if pacer is not None and specs is not None and isinstance(storage, PaceStorage)
            else None)

    def handle(self, call: CallInfo, call_next: Next) -> Awaitable[Any]:
        return self._admit(call, call_next)

    async def _release(self, specs: Sequence[LimitSpec], token: Any) -> None:
        release = getattr(self._storage, "release", None)  # a GuardStorage
        if release is not None:
            await release(specs, token)

    async def _admit(self, call: CallInfo, call_next: Next) -> Any:
        key = breaker_key(call.account, call.dc_id)
        scopes = [scope_key(call, s) for s in scopes_of(call)]
        specs: Sequence[LimitSpec] = (
            self._specs(call) if self._specs is not None and not call.transfer else ())
        tag = _tag(key)
        if all(_tag(s) == tag for s in scopes) and all(_tag(s.key) == tag for s in specs):
            paces = self.paces
            if paces is None or call.transfer:
                a = await self._storage.admit(key, self._lease, scopes, specs)
            else:
                a = await self._storage.admit(key, self._lease, scopes, specs,
                                              paces.pace(call.account, call.method))
                if a.pace is not None and paces.take(call.account, call.method, a.pace):
                    # Another process's pace, new here: this slot was reserved without it;
                    # give it back, the limiter reserves again with the pace.
                    res = a.reservation
                    if res is not None:
                        await self._release(specs, res.token)
                        a = a._replace(reservation=None)
            call.admitted = Admitted(a, specs)
        return await call_next(call)


__all__ = ["Admitted", "SharedAdmit"]
