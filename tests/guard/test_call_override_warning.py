"""A user's override of Telethon's private ``_call`` is reported (a ``GuardWarning``), not
silently skipped: the guard replaces ``_call`` (a new-user trial found the override was never
called, with no word).
Here, not in tests/integration: that folder's conftest patches ``GuardedTelegramClient._call``
itself for its own checks."""

from __future__ import annotations


async def test_an_override_of_telethons_call_is_reported_not_silently_skipped() -> None:
    # The guard replaces Telethon's private _call; a user's override of it is never called
    # (a trial found this silent, the warning went to a logger with only a NullHandler). Both
    # forms issue one GuardWarning (shown by default) naming the class and pointing at the
    # user's line; a client without an override issues none.
    import warnings
    from typing import Any

    from telethon import TelegramClient
    from telethon.sessions import StringSession

    from telethon_guard import GuardedTelegramClient, GuardWarning, guard

    class Logged(TelegramClient):  # type: ignore[misc]
        async def _call(self, *args: Any, **kwargs: Any) -> Any:
            return await super()._call(*args, **kwargs)

    class LoggedGuarded(GuardedTelegramClient):
        async def _call(self, *args: Any, **kwargs: Any) -> Any:
            return await super()._call(*args, **kwargs)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        guard(Logged(StringSession(), 1, "x" * 32))
        LoggedGuarded(StringSession(), 1, "x" * 32)
        guard(TelegramClient(StringSession(), 1, "x" * 32))
        GuardedTelegramClient(StringSession(), 1, "x" * 32)
    ours = [w for w in caught if "overrides Telethon's private _call" in str(w.message)]
    owners = {str(w.message).split()[0].rsplit(".", 1)[-1] for w in ours}
    assert owners == {"Logged", "LoggedGuarded"}, owners  # never the plain clients
    assert all(w.category is GuardWarning for w in ours)
    assert {w.filename for w in ours} == {__file__}  # the user's guard() / constructor line
