"""Fixtures of the Redis storage tests.

* ``redis_url``: the machine's Redis at 127.0.0.1:6379 (db 0). When it does not answer the tests
  skip with the reason, except under ``CI=true``, where a missing Redis is a failure.
* ``prefix``: a unique key prefix per test; every key under it is deleted afterwards.
* ``private_redis``: a throw-away ``redis-server`` on a free port (``--save '' --appendonly no``)
  that tests may stop and restart; the machine's Redis on 6379 is never touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_URL = os.environ.get("TG_GUARD_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> str | None:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    problem = _reachable(REDIS_URL)
    if problem is not None:
        msg = f"Redis at {REDIS_URL} is not reachable ({problem})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " and CI=true: the shared-state tests must run")
        pytest.skip(msg)
    return REDIS_URL


def delete_prefix(url: str, value: str) -> int:
    """Delete every key under ``value:``; returns how many there were."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{value}:*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"tg-guard-test-{uuid.uuid4().hex[:12]}"
    yield value
    delete_prefix(redis_url, value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateRedis:
    """A ``redis-server`` subprocess on ``port`` that a test may :meth:`stop` and
    :meth:`start` again (same port)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _reachable(self.url) is None:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is not installed and CI=true")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
