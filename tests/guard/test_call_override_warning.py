"""A user's override of Telethon's private ``_call`` is reported, not silently skipped: the
guard replaces ``_call`` (a new-user trial found the override was never called, with no word).
Here, not in tests/integration: that folder's conftest patches ``GuardedTelegramClient._call``
itself for its own checks."""

from __future__ import annotations

import pytest


async def test_an_override_of_telethons_call_is_reported_not_silently_skipped(
        caplog: pytest.LogCaptureFixture) -> None:
    # The guard replaces Telethon's private _call; a user's override of it is never called
    # (a trial found this silent). Both forms log one warning naming the class; a client
    # without an override logs none.
    import logging
    from typing import Any

    from telethon import TelegramClient
    from telethon.sessions import StringSession

    from telethon_guard import GuardedTelegramClient, guard

    class Logged(TelegramClient):  # type: ignore[misc]
        async def _call(self, *args: Any, **kwargs: Any) -> Any:
            return await super()._call(*args, **kwargs)

    class LoggedGuarded(GuardedTelegramClient):
        async def _call(self, *args: Any, **kwargs: Any) -> Any:
            return await super()._call(*args, **kwargs)

    with caplog.at_level(logging.WARNING, logger="telethon_guard"):
        guard(Logged(StringSession(), 1, "x" * 32))
        LoggedGuarded(StringSession(), 1, "x" * 32)
        guard(TelegramClient(StringSession(), 1, "x" * 32))
        GuardedTelegramClient(StringSession(), 1, "x" * 32)
    owners = {r.getMessage().split()[0].rsplit(".", 1)[-1] for r in caplog.records
              if "overrides Telethon's private _call" in r.getMessage()}
    assert owners == {"Logged", "LoggedGuarded"}, owners  # never the plain clients
