"""attempt_once retrieves the exception of an answer that raced a cancel (send_awaited adds no
retrieving callback to the futures it queues, so attempt_once must)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from telethon.tl import functions

from telethon_guard._send_once import attempt_once


async def test_answer_racing_a_cancel_is_retrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    try:
        futs: list[asyncio.Future[Any]] = []

        def send(request: Any, ordered: bool = False) -> asyncio.Future[Any]:
            futs.append(loop.create_future())
            return futs[-1]

        task = asyncio.ensure_future(
            attempt_once(object(), send, functions.updates.GetStateRequest()))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert futs and not task.done()
        # The answer (an error) and the cancel arrive in the same loop turn.
        futs[0].set_exception(RuntimeError("answer"))
        task.cancel()
        try:
            await asyncio.wait_for(task, 5)
        except asyncio.CancelledError:
            pass
        assert task.cancelled()
        futs.clear()
        del task
        gc.collect()
        await asyncio.sleep(0)
        assert not [c for c in reported if "never retrieved" in str(c.get("message", ""))]
    finally:
        loop.set_exception_handler(old)
