"""Fixtures of the Redis storage tests.

* ``redis_url``: the machine's Redis at 127.0.0.1:6379 (db 0). When it does not answer the tests
  skip with the reason, except under ``CI=true``, where a missing Redis is a failure.
* ``prefix``: a unique key prefix per test; every key under it is deleted afterwards.
* ``redis_cluster``: a real 3-primary Redis Cluster on free ports, started once per session
  from here (``redis-server --cluster-enabled yes`` and ``redis-cli --cluster create``), killed
  at the end; bounded to 30 s to come up. Under pytest-xdist every test that uses it is put in
  one ``xdist_group`` (``--dist loadgroup``), so one worker starts one cluster, not one each.
* ``private_redis``: a throw-away ``redis-server`` on a free port (``--save '' --appendonly no``)
  that tests may stop and restart; the machine's Redis on 6379 is never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import pytest
from redis_helpers import LocalCluster, PrivateRedis, delete_prefix, free_port, reachable

REDIS_URL = os.environ.get("TG_GUARD_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "redis_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("redis_cluster"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    problem = reachable(REDIS_URL)
    if problem is not None:
        msg = f"Redis at {REDIS_URL} is not reachable ({problem})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " and CI=true: the shared-state tests must run")
        pytest.skip(msg)
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"tg-guard-test-{uuid.uuid4().hex[:12]}"
    yield value
    delete_prefix(redis_url, value)


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


def _need_redis_binaries() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server/redis-cli are not installed and CI=true")
        pytest.skip("redis-server/redis-cli are not installed")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    _need_redis_binaries()
    with tempfile.TemporaryDirectory(prefix="tg-guard-cluster-") as workdir:
        cluster = LocalCluster(workdir)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
