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

from ._telethon import self_user_id

if TYPE_CHECKING:
    from .loop import StraySink

ClientGuard = Any
"""A :class:`telethon_guard._client_guard.ClientGuard` (an alias here: this module imports
nothing of the guard's but the Telethon adapter, a leaf, so that every guard module may import
it)."""

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
    * ``account``: the cached account key of the logged-in user, ``user:<id>`` (``None`` until
      the user id is known; see :func:`account_key`);
    * ``auth_account``: the cached pre-login key ``key:<auth key id>`` (``None`` until the
      session has an auth key).
    """

    __slots__ = ("account", "auth_account", "guard", "loop", "offline", "sink")

    def __init__(self, guard: ClientGuard) -> None:
        self.guard = guard
        self.offline = True
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sink: StraySink | None = None
        self.account: str | None = None
        self.auth_account: str | None = None

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

    In order: ``GuardConfig.account`` when set; else ``user:<id>``, the logged-in user's
    Telegram id (a bot's own user id for bots) once Telethon knows it; else
    ``key:<auth key id>`` (16 hex digits) before that; else ``client:<hex>`` (the client
    object) while the session has no auth key yet.

    The user id is Telethon's own (:func:`telethon_guard._telethon.self_user_id`), set by a
    login (``sign_in``, ``start(bot_token=...)``), by ``get_me()``, and in ``connect()``:
    Telethon (1.43-1.45) loads the self row a file session (``SQLiteSession``) stored (at
    ``disconnect()`` and from its update loop) before any request, so a client restarted on
    the same file uses ``user:<id>`` from its first request. A session without that row
    (``StringSession``, a new file, a process that died before Telethon saved the row) is
    keyed by its auth key for the connect's own two requests (the ``help.getConfig`` init,
    then the ``get_me()`` Telethon's ``connect()`` makes when it has no update state) and by
    ``user:<id>`` from then on. Set ``GuardConfig.account`` for a fixed key from the first
    request.

    State recorded under ``key:<...>`` before the id was known stays there (not migrated, not
    mirrored): before login Telegram scopes limits to the auth key / IP, and a user does not
    exist yet; login floods are keyed by phone / bot token whatever the key
    (:func:`telethon_guard.keys.login_flood_key`), so a login flood holds for the user's other
    auth keys too. Once cached, the user key is kept for the client's life.

    Cost: one attribute read once the user key is cached on the link; before that, one read
    of Telethon's self id per call (no request, no storage lookup).
    """
    configured = guard.config.account
    if configured:
        return str(configured)
    link = link_of(client)
    if link is not None:
        if link.account is not None:
            return link.account
        return _learn_account(client, link)
    return _derive(client)


def _learn_account(client: Any, link: ClientLink) -> str:
    user_id = self_user_id(client)
    if user_id is not None:
        link.account = user = f"user:{user_id}"
        return user
    auth = link.auth_account
    if auth is None:
        auth = link.auth_account = _auth_key_account(client)
        if auth is None:
            return f"client:{id(client):x}"
    return auth


def _derive(client: Any) -> str:
    user_id = self_user_id(client)
    if user_id is not None:
        return f"user:{user_id}"
    return _auth_key_account(client) or f"client:{id(client):x}"


def _auth_key_account(client: Any) -> str | None:
    key = getattr(getattr(client.session, "auth_key", None), "key_id", None)
    return None if key is None else f"key:{key:016x}"
