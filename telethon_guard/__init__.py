"""telethon-guard: keeps Telethon services alive under FLOOD_WAIT, transport -429 and server
errors.

Public API::

    from telethon_guard import GuardedTelegramClient, guard, GuardConfig
    client = GuardedTelegramClient(session, api_id, api_hash, max_flood_wait=60, deadline=30)
    plain = guard(TelegramClient(...), preset="user")

The client, config and loop helpers are imported lazily on first access.

The public surface is what this module exports (``__all__``) plus the documented modules
(``config``, ``errors``, ``events``, ``health``, ``sender``, ``reconnect``, ``storage``,
``metrics``, ``testing``). Modules whose name starts with an underscore (``_client_call``,
``_link``, ``_telethon``...) are internal: their names may change without notice.
``client.guard`` is a :class:`ClientGuard` (formerly ``GuardState``, still importable).
Every typed error of :mod:`telethon_guard.errors` is exported here, as are the two
re-send errors (:class:`ConnectionLostMayHaveRun`, :class:`SilentConnectionMayHaveRun`, both
:class:`MayHaveRunError`), the update loop's :class:`DifferenceDeferred`, the pool and the
edit coalescer.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._wrap import guard  # the function (no module of that name)
from .errors import (
    AlreadyDelivered,
    AttemptTimeoutError,
    AuthKeyInvalidError,
    CircuitOpenError,
    ClientDisconnectedError,
    ConnectionRetriesExhausted,
    DeadlineExceeded,
    EntitiesNotStoredError,
    FloodPremiumBlocked,
    FloodWaitBlocked,
    FloodWaitMultiError,
    GuardConfigError,
    GuardConnectionError,
    GuardError,
    GuardWarning,
    MayHaveRunError,
    NoAccountAvailableError,
    NotReroutedMayHaveRun,
    PoolClosedError,
    PoolError,
    PoolExhaustedError,
    SessionInUseError,
    SessionLockedError,
    SessionStoreError,
    SlowModeBlocked,
    StorageUnavailableError,
    TenantUnavailableError,
    TransportFloodError,
    UnknownTenantError,
)

__version__ = "0.1.0"

# A library's loggers stay silent until the application configures logging (Python's logging
# HOWTO, "Configuring Logging for a Library"): without this, Python's last-resort handler would
# print every WARNING guard event (FloodWaitStarted, ...) on stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "ClientGuard": "._client_guard",
    "GuardState": "._client_guard",
    "GuardedTelegramClient": ".client",
    "GuardConfig": ".config",
    "Pipeline": ".pipeline",
    "install_exception_handler": ".loop",
    "LoopLagMonitor": ".loop",
    "with_fallback": ".health",
    "fallback": ".health",
    "GuardStats": ".stats",
    "GuardedClientPool": ".pool",
    "EditCoalescer": ".edits",
    "ConnectionLostMayHaveRun": ".sender",
    "SilentConnectionMayHaveRun": ".liveness",
    "DifferenceDeferred": ".update_path",
}

if TYPE_CHECKING:
    from ._client_guard import ClientGuard, GuardState
    from .client import GuardedTelegramClient
    from .config import GuardConfig
    from .edits import EditCoalescer
    from .health import fallback, with_fallback
    from .liveness import SilentConnectionMayHaveRun
    from .loop import LoopLagMonitor, install_exception_handler
    from .pipeline import Pipeline
    from .pool import GuardedClientPool
    from .sender import ConnectionLostMayHaveRun
    from .stats import GuardStats
    from .update_path import DifferenceDeferred


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'telethon_guard' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AlreadyDelivered",
    "AttemptTimeoutError",
    "AuthKeyInvalidError",
    "CircuitOpenError",
    "ClientDisconnectedError",
    "ClientGuard",
    "ConnectionLostMayHaveRun",
    "ConnectionRetriesExhausted",
    "DeadlineExceeded",
    "DifferenceDeferred",
    "EditCoalescer",
    "EntitiesNotStoredError",
    "FloodPremiumBlocked",
    "FloodWaitBlocked",
    "FloodWaitMultiError",
    "GuardConfig",
    "GuardConfigError",
    "GuardConnectionError",
    "GuardError",
    "GuardState",
    "GuardStats",
    "GuardWarning",
    "GuardedClientPool",
    "GuardedTelegramClient",
    "LoopLagMonitor",
    "MayHaveRunError",
    "NoAccountAvailableError",
    "NotReroutedMayHaveRun",
    "Pipeline",
    "PoolClosedError",
    "PoolError",
    "PoolExhaustedError",
    "SessionInUseError",
    "SessionLockedError",
    "SessionStoreError",
    "SilentConnectionMayHaveRun",
    "SlowModeBlocked",
    "StorageUnavailableError",
    "TenantUnavailableError",
    "TransportFloodError",
    "UnknownTenantError",
    "__version__",
    "fallback",
    "guard",
    "install_exception_handler",
    "with_fallback",
]
