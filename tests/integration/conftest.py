"""Checks every integration test gets for free (issue 3: "in every scenario").

* No "Future exception was never retrieved" / "Task exception was never retrieved" is logged
  by asyncio (checked after ``gc.collect()``), and the guard's safety-net handler did not have
  to catch one either (a caught stray means a future was created without a retrieving
  done-callback).
* No bare ``InvalidBufferError``, ``ConnectionError`` or ``ValueError`` escapes the guard's
  request entry (``guarded_call``, for ``GuardedTelegramClient`` and ``guard()``) to a
  caller (the guard's typed errors, which subclass ``ConnectionError`` / ``ValueError`` on
  purpose, are fine).

A test that deliberately provokes either opts out with ``@pytest.mark.allow_strays`` or
``@pytest.mark.allow_bare_errors``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from telethon import errors as tl_errors

from telethon_guard.errors import GuardError
from tests._strays import LogCollector, is_stray


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_strays: the test may leave stray futures")
    config.addinivalue_line("markers", "allow_bare_errors: the test may see bare errors")


def is_bare(exc: BaseException) -> bool:
    """An error type the issue forbids reaching a caller untyped."""
    if isinstance(exc, (GuardError, tl_errors.RPCError, tl_errors.MultiError)):
        return False
    return isinstance(exc, (tl_errors.InvalidBufferError, ConnectionError, ValueError))


@pytest.fixture(autouse=True)
def no_stray_futures(request: pytest.FixtureRequest) -> Iterator[None]:
    handler = LogCollector()
    loggers = [logging.getLogger("asyncio"), logging.getLogger("telethon_guard")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield
        gc.collect()
        gc.collect()
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    strays = [r.getMessage().splitlines()[0] for r in handler.records if is_stray(r)]
    if strays and request.node.get_closest_marker("allow_strays") is None:
        pytest.fail(f"stray future/task exceptions: {strays}")


@pytest.fixture(autouse=True)
def no_bare_errors(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[BaseException]]:
    from telethon_guard import _wrap, client

    seen: list[BaseException] = []

    # Every guarded request enters lane_call (GuardedTelegramClient.__call__: the straight
    # lane, which hands what it cannot take to guarded_call inside _client_call) or
    # guarded_call (its _call for exported senders in client.py, guard()'s wrappers in
    # _wrap.py). (Patching _call alone missed client(...) calls, which never pass it.)
    for module, name in ((client, "lane_call"), (client, "guarded_call"),
                         (_wrap, "guarded_call")):
        original = getattr(module, name)

        async def checked(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            try:
                return await _original(*args, **kwargs)
            except BaseException as e:
                if is_bare(e):
                    seen.append(e)
                raise

        monkeypatch.setattr(module, name, checked)
    yield seen
    if seen and request.node.get_closest_marker("allow_bare_errors") is None:
        pytest.fail(f"bare errors reached callers: {[repr(e) for e in seen]}")
