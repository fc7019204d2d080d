"""Preparing a Telethon client for its guard: the link, Telethon's own flood handling
switched off, exception retrieval of update-handler tasks, the main client of the guard."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from . import _telethon as tl
from ._client_tasks import retrieve_handler_tasks
from ._link import ClientLink, link_client
from .errors import GuardWarning

if TYPE_CHECKING:
    from ._client_guard import ClientGuard

def warn_call_override(client: Any, stacklevel: int = 3) -> None:
    """Issue a :class:`~telethon_guard.errors.GuardWarning` when ``client``'s class overrides
    Telethon's private ``_call``: the guard replaces ``_call`` (every request goes through its
    pipeline instead), so the override is never called. ``stacklevel`` as for
    :func:`warnings.warn`, counted from here (3: the caller of the caller, the user's
    ``guard(client)`` or ``GuardedTelegramClient(...)`` line)."""
    owner = tl.call_override(client)
    if owner is not None:
        warnings.warn(
            f"{owner} overrides Telethon's private _call, which the guard replaces: the "
            "override is not called. Override __call__ (every request passes it) or use the "
            "guard's events (on_event=, client.guard.events) instead",
            GuardWarning, stacklevel=stacklevel)


__all__ = ["prepare_client", "warn_call_override"]


class _NeverRemember(dict):
    """Stand-in for Telethon's flood memo: remembers nothing, so Telethon's own memo can never
    answer (or sleep) for the guard's flood ledger."""

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


def prepare_client(client: Any, guard: ClientGuard) -> ClientLink:
    """Link ``client`` to ``guard``, switch Telethon's own flood sleeping / memo off and hook
    update-handler task retrieval; the first client of a guard is its main client."""
    link = link_client(client, guard)
    tl.switch_off_flood_handling(client, _NeverRemember())
    link.offline = not client.is_connected()
    retrieve_handler_tasks(client, link)
    guard.bind_main_client(client)
    return link
