"""What the pipeline knows about one logical call (one request, all its attempts)."""

from __future__ import annotations

from dataclasses import dataclass, field

from telethon.tl.tlobject import TLObject

from .keys import TRANSFER_METHODS


@dataclass
class CallInfo:
    """One logical MTProto call going through the guard pipeline.

    ``deadline_at`` is an absolute time on the guard clock (monotonic seconds) or ``None``
    for no deadline. ``account`` is the guard's account key (``GuardConfig.account`` or the
    session's user id / auth-key fingerprint). ``peer`` is ``telethon_guard._tl.peer_key()``.
    ``transfer`` marks file transfers (upload.getFile / saveFilePart / saveBigFilePart), which
    FLOOD_PREMIUM_WAIT scopes to. ``idempotent`` is ``False`` for requests whose re-sending is
    only safe because they carry a ``random_id`` the server de-duplicates.
    """

    method: str
    request: TLObject
    account: str
    dc_id: int
    peer: str | None = None
    random_id: int | None = None
    transfer: bool = False
    idempotent: bool = True
    deadline_at: float | None = None
    attempt: int = 0  # attempts made so far (the pipeline increments it)
    tags: dict[str, str] = field(default_factory=dict)
    max_flood_wait: float | None = None
    """Per-call override of ``GuardConfig.max_flood_wait`` (seconds), e.g. from
    ``client(request, flood_sleep_threshold=...)``; ``None``: the config's value."""


__all__ = ["TRANSFER_METHODS", "CallInfo"]
