"""Run the example service against the embedded MTProto test server, in one process.

::

    pip install -e '.[dev]'            # fastapi, uvicorn, prometheus-client
    python -m examples.fastapi_service --port 8000 --storm

then ``curl localhost:8000/health``, ``/channels``, ``/metrics``, ``/stats``. ``--storm``
scripts Telegram pushing back on the test server, every ``--storm-every`` seconds: a transport
-429 storm refusing connections for 4 s, then ``channels.getFullChannel`` answering
FLOOD_WAIT_5 twice. Watch ``/channels`` switch to ``"source": "cache"`` and back, and the
``telethon_guard_*`` metrics count it. After a flood ``/channels`` answers from the cache at once
for the flood's seconds and is live again within ``pace_recover`` (2 s) after them: the pace the
guard learns from a one-off flood is dropped once the calls run at their old rate again
(``telethon_guard.pacing``; ``tests/integration/test_example_service_flood_pacing.py``).

Ctrl-C shuts the service down (uvicorn's shutdown, then the client and the test server) and
prints one line, exit status 130; SIGTERM does the same silently, exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator

import uvicorn

from telethon_guard import GuardedTelegramClient
from telethon_guard.testing import FaultPlan, TelegramTestServer
from telethon_guard.testing.faults import ErrorOnCalls, Transport429Storm

from .app import ChannelCache, ChannelService, create_app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.fastapi_service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--cache", default="channels_cache.sqlite3", help="SQLite cache file")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds /channels may spend on Telegram before serving the cache")
    p.add_argument("--storm", action="store_true", help="script -429 storms and FLOOD_WAITs")
    p.add_argument("--storm-every", type=float, default=30.0, help="seconds between storms")
    return p


async def _storms(plan: FaultPlan, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        assert plan.started_at is not None
        plan.add(Transport429Storm(start=time.monotonic() - plan.started_at, duration=4.0))
        await asyncio.sleep(every / 2)
        plan.add(ErrorOnCalls("channels.getFullChannel", 420, "FLOOD_WAIT_5", times=2))


INTERRUPTED = "python -m examples.fastapi_service: interrupted"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, like the telethon-guard command


class _Server(uvicorn.Server):
    """uvicorn's server, except that a Ctrl-C it caught is not raised again once ``serve()``
    returns: uvicorn does that so the program around it stops too, and ``asyncio.run`` then
    cancels :func:`main` in the middle of its cleanup (closing the client and the test server)
    and ends in a 30-line ``KeyboardInterrupt`` traceback. Here ``main`` finishes its cleanup
    and reports the interrupt (``interrupted``); :func:`run` prints one line and returns 130.
    (``_captured_signals``: uvicorn's own list, 0.29 on; without it nothing is re-raised.)"""

    interrupted = False
    """Whether Ctrl-C (SIGINT) stopped it; SIGTERM stops it too, as a normal end (exit 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if captured:
                    self.interrupted = signal.SIGINT in captured
                    captured.clear()


async def main(argv: list[str] | None = None) -> bool:
    """Serve until Ctrl-C or SIGTERM; ``True`` when Ctrl-C stopped it."""
    args = _parser().parse_args(argv)
    # the guard's events, one line each (INFO: reconnects, flood waits ended...); Telethon quiet
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("telethon_guard").setLevel(logging.INFO)
    plan = FaultPlan()
    async with TelegramTestServer(faults=plan) as server:
        client = server.client(cls=GuardedTelegramClient, deadline=10.0, attempt_timeout=2.0,
                               breaker_failure_threshold=3, breaker_open_seconds=2.0)
        service = ChannelService(client, cache=ChannelCache(args.cache), timeout=args.timeout)
        app = create_app(service)
        storms = asyncio.ensure_future(_storms(plan, args.storm_every)) if args.storm else None
        try:
            config = uvicorn.Config(app, host=args.host, port=args.port, loop="asyncio",
                                    lifespan="on", log_level="info")
            web = _Server(config)
            await web.serve()
        finally:
            if storms is not None:
                storms.cancel()
                await asyncio.gather(storms, return_exceptions=True)
    return web.interrupted


def run(argv: list[str] | None = None) -> int:
    """Run :func:`main`; the exit status: 0, or 130 after Ctrl-C (also one during start-up,
    before uvicorn serves) with one line on stderr, like the ``telethon-guard`` command."""
    try:
        interrupted = asyncio.run(main(argv))
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        print(INTERRUPTED, file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(run())
