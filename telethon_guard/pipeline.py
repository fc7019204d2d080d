"""The guard pipeline every MTProto request passes through.

``deadline -> breaker -> flood ledger -> rate limiter -> retry -> Telethon send``

(Pass-through placeholder: the signature is final; the layers land next.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .call import CallInfo
from .clock import Clock, MonotonicClock
from .config import GuardConfig
from .events import EventBus

T = TypeVar("T")


class Pipeline:
    """Composes the guard layers for one client (one account)."""

    def __init__(self, config: GuardConfig, storage: Any = None, events: EventBus | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or MonotonicClock()
        self.events = events or EventBus(config.on_event)
        self.storage = storage

    async def invoke(self, call: CallInfo, send: Callable[[], Awaitable[T]]) -> T:
        """Run ``send()`` (one network attempt of ``call.request``) under the guard."""
        call.attempt += 1
        return await send()


__all__ = ["Pipeline"]
