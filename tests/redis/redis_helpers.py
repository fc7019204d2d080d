"""Helpers of the Redis storage tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from typing import Any

import redis


def reachable(url: str) -> str | None:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


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


def node_command(port: int, *args: str) -> Any:
    """One command to the Redis node at 127.0.0.1:``port`` on a fresh connection (1 s socket
    timeout), closed afterwards; redis-py's errors propagate."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too (Redis Cluster
    refuses higher ports)."""
    for _ in range(1000):
        port = random.randrange(20000, 55000)
        if port not in taken and port + 10000 not in taken and _is_free(port) \
                and _is_free(port + 10000):
            taken.update((port, port + 10000))
            return port
    raise RuntimeError("no free port pair for a cluster node")


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
            if reachable(self.url) is None:
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



class LocalCluster:
    """A real Redis Cluster on 127.0.0.1: ``primaries`` ``redis-server --cluster-enabled yes``
    processes (each with ``replicas`` replicas) in ``workdir``, joined with ``redis-cli
    --cluster create``. :meth:`start` waits (at most ``timeout`` s) until every node says
    ``cluster_state:ok``; :meth:`stop` kills every process. Nothing persists (``--save ''
    --appendonly no``)."""

    def __init__(self, workdir: str, primaries: int = 3, replicas: int = 0,
                 timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.replicas = replicas
        taken: set[int] = set()
        self.ports = [free_cluster_port(taken) for _ in range(primaries * (1 + replicas))]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.timeout = timeout

    @property
    def url(self) -> str:
        """A cluster URL naming the first node (the client discovers the others)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start_node(self, port: int) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        self.procs[port] = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"{self.workdir}/nodes-{port}.conf",
             "--cluster-node-timeout", "1000", "--dir", self.workdir,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while reachable(f"redis://127.0.0.1:{port}/0") is not None:
            if time.monotonic() > deadline or self.procs[port].poll() is not None:
                raise RuntimeError(f"cluster node on port {port} did not start")
            time.sleep(0.02)

    def kill_node(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        cli = shutil.which("redis-cli")
        assert cli is not None
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=self.timeout)
        self.wait_ok()

    def wait_ok(self) -> None:
        """Until every running node reports ``cluster_state:ok`` (bounded by ``timeout``)."""
        deadline = time.monotonic() + self.timeout
        while True:
            if all(self.state(p) == "ok" for p in self.procs) and self._slots_served():
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the local Redis Cluster did not become ok")
            time.sleep(0.1)

    def state(self, port: int) -> str:
        try:
            info = node_command(port, "CLUSTER INFO")
        except Exception:
            return "down"
        if isinstance(info, dict):  # redis-py parses CLUSTER INFO into a dict
            if int(info.get("cluster_known_nodes", 0)) < len(self.procs):
                return "joining"  # gossip has not told this node of every other yet
            return str(info.get("cluster_state", "unknown"))
        text = info.decode() if isinstance(info, bytes) else str(info)
        for line in text.splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return "unknown"

    def _slots_served(self) -> bool:
        """Every slot's primary (as every running node sees it) is a running node."""
        for port in self.procs:
            try:
                slots = node_command(port, "CLUSTER SLOTS")
            except redis.RedisError:
                return False
            if any(int(primary[1]) not in self.procs for _s, _e, primary, *_ in slots):
                return False
        return True

    def primary_of(self, key: str) -> int:
        """Port of the node serving ``key``'s slot now."""
        for port in self.procs:
            try:
                client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
                try:
                    slot = int(client.execute_command("CLUSTER KEYSLOT", key))
                    for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                        if start <= slot <= end:
                            return int(primary[1])
                finally:
                    client.close()
            except redis.RedisError:
                continue
        raise RuntimeError(f"no node serves {key!r}")

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill_node(port)
