"""Our Telegram: a local MTProto 2.0 server that unmodified Telethon talks to.

``TelegramTestServer`` (the listeners, sessions and clients), ``World`` (what the RPC
methods answer), ``FaultPlan`` (Telegram's limits and faults, scripted) and ``ServerLog``
(the ground truth of what the server executed). See ``server.py`` for an example.

Updates: the server pushes new messages to the clients of every recipient account like
Telegram (``server.push_message``, ``server.make_gap``, ``server.push_too_long``; see
``updates.py`` and ``world_delivery.py``); ``OnPeers`` scopes any fault rule to chosen chats.
"""

from telethon_guard.testing._types import (
    AuthState,
    ConnectInfo,
    DcAddress,
    Delay,
    DropReply,
    ReplyError,
    RequestInfo,
    ResetConnection,
    RpcErrorReply,
    Stall,
    TransportError,
)
from telethon_guard.testing.crypto import register_public_key
from telethon_guard.testing.faults import FaultPlan
from telethon_guard.testing.faults_peers import OnPeers
from telethon_guard.testing.log import LogEntry, ServerLog
from telethon_guard.testing.server import (
    API_HASH,
    API_ID,
    ServerInternalError,
    TelegramTestServer,
    clear_config_cache,
)
from telethon_guard.testing.world import Delivered, UnknownPeerError, World, WorldConfig

__all__ = [
    "API_HASH",
    "API_ID",
    "AuthState",
    "ConnectInfo",
    "DcAddress",
    "Delay",
    "Delivered",
    "DropReply",
    "FaultPlan",
    "LogEntry",
    "OnPeers",
    "ReplyError",
    "RequestInfo",
    "ResetConnection",
    "RpcErrorReply",
    "ServerInternalError",
    "ServerLog",
    "Stall",
    "TelegramTestServer",
    "TransportError",
    "UnknownPeerError",
    "World",
    "WorldConfig",
    "clear_config_cache",
    "register_public_key",
]
