"""Keys and request description: the one place that spells the guard's key scheme.

Every piece of guard state (limiter windows, flood-ledger scopes, breaker state, the pace of a
method) lives under a string key that starts with the account, ``acct:<account>``, so one
account's state never mixes with another's and a Redis Cluster can keep an account's keys on
one slot (:func:`hash_tagged`). The layers, the storages, stats and health build keys only
through the functions below.

=========================================== ==============================================
key                                         what it holds
=========================================== ==============================================
``acct:<a>``                                the account-wide ``rate_limits`` windows
``acct:<a>/dc:<d>``                         the circuit breaker of (account, DC)
``acct:<a>/dc:<d>/method:<m>``              ``method_limits`` windows of (account, DC, method)
``acct:<a>/dc:<d>/transfers``               FLOOD_PREMIUM_WAIT block (file transfers on DC d)
``acct:<a>/method:<m>``                     FLOOD_WAIT block of method m (all DCs and peers)
``acct:bot-<h>/method:<m>``                 login flood of a bot token (:func:`login_flood_key`)
``acct:phone-<h>/method:<m>``               login flood of a phone number
``acct:<a>/slowmode:peer:<id>``             SLOWMODE_WAIT block of one chat (sends only)
``acct:<a>/writes:peer:<id>``               FLOOD_WAIT block of one chat's writes (sends, edits)
``acct:<a>/sends``                          the account's ``send_limits`` windows
``acct:<a>/peer:<id>``                      per-chat send limits (bounded: LRU beyond a cap)
``acct:<a>/pace:<m>``                       the adaptive pace learned for method m
=========================================== ==============================================

``<a>`` is the guard's account key (``GuardConfig.account``, else ``user:<id>`` of the logged-in
user, else ``key:<auth key id>`` before login: :func:`telethon_guard._link.account_key`),
``<d>`` a DC id, ``<m>`` a TL method name (:func:`telethon_guard._tl.method_name`), ``peer:<id>``
Telethon's marked peer id (:func:`telethon_guard._tl.peer_key`; users positive, chats and
channels negative).

Request description: :func:`describe` (method, peer, random_id), :func:`is_transfer` (file
transfers, which FLOOD_PREMIUM_WAIT scopes to) and :func:`is_send` (a message sent into a chat:
send limits, per-chat limits and slow mode apply).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

# ``SEND_METHODS`` / ``TRANSFER_METHODS`` (which methods are sends, which are file transfers)
# live in ``_tl``, the one list shared with the test server, and are re-exported here.
from ._tl import SEND_METHODS, TRANSFER_METHODS, describe, unwrap


class Described(Protocol):
    """What :func:`is_send` reads of a call (``CallInfo`` has these fields)."""

    method: str
    peer: str | None
    random_id: int | None


def account_key(account: object) -> str:
    """``acct:<account>``: the account-wide limiter key, prefix of every other key."""
    return f"acct:{account}"


def breaker_key(account: object, dc_id: object) -> str:
    """``acct:<account>/dc:<dc_id>``: the circuit breaker of one (account, DC)."""
    return f"acct:{account}/dc:{dc_id}"


def method_flood_key(account: object, method: str) -> str:
    """``acct:<account>/method:<method>``: the FLOOD_WAIT scope of ``method``."""
    return f"acct:{account}/method:{method}"


def login_flood_key(account: object, method: str, request: object) -> str:
    """The FLOOD_WAIT scope of a login request (:data:`LOGIN_METHODS`): Telegram floods logins
    per bot token / phone number, whatever the auth key, so the scope is
    ``acct:bot-<h>/method:<m>`` or ``acct:phone-<h>/method:<m>`` with ``<h>`` the first 16 hex
    digits of the SHA-256 of the token / the phone's digits (a block then holds for a new auth
    key too; no secret is stored in clear). Other requests (or none of those fields):
    :func:`method_flood_key`. Wrappers (``invokeWithoutUpdates``...) are looked through."""
    request = unwrap(request)
    token = getattr(request, "bot_auth_token", None)
    if isinstance(token, str) and token:
        who = "bot-" + hashlib.sha256(token.encode()).hexdigest()[:16]
    else:
        phone = getattr(request, "phone_number", None)
        digits = "".join(c for c in phone if c.isdigit()) if isinstance(phone, str) else ""
        if not digits:
            return method_flood_key(account, method)
        who = "phone-" + hashlib.sha256(digits.encode()).hexdigest()[:16]
    return method_flood_key(who, method)


def slowmode_key(account: object, peer: str) -> str:
    """``acct:<account>/slowmode:<peer>`` (``peer`` is ``"peer:<id>"``): SLOWMODE_WAIT scope."""
    return f"acct:{account}/slowmode:{peer}"


def chat_flood_key(account: object, peer: str) -> str:
    """``acct:<account>/writes:<peer>`` (``peer`` is ``"peer:<id>"``): the FLOOD_WAIT scope of
    writes (sends, edits) into one chat (:mod:`telethon_guard.flood_scope`)."""
    return f"acct:{account}/writes:{peer}"


def transfers_key(account: object, dc_id: object) -> str:
    """``acct:<account>/dc:<dc_id>/transfers``: the FLOOD_PREMIUM_WAIT scope."""
    return f"acct:{account}/dc:{dc_id}/transfers"


def method_limit_key(account: object, dc_id: object, method: str) -> str:
    """``acct:<account>/dc:<dc_id>/method:<method>``: ``method_limits`` windows."""
    return f"acct:{account}/dc:{dc_id}/method:{method}"


def sends_key(account: object) -> str:
    """``acct:<account>/sends``: the account's ``send_limits`` windows."""
    return f"acct:{account}/sends"


def peer_limit_key(account: object, peer: str) -> str:
    """``acct:<account>/<peer>`` (``peer`` is ``"peer:<id>"``): per-chat send limits."""
    return f"acct:{account}/{peer}"


def pace_key(account: object, method: str) -> str:
    """``acct:<account>/pace:<method>``: the adaptive pace of ``method``."""
    return f"acct:{account}/pace:{method}"


def hash_tagged(key: str) -> str:
    """``acct:42/dc:2/x`` -> ``{acct:42}/dc:2/x``: the Redis Cluster hash tag on the account,
    so every key of one account lands on one slot (one Lua script may touch several)."""
    head, sep, rest = key.partition("/")
    return f"{{{head}}}{sep}{rest}"


def is_transfer(method: str) -> bool:
    """``True`` for a file-transfer method (:data:`TRANSFER_METHODS`)."""
    return method in TRANSFER_METHODS


READ_ONLY_PREFIXES = ("get", "search", "check", "resolve")
"""A method whose name (after its namespace) starts with one of these only reads: running it
twice does what running it once does (``messages.getHistory``, ``contacts.resolveUsername``)."""

IDEMPOTENT_METHODS = frozenset(
    {
        "ping",
        "pingDelayDisconnect",
        "auth.exportAuthorization",
        "auth.importAuthorization",
        "messages.readHistory",
        "channels.readHistory",
    }
)
"""Methods that change state but may run twice safely (same outcome); with
:data:`READ_ONLY_PREFIXES`, :data:`TRANSFER_METHODS` (a file part is addressed by file id and
part number: saving it again overwrites it) and any request with a ``random_id`` (Telegram
de-duplicates it: ``RANDOM_ID_DUPLICATE``) the requests :func:`is_idempotent` accepts."""

LOGIN_METHODS = frozenset(
    {
        "auth.sendCode",
        "auth.resendCode",
        "auth.signIn",
        "auth.signUp",
        "auth.importBotAuthorization",
    }
)
"""The login requests (``client.start()`` sends them). Telegram floods them per phone number /
bot token for hours (public reports: ``auth.importBotAuthorization`` FLOOD_WAITs of
1,658-3,135 s after crash loops, a ``start()`` asleep for 74,089 s), so the guard never waits
for a login flood (raised typed at once, whatever ``max_flood_wait``) and never re-sends a
login request on its own (no retry after a 5xx or a disconnect: a re-sent ``auth.sendCode``
sends a new code and counts towards the flood)."""

_IDEMPOTENT: dict[str, bool] = {}


def is_idempotent(method: str, random_id: int | None = None) -> bool:
    """``True`` when re-sending the request after an attempt that may have run is safe: it
    carries a ``random_id`` (Telegram de-duplicates it), or ``method`` only reads (name starting
    with :data:`READ_ONLY_PREFIXES`), is a file transfer or is in :data:`IDEMPOTENT_METHODS`.
    Anything else (``channels.createChannel``, ``messages.exportChatInvite``...) may have run
    when its attempt timed out, and is not sent again. Cached per method name."""
    if random_id is not None:
        return True
    safe = _IDEMPOTENT.get(method)
    if safe is None:
        name = method.rpartition(".")[2]
        safe = (name.startswith(READ_ONLY_PREFIXES) or method in TRANSFER_METHODS
                or method in IDEMPOTENT_METHODS)
        if len(_IDEMPOTENT) < 4096:
            _IDEMPOTENT[method] = safe
    return safe


def is_send(call: Described) -> bool:
    """``True`` when ``call`` sends a message into ``call.peer`` (a ``random_id`` or one of
    :data:`SEND_METHODS`)."""
    return call.peer is not None and (call.random_id is not None or call.method in SEND_METHODS)


def is_private_peer(peer: str) -> bool:
    """``True`` for a user chat: marked ids of users are positive (``"peer:123"``)."""
    _, _, ident = peer.partition(":")
    try:
        return int(ident) > 0
    except ValueError:
        return False


__all__ = [
    "IDEMPOTENT_METHODS",
    "LOGIN_METHODS",
    "READ_ONLY_PREFIXES",
    "SEND_METHODS",
    "TRANSFER_METHODS",
    "Described",
    "account_key",
    "breaker_key",
    "chat_flood_key",
    "describe",
    "hash_tagged",
    "is_idempotent",
    "is_private_peer",
    "is_send",
    "is_transfer",
    "login_flood_key",
    "method_flood_key",
    "method_limit_key",
    "pace_key",
    "peer_limit_key",
    "sends_key",
    "slowmode_key",
    "transfers_key",
]
