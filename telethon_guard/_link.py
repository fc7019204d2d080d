"""The link between a Telethon client and its guard: ONE object on the client.

:class:`ClientLink` holds what the guard keeps per client: its
:class:`~telethon_guard._client_guard.ClientGuard`, whether the client is offline on purpose,
the event loop whose exception handler it holds, its stray-future sink and its account key.
It lives in one attribute of the client (:data:`LINK_ATTRIBUTE`), set once by
:func:`link_client`; nothing else of the guard's is planted on a Telethon client (except the
public ``client.guard`` of :func:`telethon_guard.guard`).
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loop import StraySink

ClientGuard = Any
"""A :class:`telethon_guard._client_guard.ClientGuard` (an alias here: this module imports
nothing of the guard's, so that every guard module may import it)."""

__all__ = ["LINK_ATTRIBUTE", "ClientLink", "account_key", "link_client", "link_of", "offline"]

LINK_ATTRIBUTE = "_guard_link"
"""The one attribute the guard sets on a Telethon client."""


class ClientLink:
    """What the guard keeps per client.

    * ``guard``: the :class:`ClientGuard` (shared with the CDN clients built from this one);
    * ``offline``: ``True`` while the client is disconnected on purpose (never connected, or
      ``disconnect()`` called and no ``connect()`` since; a DC switch does not count);
    * ``loop``: the event loop on which this client holds a reference to the guard's exception
      handler (``None`` when it holds none);
    * ``sink``: this client's stray-future sink (``None`` until first needed);
    * ``account``: the cached account key derived from the session's auth key (``None`` until
      known).
    """

    __slots__ = ("account", "guard", "loop", "offline", "sink")

    def __init__(self, guard: ClientGuard) -> None:
        self.guard = guard
        self.offline = True
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sink: StraySink | None = None
        self.account: str | None = None

    def __repr__(self) -> str:
        return f"<ClientLink offline={self.offline} account={self.account!r}>"


def link_of(client: Any) -> ClientLink | None:
    """The client's link, or ``None`` when the client is not guarded."""
    link: ClientLink | None = getattr(client, LINK_ATTRIBUTE, None)
    return link


def link_client(client: Any, guard: ClientGuard) -> ClientLink:
    """Create the client's link to ``guard`` (once per client)."""
    link = ClientLink(guard)
    setattr(client, LINK_ATTRIBUTE, link)
    return link


def offline(client: Any) -> bool:
    """Whether the client is disconnected on purpose (see :class:`ClientLink`)."""
    link = link_of(client)
    return link is not None and link.offline


# Set while a guarded client builds a CDN client (``self.__class__(...)``), so the new
# instance shares the parent's guard (same pipeline, flood ledger, limiter and breaker).
parent_guard: contextvars.ContextVar[ClientGuard | None] = contextvars.ContextVar(
    "telethon_guard_parent", default=None
)


def account_key(client: Any, guard: Any) -> str:
    """The account key of ``client`` for flood scopes, limits and breaker keys.

    ``GuardConfig.account`` when set; else derived from the session's auth key id (stable for
    the session and shared by every process using it); else the client object until a key
    exists.
    """
    configured = getattr(guard.config, "account", None)
    if configured:
        return str(configured)
    link = link_of(client)
    if link is not None and link.account:
        return link.account
    key = getattr(getattr(client.session, "auth_key", None), "key_id", None)
    if key is not None:
        value = f"key:{key:016x}"
        if link is not None:
            link.account = value
        return value
    return f"client:{id(client):x}"
