"""Compatibility: guard() on a client someone else created, telethon.sync, CDN-style copies."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from telethon import TelegramClient
from telethon.tl import functions, types

import telethon_guard
from telethon_guard import (
    GuardConfigError,
    GuardedTelegramClient,
    GuardState,
    GuardWarning,
    guard,
)
from telethon_guard.loop import current_handler
from telethon_guard.testing.faults import FaultPlan
from telethon_guard.testing.faults_calls import ErrorOnCalls
from telethon_guard.testing.server import TelegramTestServer

from ._client_helpers import InvokeRecorder, bounded

REPO = Path(__file__).resolve().parents[2]


async def test_guard_wraps_a_plain_client() -> None:
    plan = FaultPlan(ErrorOnCalls("help.getNearestDc", 400, "SOME_BAD_REQUEST"))
    async with TelegramTestServer(faults=plan) as server:
        plain = server.client()  # a TelegramClient built by someone else
        assert type(plain).__mro__[1] is TelegramClient
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            same = guard(plain, deadline=5, max_flood_wait=3)
        assert same is plain
        assert not [w for w in caught if issubclass(w.category, GuardWarning)]
        assert isinstance(plain.guard, GuardState)
        assert plain.guard.config.max_flood_wait == 3.0
        assert plain.flood_sleep_threshold == 0
        with pytest.raises(GuardConfigError):
            guard(plain)
        rec = InvokeRecorder(plain.guard.pipeline)
        async with plain:
            assert current_handler(asyncio.get_running_loop()) is not None
            me = await bounded(plain.get_me())
            assert me.id > 0
            await bounded(plain.get_dialogs())
            from telethon import errors as tl_errors

            with pytest.raises(tl_errors.BadRequestError):
                await bounded(plain(functions.help.GetNearestDcRequest()))
        assert current_handler(asyncio.get_running_loop()) is None
        methods = set(rec.methods())
        assert {"help.getConfig", "users.getUsers", "messages.getDialogs",
                "help.getNearestDc"} <= methods
        assert {e.method for e in server.log.requests()} <= methods
        assert server.log.count("help.getNearestDc") == 1
        # the sender was swapped for the guarded one before connecting
        from telethon_guard.sender import GuardedMTProtoSender

        assert isinstance(plain._sender, GuardedMTProtoSender)


async def test_guarded_client_copies_share_the_guard() -> None:
    # What Telethon does for CDN downloads: self.__class__(session, api_id, api_hash, ...)
    # inside _get_cdn_client. Copies made there share the parent's guard.
    from telethon_guard._link import parent_guard as _parent_guard

    async with TelegramTestServer() as server:
        parent = server.client(cls=GuardedTelegramClient, deadline=5)
        token = _parent_guard.set(parent.guard)
        try:
            copy = parent.__class__(server.session(), server.api_id, server.api_hash,
                                    proxy=None, timeout=5, loop=None)
        finally:
            _parent_guard.reset(token)
        assert copy.guard is parent.guard
        fresh = parent.__class__(server.session(), server.api_id, server.api_hash, timeout=5)
        assert fresh.guard is not parent.guard


_SYNC_SCRIPT = textwrap.dedent("""
    import sys
    import telethon.sync  # noqa: F401  (rewrites TelegramClient's public methods)
    from telethon.sessions import StringSession
    from telethon.tl import functions, types
    from telethon_guard import GuardedTelegramClient

    session, api_id, api_hash = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    client = GuardedTelegramClient(StringSession(session), api_id, api_hash, deadline=5,
                                   timeout=5, connection_retries=1)
    calls = []
    original = client.guard.pipeline.invoke
    async def invoke(call, send):
        calls.append(call.method)
        return await original(call, send)
    client.guard.pipeline.invoke = invoke
    client.guard.pipeline.lane = None  # every call through invoke (the lane makes no CallInfo)
    with client:
        me = client.get_me()
        users = client(functions.users.GetUsersRequest([types.InputUserSelf()]))
        dialogs = client.get_dialogs()
    print("OK", me.id, users[0].id, len(dialogs), ",".join(sorted(set(calls))))
""")


async def test_telethon_sync_mode_in_a_subprocess() -> None:
    async with TelegramTestServer() as server:
        session = server.session().save()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SYNC_SCRIPT, session, str(server.api_id), server.api_hash,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            cwd=str(REPO),
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, err.decode()[-2000:]
        line = out.decode().strip().splitlines()[-1]
        ok, me_id, users_id, _dialogs, methods = line.split(" ")
        assert ok == "OK" and me_id == users_id
        assert {"help.getConfig", "users.getUsers", "messages.getDialogs"} <= set(
            methods.split(","))
        assert "never retrieved" not in err.decode()


def test_package_exports() -> None:
    for name in ("GuardedTelegramClient", "guard", "GuardConfig", "install_exception_handler",
                 "LoopLagMonitor", "DeadlineExceeded", "FloodWaitBlocked", "GuardConfigError",
                 "__version__"):
        assert hasattr(telethon_guard, name), name
    assert callable(telethon_guard.guard)
    assert types.InputUserSelf  # keep the import used


def test_every_public_error_is_exported_at_the_top() -> None:
    # A caller writes `from telethon_guard import MayHaveRunError`, not the module path: every
    # typed error and every lazily imported name in __all__ resolves, and each error is a
    # GuardError.
    from telethon_guard import errors

    missing = set(errors.__all__) - set(telethon_guard.__all__)
    assert not missing, missing
    for name in telethon_guard.__all__:
        assert getattr(telethon_guard, name) is not None, name
    for name in ("MayHaveRunError", "ConnectionLostMayHaveRun", "SilentConnectionMayHaveRun",
                 "NoAccountAvailableError", "UnknownTenantError", "EntitiesNotStoredError",
                 "DifferenceDeferred"):
        assert issubclass(getattr(telethon_guard, name), telethon_guard.GuardError), name
    assert issubclass(telethon_guard.ConnectionLostMayHaveRun, telethon_guard.MayHaveRunError)


async def test_guard_on_a_connected_client_maps_disconnect_cancellation() -> None:
    # guard() after connect keeps Telethon's own sender; its disconnect() cancels in-flight
    # futures, which the caller (not cancelled itself) sees as a typed, final error.
    from telethon_guard.errors import ClientDisconnectedError
    from telethon_guard.testing.faults_calls import DropReplies

    from ._client_helpers import wait_until

    plan = FaultPlan(DropReplies("messages.getDialogs"))
    async with TelegramTestServer(faults=plan) as server:
        plain = server.client()
        await bounded(plain.connect())
        with pytest.warns(GuardWarning) as caught:
            guard(plain, deadline=10)
        # said once (a warning, shown without logging set up, at this line), with what is not
        # guarded until reconnect and the remedy
        notes = [w for w in caught if "already connected" in str(w.message)]
        assert len(notes) == 1 and notes[0].filename == __file__
        assert "sender" in str(notes[0].message) and "before connect()" in str(notes[0].message)
        assert type(plain._sender).__name__ == "MTProtoSender"
        task = asyncio.ensure_future(plain.get_dialogs())
        await wait_until(lambda: server.log.count("messages.getDialogs") > 0)
        await bounded(plain.disconnect())
        with pytest.raises(ClientDisconnectedError):
            await bounded(task, 5)
        assert not task.cancelled()
        # the next connect() swaps in the guarded sender
        from telethon_guard.sender import GuardedMTProtoSender

        server.faults.clear()
        async with plain:
            assert isinstance(plain._sender, GuardedMTProtoSender)
            assert (await bounded(plain.get_me())).id > 0


@pytest.mark.parametrize("thing", ["not a client", None, object()])
def test_guard_refuses_what_is_not_a_telegram_client(thing: object) -> None:
    with pytest.raises(TypeError, match=r"guard\(\) takes a telethon\.TelegramClient"):
        guard(thing)  # type: ignore[arg-type]

