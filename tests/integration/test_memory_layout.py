"""Memory layout that issue 12's per-client figures depend on (benchmarks/README.md, "Memory
per client"): an attribute added in the wrong place silently costs ~1.3 KiB per client."""

from __future__ import annotations

from telethon import TelegramClient

from telethon_guard.client import GuardedTelegramClient
from telethon_guard.testing import TelegramTestServer

from ._client_helpers import bounded


async def test_guarded_sender_and_pipeline_keep_compact_instance_dicts() -> None:
    """The guarded sender's instance dict holds Telethon's attributes only (the guard's are in
    ``__slots__``), and a pipeline has fewer than 30 instance attributes: past CPython's
    shared-key limit an instance dict becomes a ~1.5 KiB table."""
    async with TelegramTestServer() as server:
        plain = server.client(cls=TelegramClient)
        guarded = server.client(cls=GuardedTelegramClient)
        for client in (plain, guarded):
            await bounded(client.connect())
        try:
            await bounded(guarded.get_me())
            extra = set(vars(guarded._sender)) - set(vars(plain._sender))
            assert not extra, f"guard attributes outside the sender's __slots__: {extra}"
            assert len(vars(guarded.guard.pipeline)) < 30
        finally:
            for client in (plain, guarded):
                await bounded(client.disconnect())
