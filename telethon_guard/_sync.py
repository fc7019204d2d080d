"""``telethon.sync`` support: the guard's coroutines run to completion when Telethon's sync
mode is active and no loop is running (the rule ``telethon.sync`` applies to its own
methods)."""

from __future__ import annotations

import sys
from typing import Any

from telethon import helpers

__all__ = ["SYNC_MODULE", "maybe_sync", "sync_mode"]

SYNC_MODULE = "telethon.sync"
"""Not in ``sys.modules``: sync mode is off (a caller may test that before
:func:`maybe_sync`, to skip its call)."""


def sync_mode() -> bool:
    """Whether ``telethon.sync`` rewrote ``TelegramClient``'s public methods."""
    if "telethon.sync" not in sys.modules:  # the per-call answer without a failed look-up
        return False
    from telethon import TelegramClient

    return hasattr(TelegramClient.connect, "__tl.sync")


def maybe_sync(coro: Any) -> Any:
    """Return ``coro``, or run it to completion when ``telethon.sync`` is active and no loop
    is running (the same rule ``telethon.sync`` applies to Telethon's own methods)."""
    if sync_mode():
        loop = helpers.get_running_loop()
        if not loop.is_running():
            return loop.run_until_complete(coro)
    return coro
