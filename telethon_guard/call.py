"""The one per-call object: what the pipeline knows about one logical call (one request, all its
attempts) and the state its layers share while it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from telethon.tl.tlobject import TLObject

from .keys import TRANSFER_METHODS

if TYPE_CHECKING:
    from .classify import Verdict


@dataclass(slots=True, eq=False)
class CallInfo:
    """One logical MTProto call going through the guard pipeline.

    Described by the client (constructor arguments): ``method`` (TL name), ``request``,
    ``account`` (the guard's account key: ``GuardConfig.account``, else ``user:<id>`` of
    the logged-in user, else ``key:<auth key id>`` before login),
    ``dc_id``, ``peer`` (:func:`telethon_guard._tl.peer_key`), ``random_id``,
    ``transfer`` (a file transfer, which FLOOD_PREMIUM_WAIT scopes to), ``idempotent``
    (re-sending after an attempt that may have run is safe: :func:`telethon_guard.keys.
    is_idempotent`; a call that is not is never re-sent after an attempt timeout),
    ``deadline_at`` (absolute time on the guard clock, monotonic seconds; ``None``: none),
    ``tags`` (free labels the client attaches), ``max_flood_wait`` (per-call override of
    ``GuardConfig.max_flood_wait``, seconds, e.g. from ``client(request,
    flood_sleep_threshold=...)``; ``None``: the config's value), ``update_loop`` (the Telethon
    client whose update-loop task sent this ``getDifference`` / ``getChannelDifference``:
    :func:`telethon_guard.update_path.update_loop_client`; ``None`` for every other call):
    the pipeline runs such a call through its update-path chain, which never waits.

    Filled by the pipeline while the call runs (not constructor arguments): ``attempt``
    (network attempts made so far), ``send`` (one network attempt: returns the answer or
    raises what Telethon raises), ``budget`` (the call's whole deadline budget in seconds,
    ``None``: no deadline), ``stage`` (``"start"``, ``"limiter"``, ``"flood"``, ``"backoff"``,
    ``"network"``: where the call is, for events), ``verdict`` (classification of the last
    attempt's error, :class:`~telethon_guard.classify.Verdict`), ``breaker_key`` (set by the
    breaker layer), ``probe`` (this call holds its breaker's HALF_OPEN probe and no verdict
    was recorded yet), ``task`` (the caller's task once a layer looked it up), ``sender``
    (the sender the client sends the call on, set by the client: a guarded sender's
    ``live_age()`` tells the attempt timer how long its connection has been live),
    ``unanswered`` (an attempt reached the network and got no answer: :meth:`may_have_run`).
    """

    method: str
    request: TLObject
    account: str
    dc_id: int
    peer: str | None = None
    random_id: int | None = None
    transfer: bool = False
    idempotent: bool = True
    deadline_at: float | None = None
    attempt: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    max_flood_wait: float | None = None
    update_loop: Any = None
    send: Callable[[], Awaitable[Any]] | None = field(default=None, init=False, repr=False)
    budget: float | None = field(default=None, init=False)
    stage: str = field(default="start", init=False)
    verdict: Verdict | None = field(default=None, init=False, repr=False)
    breaker_key: str | None = field(default=None, init=False, repr=False)
    probe: bool = field(default=False, init=False, repr=False)
    task: asyncio.Task[Any] | None = field(default=None, init=False, repr=False)
    admitted: Any = field(default=None, init=False, repr=False)
    sender: Any = field(default=None, init=False, repr=False)
    unanswered: bool = field(default=False, init=False, repr=False)

    def may_have_run(self) -> bool:
        """``True`` when an earlier attempt of this call reached the network and got no
        answer (``unanswered``: the retry layer re-sent it after a timeout or a broken
        connection), or its sender re-sent it after the connection it was sent on was lost
        (``sender.may_have_run(request)``): the server may have run it already."""
        if self.unanswered:
            return True
        check = getattr(self.sender, "may_have_run", None)
        return check is not None and self.request is not None and bool(check(self.request))


__all__ = ["TRANSFER_METHODS", "CallInfo"]
