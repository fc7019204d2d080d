"""Pushing updates to the connections that receive them, like Telegram.

Telegram sends an account's updates to its sessions that asked for them: a key starts
receiving updates once it called ``updates.getState`` or ``updates.getDifference`` (outside
``invokeWithoutUpdates``; core.telegram.org/api/updates), which Telethon does right after
login and on every connect with an empty update state. :class:`UpdatePusher` is the world's
update sink: for one account it writes the serialized ``Updates`` object once to the newest
live connection of each such auth key (a key's older connections are being replaced). Keys
that never asked (Telethon's exported download senders, ``receive_updates=False`` clients)
get nothing.
"""

from __future__ import annotations

from telethon.tl.tlobject import TLObject

from telethon_guard.testing.context import LiveConnection, ServerContext


class UpdatePusher:
    """Writes updates for an account to its update-receiving connections (see the module)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def receivers(self, user_id: int, exclude_key: int | None = None) -> list[LiveConnection]:
        """The newest live connection of every auth key of account ``user_id`` that receives
        updates, except auth key ``exclude_key`` (the one whose request produced them)."""
        newest: dict[int, LiveConnection] = {}
        for conn in self.ctx.conns.values():
            auth = conn.auth
            if (conn.closed or auth is None or auth.user_id != user_id
                    or not auth.receives_updates or auth.auth_key_id == exclude_key):
                continue
            prev = newest.get(auth.auth_key_id)
            if prev is None or conn.conn_id > prev.conn_id:
                newest[auth.auth_key_id] = conn
        return list(newest.values())

    def listeners(self) -> set[int]:
        """Accounts with at least one live connection that receives updates (one scan)."""
        out: set[int] = set()
        for conn in self.ctx.conns.values():
            auth = conn.auth
            if (not conn.closed and auth is not None and auth.receives_updates
                    and auth.user_id is not None):
                out.add(auth.user_id)
        return out

    def push(self, user_id: int, updates: TLObject, exclude_key: int | None = None) -> int:
        """Write ``updates`` (an ``Updates`` constructor) to account ``user_id``'s receiving
        connections; returns how many were written to. Counted in
        ``server.stats["updates_pushed"]``."""
        conns = self.receivers(user_id, exclude_key)
        if not conns:
            return 0
        body = bytes(updates)
        written = sum(1 for conn in conns if conn.push(body))
        self.ctx.stats["updates_pushed"] += written
        return written
