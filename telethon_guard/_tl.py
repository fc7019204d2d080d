"""Naming helpers shared by the guard and the test server.

Both sides must agree on what "the method" of a request is, so flood scopes,
rate-limit keys and the server's ground-truth log line up.
"""

from __future__ import annotations

from telethon import utils
from telethon.tl import functions, types
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


TRANSFER_METHODS: frozenset[str] = frozenset(
    {"upload.getFile", "upload.saveFilePart", "upload.saveBigFilePart", "upload.getCdnFile"}
)
"""File-transfer methods: FLOOD_PREMIUM_WAIT scopes to them, per DC (design notes §3). The
guard's transfer classification and the test server's ``FloodPremium`` default."""

POST_METHODS: frozenset[str] = frozenset(
    {
        "messages.sendMessage",
        "messages.sendMedia",
        "messages.sendMultiMedia",
        "messages.forwardMessages",
    }
)
"""Methods that post a message into a chat: what slow mode (``SLOWMODE_WAIT_X``) and
``PEER_FLOOD`` limit on Telegram, and the test server's default for those rules."""

SEND_METHODS: frozenset[str] = POST_METHODS | frozenset(
    {
        "messages.sendInlineBotResult",
        "messages.sendScreenshotNotification",
        "messages.sendReaction",
        "messages.sendVote",
    }
)
"""Methods the guard counts as message sends (send limits, per-peer limits, send
classification): the posts of :data:`POST_METHODS` and the other writes addressed to a chat."""


# Per-class caches (bounded: the TL schema has ~2,000 classes): a class's method name and which
# of the fields read below its instances carry (Telethon's generated ``__init__`` sets every
# field) are computed once per class.
_CACHE_MAX = 4096
_NAMES: dict[type, str] = {}
_FIELDS: dict[type, tuple[str | None, bool]] = {}


def unwrap(request: TLObject) -> TLObject:
    """Return the innermost request under invokeWithLayer/initConnection/... wrappers."""
    while isinstance(request, _WRAPPERS):
        request = request.query
    return request


def method_name(request: TLObject) -> str:
    """TL method name of ``request`` (wrappers removed), e.g. ``"messages.getHistory"``.

    Derived from Telethon's class and module: ``telethon.tl.functions.messages.GetHistoryRequest``
    becomes ``messages.getHistory``; top-level functions have no namespace (``"ping"``).
    Cached per class (wrappers are never cached: their name is the inner request's).
    """
    cls = type(request)
    name = _NAMES.get(cls)
    if name is not None:
        return name
    if isinstance(request, _WRAPPERS):
        return method_name(unwrap(request))
    name = _class_method_name(cls)
    if len(_NAMES) < _CACHE_MAX:
        _NAMES[cls] = name
    return name


def _class_method_name(cls: type) -> str:
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


def class_method_name(cls: type) -> str:
    """TL method name of a Telethon request *class*, spelled as :func:`method_name` spells it."""
    return _class_method_name(cls)


_KNOWN: frozenset[str] | None = None


def known_method_names() -> frozenset[str]:
    """Every TL function name of the Telethon installed (e.g. ``"messages.getHistory"``).

    Used to reject misspelt method names in settings at construction: a typo such as
    ``"messages.GetHistory"`` would otherwise never match a request and silently not apply.
    """
    global _KNOWN
    if _KNOWN is None:
        from telethon.tl.alltlobjects import tlobjects

        _KNOWN = frozenset(
            _class_method_name(cls)
            for cls in tlobjects.values()
            if cls.__module__.startswith("telethon.tl.functions")
        )
    return _KNOWN


def peer_key(request: TLObject) -> str | None:
    """Stable key of the chat a request targets (``"peer:<marked id>"``), or ``None``.

    Uses the request's ``peer`` (or ``to_peer``: the chat a forward goes to, or ``channel``)
    field and Telethon's marked-id convention
    (users positive, chats negative, channels -100...). Used for slow mode and per-chat send
    limits; never logged unless the user opts in.
    """
    inner = unwrap(request)
    field = _fields(inner)[0]
    if field is None:
        return None
    peer = getattr(inner, field, None)
    if peer is None and field == "peer":
        peer = getattr(inner, "channel", None)
    if peer is None:
        return None
    return _key_of_peer(peer)


_MAX_SHORT_ID = 9999999999  # utils.get_peer_id re-resolves chat / channel ids beyond this
_CHANNEL_MARK = 1000000000000  # marked channel id: -(1000000000000 + channel_id)


_KEYS_MAX = 4096
_USER_KEYS: dict[int, str] = {}
_CHAT_KEYS: dict[int, str] = {}
_CHANNEL_KEYS: dict[int, str] = {}
"""Peer keys by id, per kind (bounded: cleared when full): a bot writes to the same chats
over and over, and formatting a 13-digit marked id costs more than a look-up."""


def _remember(table: dict[int, str], ident: int, key: str) -> str:
    if len(table) >= _KEYS_MAX:
        table.clear()
    table[ident] = key
    return key


def _user_key(peer: TLObject) -> str | None:
    ident = peer.user_id
    if type(ident) is not int:
        return None
    key = _USER_KEYS.get(ident)
    return key if key is not None else _remember(_USER_KEYS, ident, f"peer:{ident}")


def _chat_key(peer: TLObject) -> str | None:
    ident = peer.chat_id
    if type(ident) is not int:
        return None
    key = _CHAT_KEYS.get(ident)
    if key is not None:
        return key
    if 0 < ident <= _MAX_SHORT_ID:
        return _remember(_CHAT_KEYS, ident, f"peer:{-ident}")
    return None


def _channel_key(peer: TLObject) -> str | None:
    ident = peer.channel_id
    if type(ident) is not int:
        return None
    key = _CHANNEL_KEYS.get(ident)
    if key is not None:
        return key
    if 0 < ident <= _MAX_SHORT_ID:
        return _remember(_CHANNEL_KEYS, ident, f"peer:{-(_CHANNEL_MARK + ident)}")
    return None


_PEER_KEYS = {
    types.InputPeerUser: _user_key,
    types.InputPeerUserFromMessage: _user_key,
    types.InputUser: _user_key,
    types.InputUserFromMessage: _user_key,
    types.PeerUser: _user_key,
    types.InputPeerChat: _chat_key,
    types.PeerChat: _chat_key,
    types.InputPeerChannel: _channel_key,
    types.InputPeerChannelFromMessage: _channel_key,
    types.InputChannel: _channel_key,
    types.InputChannelFromMessage: _channel_key,
    types.PeerChannel: _channel_key,
}
"""The common peer classes: their marked id read directly, as ``utils.get_peer_id`` computes it
(users: the id; chats: ``-id``; channels: ``-(10**12 + id)``); ``None`` hands an unusual value
(an id out of range, not an ``int``) to ``utils.get_peer_id`` itself."""


def _key_of_peer(peer: TLObject) -> str | None:
    """``"peer:<utils.get_peer_id(peer)>"``, or ``None`` when Telethon cannot mark ``peer``."""
    fast = _PEER_KEYS.get(type(peer))
    if fast is not None:
        key = fast(peer)
        if key is not None:
            return key
    try:
        return f"peer:{utils.get_peer_id(peer)}"
    except (TypeError, ValueError):
        return None


def random_id_of(request: TLObject) -> int | None:
    """The ``random_id`` of a send-like request (first one for lists), else ``None``."""
    inner = unwrap(request)
    if not _fields(inner)[1]:
        return None
    rid = getattr(inner, "random_id", None)
    if isinstance(rid, list):
        return rid[0] if rid else None
    return rid if isinstance(rid, int) else None


def _fields(inner: TLObject) -> tuple[str | None, bool]:
    """``(peer field, has random_id)`` of ``inner``'s class: ``"peer"``, ``"to_peer"``
    (``messages.forwardMessages``), ``"channel"`` or ``None``, then whether a ``random_id``
    field exists. Cached per class: every instance
    of a TL class carries all of its fields (Telethon's generated ``__init__`` sets them)."""
    cls = type(inner)
    fields = _FIELDS.get(cls)
    if fields is None:
        has_peer = hasattr(inner, "peer")
        peer: str | None = ("peer" if has_peer
                            else "to_peer" if hasattr(inner, "to_peer")
                            else "channel" if hasattr(inner, "channel") else None)
        fields = (peer, hasattr(inner, "random_id"))
        if len(_FIELDS) < _CACHE_MAX:
            _FIELDS[cls] = fields
    return fields


_PLANS: dict[type, tuple[str, str | None, bool]] = {}


def describe(request: TLObject) -> tuple[str, str | None, int | None]:
    """``(method_name(request), peer_key(request), random_id_of(request))`` in one pass (the
    guard's per-call path): one class look-up (``(method, peer field, has random_id)``,
    cached per class; wrappers are looked through and never cached), no look-up of absent
    fields, the common peer classes' marked ids read directly (:data:`_PEER_KEYS`)."""
    plan = _PLANS.get(type(request))
    if plan is None:
        inner = unwrap(request)
        plan = (method_name(inner), *_fields(inner))
        if inner is not request:
            request = inner
        elif len(_PLANS) < _CACHE_MAX:
            _PLANS[type(request)] = plan
    name, peer_field, has_rid = plan
    peer = None
    if peer_field is not None:
        target = getattr(request, peer_field, None)
        if target is None and peer_field == "peer":
            target = getattr(request, "channel", None)
        if target is not None:
            fast = _PEER_KEYS.get(type(target))  # _key_of_peer, inline
            if fast is not None:
                peer = fast(target)
            if peer is None:
                peer = _key_of_peer(target)
    rid = None
    if has_rid:
        value = getattr(request, "random_id", None)
        if isinstance(value, list):
            rid = value[0] if value else None
        elif isinstance(value, int):
            rid = value
    return name, peer, rid
