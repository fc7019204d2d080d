"""Helpers shared by tests/integration/test_client_*.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from telethon_guard.call import CallInfo

T = TypeVar("T")

BOUND = 20.0
"""Upper bound (seconds) of any single wait in these tests."""


async def bounded(aw: Awaitable[T], seconds: float = BOUND) -> T:
    """``asyncio.wait_for`` with the suite's bound."""
    return await asyncio.wait_for(aw, seconds)


class InvokeRecorder:
    """Records every ``CallInfo`` passed to a pipeline's ``invoke`` (and still calls it).

    Observes our own pipeline, not Telethon: proves a request went through the guard.
    """

    def __init__(self, pipeline: Any) -> None:
        self.calls: list[CallInfo] = []
        self._pipeline = pipeline
        self._original = pipeline.invoke

        async def invoke(call: CallInfo, send: Callable[[], Awaitable[Any]]) -> Any:
            self.calls.append(call)
            return await self._original(call, send)

        pipeline.invoke = invoke

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def of(self, method: str) -> list[CallInfo]:
        return [c for c in self.calls if c.method == method]

    def close(self) -> None:
        self._pipeline.invoke = self._original
