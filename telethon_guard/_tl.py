"""Naming helpers shared by the guard and the test server.

Both sides must agree on what "the method" of a request is, so flood scopes,
rate-limit keys and the server's ground-truth log line up.
"""

from __future__ import annotations

from telethon import utils
from telethon.tl import functions
from telethon.tl.tlobject import TLObject, TLRequest

# Wrappers that carry another request in ``query``; the inner one is "the method".
_WRAPPERS: tuple[type[TLRequest], ...] = (
    functions.InvokeWithLayerRequest,
    functions.InitConnectionRequest,
    functions.InvokeWithoutUpdatesRequest,
    functions.InvokeAfterMsgRequest,
    functions.InvokeWithTakeoutRequest,
    functions.InvokeWithMessagesRangeRequest,
)


def unwrap(request: TLObject) -> TLObject:
    """Return the innermost request under invokeWithLayer/initConnection/... wrappers."""
    while isinstance(request, _WRAPPERS):
        request = request.query
    return request


def method_name(request: TLObject) -> str:
    """TL method name of ``request`` (wrappers removed), e.g. ``"messages.getHistory"``.

    Derived from Telethon's class and module: ``telethon.tl.functions.messages.GetHistoryRequest``
    becomes ``messages.getHistory``; top-level functions have no namespace (``"ping"``).
    """
    inner = unwrap(request)
    cls = type(inner)
    name = cls.__name__
    if name.endswith("Request"):
        name = name[: -len("Request")]
    name = name[:1].lower() + name[1:]
    namespace = cls.__module__.rsplit(".", 1)[-1]
    if namespace in ("functions", "tlobject") or not cls.__module__.startswith(
        "telethon.tl.functions"
    ):
        return name
    return f"{namespace}.{name}"


def peer_key(request: TLObject) -> str | None:
    """Stable key of the chat a request targets (``"peer:<marked id>"``), or ``None``.

    Uses the request's ``peer`` (or ``channel``) field and Telethon's marked-id convention
    (users positive, chats negative, channels -100...). Used for slow mode and per-chat send
    limits; never logged unless the user opts in.
    """
    inner = unwrap(request)
    peer = getattr(inner, "peer", None)
    if peer is None:
        peer = getattr(inner, "channel", None)
    if peer is None:
        return None
    try:
        return f"peer:{utils.get_peer_id(peer)}"
    except (TypeError, ValueError):
        return None


def random_id_of(request: TLObject) -> int | None:
    """The ``random_id`` of a send-like request (first one for lists), else ``None``."""
    inner = unwrap(request)
    rid = getattr(inner, "random_id", None)
    if isinstance(rid, list):
        return rid[0] if rid else None
    return rid if isinstance(rid, int) else None
