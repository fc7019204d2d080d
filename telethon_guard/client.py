"""``GuardedTelegramClient``: a drop-in ``TelegramClient`` whose every MTProto request passes
one guard pipeline (deadline, breaker, flood ledger, rate limiter, retry).

See :mod:`telethon_guard._wrap` for the hook points and what Telethon behaviour is switched
off underneath; :mod:`telethon_guard._telethon` names the Telethon methods it overrides.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import TelegramClient
from telethon.network import MTProtoSender

from ._client_call import guarded_call, is_user_authorized, lane_call
from ._client_connect import guarded_connect, guarded_disconnect
from ._client_guard import ClientGuard
from ._client_senders import create_exported_sender, replace_main_sender
from ._client_setup import prepare_client, warn_call_override
from ._link import ClientLink, parent_guard
from ._sync import SYNC_MODULE, maybe_sync
from ._telethon import ClientHooks
from .storage.sqlite_session import attach_session_storage

_TELETHON_KWARGS = frozenset(
    name
    for name, p in inspect.signature(TelegramClient.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)


class GuardedTelegramClient(ClientHooks, TelegramClient):
    """``TelegramClient`` with the guard built in.

    ``GuardedTelegramClient(session, api_id, api_hash, *, <Telethon keywords>, <guard
    keywords>)``. Telethon's keywords (``connection``, ``proxy``, ``timeout``, ``loop``, ...)
    pass through unchanged. Guard keywords, one style at a time:

    * ``guard_config=GuardConfig(...)``;
    * ``preset="user"`` or ``preset="bot"``, optionally with field overrides;
    * any :class:`~telethon_guard.config.GuardConfig` field as a keyword (e.g.
      ``max_flood_wait=60``, ``deadline=30``), defaults for the rest.

    ``flood_sleep_threshold`` (Telethon's, seconds) becomes ``max_flood_wait`` when that is not
    given; Telethon itself then never sleeps or retries on its own. ``client(request,
    flood_sleep_threshold=s)`` is honoured per call as that call's ``max_flood_wait``.

    Raises :class:`~telethon_guard.errors.GuardConfigError` (a ``ValueError``) for invalid
    guard settings and ``TypeError`` for unknown keywords, at construction.

    ``client.guard`` exposes ``config``, ``pipeline`` and ``events``. CDN clients that
    Telethon builds from this one (``self.__class__(session, api_id, api_hash, ...)``)
    share its guard.
    """

    def __init__(
        self,
        session: Any,
        api_id: int,
        api_hash: str,
        *,
        guard_config: Any = None,
        preset: str | None = None,
        **kwargs: Any,
    ) -> None:
        telethon_kwargs = {k: v for k, v in kwargs.items() if k in _TELETHON_KWARGS}
        guard_kwargs = {k: v for k, v in kwargs.items() if k not in _TELETHON_KWARGS}
        threshold = telethon_kwargs.pop("flood_sleep_threshold", None)
        parent = parent_guard.get()
        state: ClientGuard
        if parent is not None and guard_config is None and preset is None and not guard_kwargs:
            state = parent
        else:
            if (
                threshold is not None
                and guard_config is None
                and "max_flood_wait" not in guard_kwargs
            ):
                guard_kwargs["max_flood_wait"] = threshold
            state = ClientGuard.create(guard_config, preset, **guard_kwargs)
        super().__init__(session, api_id, api_hash, flood_sleep_threshold=0, **telethon_kwargs)
        if state is not parent:  # flood state survives restarts (storage/sqlite_session.py)
            attach_session_storage(self.session, state)
        self._guard_link: ClientLink = prepare_client(self, state)
        replace_main_sender(self, state)
        warn_call_override(self)

    @property
    def guard(self) -> ClientGuard:
        """The guard: ``.config`` (GuardConfig), ``.pipeline`` (Pipeline), ``.events``,
        ``.stats()``, ``.available`` (see :class:`~telethon_guard.ClientGuard`)."""
        return self._guard_link.guard

    # -- requests ----------------------------------------------------------------------

    def __call__(
        self, request: Any, ordered: bool = False, flood_sleep_threshold: float | None = None
    ) -> Any:
        """Invoke ``request`` (or a list of them) through the guard; awaitable.

        ``flood_sleep_threshold`` (seconds) is this call's ``max_flood_wait``.
        """
        # lane_call directly (not through _call: one coroutine frame less per call).
        coro = lane_call(self, self._guard_link, request, ordered, flood_sleep_threshold)
        return maybe_sync(coro) if SYNC_MODULE in sys.modules else coro

    async def _guard_call_hook(
        self,
        sender: MTProtoSender,
        request: Any,
        ordered: bool,
        flood_sleep_threshold: float | None,
    ) -> Any:
        # Telethon's _call (ClientHooks): requests on exported senders (downloads)
        return await guarded_call(self, self._guard_link.guard, sender, request, ordered,
                                  flood_sleep_threshold)

    def is_user_authorized(self) -> Any:
        """Like Telethon's, but a flood wait or server error is raised instead of being
        cached as "not authorized" (only 401 errors mean ``False``); awaitable."""
        return maybe_sync(is_user_authorized(self))

    # -- connections -------------------------------------------------------------------

    def connect(self) -> Any:
        """Telethon's ``connect`` with the init request through the guard; awaitable.

        If it fails after the connection came up (an error on the init request, a cancel),
        the client is disconnected again before the error propagates.
        """
        return maybe_sync(guarded_connect(self, self._guard_link, super().connect))

    async def _guard_disconnect_hook(self, parent: Callable[[], Awaitable[None]]) -> None:
        await guarded_disconnect(self, self._guard_link, parent)

    async def _guard_exported_sender_hook(self, dc_id: int) -> MTProtoSender:
        return await create_exported_sender(self, self._guard_link.guard, dc_id)

    async def _guard_cdn_client_hook(self, parent: Callable[[Any], Awaitable[Any]],
                                     cdn_redirect: Any) -> Any:
        token = parent_guard.set(self._guard_link.guard)
        try:
            return await parent(cdn_redirect)
        finally:
            parent_guard.reset(token)


__all__ = ["GuardedTelegramClient"]
