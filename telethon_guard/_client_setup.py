"""Preparing a Telethon client for its guard: the link, Telethon's own flood handling
switched off, exception retrieval of update-handler tasks, the main client of the guard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _telethon as tl
from ._client_tasks import retrieve_handler_tasks
from ._link import ClientLink, link_client

if TYPE_CHECKING:
    from ._client_guard import ClientGuard

__all__ = ["prepare_client"]


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
