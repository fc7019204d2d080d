"""Shared fakes for the guard unit tests: requests, calls, scripted sends, pipelines."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from typing import Any

from telethon.tl import functions, types

from telethon_guard.call import CallInfo
from telethon_guard.config import GuardConfig
from telethon_guard.events import EventBus, GuardEvent
from telethon_guard.fakeclock import FakeClock
from telethon_guard.pipeline import Pipeline


def history_request() -> Any:
    return functions.messages.GetHistoryRequest(
        peer=types.InputPeerSelf(), offset_id=0, offset_date=None, add_offset=0, limit=1,
        max_id=0, min_id=0, hash=0)


def send_request(peer_id: int = 42, random_id: int = 7) -> Any:
    peer: Any
    if peer_id > 0:
        peer = types.InputPeerUser(peer_id, 0)
    else:
        peer = types.InputPeerChat(-peer_id)
    return functions.messages.SendMessageRequest(peer=peer, message="hi", random_id=random_id)


def make_call(method: str = "messages.getHistory", *, account: str = "a1", dc_id: int = 2,
              peer: str | None = None, random_id: int | None = None, transfer: bool = False,
              request: Any = None, deadline_at: float | None = None) -> CallInfo:
    return CallInfo(method=method, request=request if request is not None else history_request(),
                    account=account, dc_id=dc_id, peer=peer, random_id=random_id,
                    transfer=transfer, deadline_at=deadline_at)


def send_call(peer_id: int, random_id: int = 7, **kw: Any) -> CallInfo:
    return make_call("messages.sendMessage", peer=f"peer:{peer_id}", random_id=random_id,
                     request=send_request(peer_id, random_id), **kw)


class Script:
    """A fake ``send``: each call pops the next outcome (an exception instance/class is raised,
    a callable is awaited/called, anything else returned); records the clock time of each send.
    When the script runs out, ``default`` is used."""

    def __init__(self, clock: FakeClock, outcomes: Iterable[Any] = (), default: Any = "ok"):
        self.clock = clock
        self.outcomes = list(outcomes)
        self.default = default
        self.times: list[float] = []

    @property
    def count(self) -> int:
        return len(self.times)

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]

    async def __call__(self) -> Any:
        self.times.append(self.clock.now())
        item = self.outcomes.pop(0) if self.outcomes else self.default
        if isinstance(item, BaseException) or (isinstance(item, type)
                                               and issubclass(item, BaseException)):
            raise item
        if callable(item):
            r = item()
            if asyncio.iscoroutine(r):
                r = await r
            return r
        return item


class Recorder:
    """Collects events; ``of(cls)`` filters by type."""

    def __init__(self) -> None:
        self.events: list[GuardEvent] = []

    def __call__(self, ev: GuardEvent) -> None:
        self.events.append(ev)

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


def make_pipeline(clock: FakeClock | None = None, **cfg: Any,
                  ) -> tuple[Pipeline, FakeClock, Recorder]:
    clock = clock or FakeClock()
    rec = Recorder()
    cfg.setdefault("seed", 1)
    cfg.setdefault("deadline", None)
    config = GuardConfig(**cfg)
    pipe = Pipeline(config, events=EventBus([rec]), clock=clock)
    return pipe, clock, rec


async def bounded(aw: Any, timeout: float = 10.0) -> Any:
    """Real-time bound on a test step (the fake clock does not advance real time)."""
    return await asyncio.wait_for(aw, timeout)


Factory = Callable[[], Any]


class MaxRandom(random.Random):
    """Full jitter always drawing the ceiling (the worst case)."""

    def uniform(self, a: float, b: float) -> float:
        return b


class ZeroRandom(random.Random):
    """Full jitter always drawing the floor (the shortest wait)."""

    def uniform(self, a: float, b: float) -> float:
        return a


async def start_hanging_call(pipe: Pipeline) -> asyncio.Task[Any]:
    """A call through ``pipe`` whose attempt never returns, started and inside its attempt
    (bounded wait); the caller cancels the task."""
    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await asyncio.get_running_loop().create_future()
        return "never"

    task = asyncio.create_task(pipe.invoke(make_call(), hang))
    await bounded(started.wait())
    return task
