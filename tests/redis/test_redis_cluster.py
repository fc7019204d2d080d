"""RedisStorage on a real local Redis Cluster (3 primaries, started by the ``redis_cluster``
fixture) and the bad inputs around it: the guard's semantics hold on the cluster, every key of
one account lives in one slot (so a multi-key script runs on one node) while accounts spread
over the nodes, the stats view reads every node, NOSCRIPT after a script flush recovers, a
cluster URL on a plain Redis and a plain URL on a cluster node give clear errors, BUSY gives a
clear error within the timeout, and another application's keys are never touched or read."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import redis
from redis_helpers import LocalCluster, PrivateRedis

from telethon_guard.errors import GuardConfigError, StorageUnavailableError
from telethon_guard.storage import OPEN, BreakerPolicy, LimitSpec
from telethon_guard.storage.redis import RedisStorage, from_url

# Every client here gets a timeout well above a round trip on a loaded machine (the default,
# 0.25 s, is a production figure; a cluster client's first call also discovers the slots and
# loads the scripts): no test here is about the timeout but the BUSY one, which sets its own.
TIMEOUT = 5.0
# Redis keeps time in microseconds: an elapsed time measured around a call bounds the one
# inside it up to that rounding.
EPS = 1e-3
POLICY = BreakerPolicy(threshold=1, open_seconds=30.0, growth=2.0, max_open=300.0)


def _prefix() -> str:
    return f"tg-guard-cl-{uuid.uuid4().hex[:10]}"


def _node_keys(cluster: LocalCluster, match: str) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    for port in cluster.procs:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            keys = list(client.scan_iter(match=match, count=1000))
        finally:
            client.close()
        if keys:
            found[port] = keys
    return found


async def test_cluster_semantics_and_one_slot_per_account(redis_cluster: LocalCluster) -> None:
    prefix = _prefix()
    st = from_url(f"{redis_cluster.url}?prefix={prefix}", storage_fallback="fail",
                  timeout=TIMEOUT)
    try:
        accounts = [f"a{i}" for i in range(12)]
        blocked_at: dict[str, float] = {}
        for a in accounts:
            specs = [LimitSpec(f"acct:{a}/dc:2/method:m", ((3, 0.4),)),
                     LimitSpec(f"acct:{a}/dc:2", ((100, 1.0),))]
            started = time.monotonic()
            delays = [(await st.reserve(specs)).delay for _ in range(4)]
            # The 4th waits for the 1st slot to leave the 0.4 s window: 0.4 s less the time
            # the four round trips took (whatever the load).
            took = time.monotonic() - started
            assert delays[:3] == [0.0] * 3, delays
            assert 0.4 - took - EPS <= delays[3] <= 0.4 + EPS, (delays, took)
            blocked_at[a] = time.monotonic()
            assert 9.9 <= await st.flood_block(f"acct:{a}/method:x", 10.0) <= 10.0
            assert (await st.breaker_failure(f"acct:{a}/dc:2", POLICY)).state == OPEN
        # a second process (its own client) sees the same state
        other = from_url(f"{redis_cluster.url}?prefix={prefix}", storage_fallback="fail",
                         timeout=TIMEOUT)
        try:
            left = await other.flood_left("acct:a3/method:x")
            # 10 s less the time since it was set (the loop and this client's first call)
            assert 10.0 - (time.monotonic() - blocked_at["a3"]) - EPS <= left <= 10.0, left
            assert (await other.breaker_acquire("acct:a3/dc:2", 1.0)).decision == "reject"
            await other.refresh_view()  # SCAN on every primary
            assert set(other.flood_scopes()) == {f"acct:{a}/method:x" for a in accounts}
            assert set(other.breaker_keys()) == {f"acct:{a}/dc:2" for a in accounts}
        finally:
            await other.aclose()
        per_node = _node_keys(redis_cluster, f"{prefix}:*")
        assert len(per_node) >= 2, per_node  # accounts spread over the primaries
        for a in accounts:
            tag = f"{{acct:{a}}}".encode()
            nodes = {port for port, keys in per_node.items() for k in keys if tag in k}
            assert len(nodes) == 1, (a, nodes)  # rl (2 keys), fl, br of one account: one node
            port = nodes.pop()
            client = redis.Redis(host="127.0.0.1", port=port)
            try:
                slots = {client.execute_command("CLUSTER KEYSLOT", k)
                         for k in per_node[port] if tag in k}
            finally:
                client.close()
            assert len(slots) == 1, (a, slots)
    finally:
        await st.aclose()
        for port, keys in _node_keys(redis_cluster, f"{prefix}:*").items():
            node = redis.Redis(host="127.0.0.1", port=port)
            for k in keys:  # one by one: keys of several slots
                node.delete(k)
            node.close()


async def test_cluster_recovers_from_noscript(redis_cluster: LocalCluster) -> None:
    st = from_url(redis_cluster.url, prefix=_prefix(), storage_fallback="fail",
                  timeout=TIMEOUT)
    try:
        assert await st.flood_block("acct:n1/method:x", 5.0) > 4.9
        for port in redis_cluster.procs:
            redis.Redis(host="127.0.0.1", port=port).script_flush()
        assert await st.flood_left("acct:n1/method:x") > 4.0  # NOSCRIPT -> loaded, run again
        assert st.available and st.fallbacks == 0
    finally:
        await st.aclose()


async def test_cluster_url_on_a_plain_redis_is_a_clear_error(
        private_redis: PrivateRedis) -> None:
    url = f"redis+cluster://127.0.0.1:{private_redis.port}"
    st = from_url(url, storage_fallback="fail", timeout=3.0)
    try:
        with pytest.raises(GuardConfigError, match="not a Redis Cluster"):
            await asyncio.wait_for(st.check(), 10)
        with pytest.raises(StorageUnavailableError, match="not a Redis Cluster"):
            await asyncio.wait_for(st.flood_left("acct:1/method:x"), 10)
    finally:
        await st.aclose()
    st = from_url(f"{private_redis.url}?cluster=true", storage_fallback="fail", timeout=3.0)
    try:
        with pytest.raises(GuardConfigError, match="not a Redis Cluster"):
            await asyncio.wait_for(st.check(), 10)
    finally:
        await st.aclose()
    plain = from_url(private_redis.url, storage_fallback="fail", timeout=TIMEOUT)
    try:
        await plain.check()  # the right URL passes
    finally:
        await plain.aclose()


async def test_plain_url_on_a_cluster_node_is_a_clear_error(
        redis_cluster: LocalCluster) -> None:
    port = redis_cluster.ports[0]
    st = from_url(f"redis://127.0.0.1:{port}/0", prefix=_prefix(), storage_fallback="fail",
                  timeout=3.0)
    try:
        with pytest.raises(GuardConfigError, match="Redis Cluster node"):
            await asyncio.wait_for(st.check(), 10)
        # an account whose slot lives on another node: MOVED, told as such
        moved = next(f"acct:m{i}/method:x" for i in range(100)
                     if redis_cluster.primary_of(f"{{acct:m{i}}}") != port)
        with pytest.raises(StorageUnavailableError, match="Redis Cluster node"):
            await asyncio.wait_for(st.flood_left(moved), 10)
    finally:
        await st.aclose()
    good = from_url(redis_cluster.url, storage_fallback="fail", timeout=TIMEOUT)
    try:
        await good.check()
    finally:
        await good.aclose()


async def test_cluster_url_is_accepted_wherever_a_url_is(redis_cluster: LocalCluster) -> None:
    # The README's `storage="redis+cluster://..."`: GuardConfig accepts it (any scheme case),
    # open_storage and RedisStorage(url=...) both reach the cluster with the cluster client.
    from redis.asyncio.cluster import RedisCluster

    from telethon_guard import GuardConfig
    from telethon_guard.storage import open_storage

    url = f"{redis_cluster.url}?prefix={_prefix()}"
    assert GuardConfig(storage=url).storage == url
    GuardConfig(storage=url.replace("redis+cluster", "REDIS+CLUSTER"))
    plain_form = redis_cluster.url.replace("redis+cluster://", "redis://") + "/0?cluster=true"
    for st in (open_storage(url, timeout=TIMEOUT, storage_fallback="fail"),
               RedisStorage(url=redis_cluster.url, prefix=_prefix(), timeout=TIMEOUT,
                            storage_fallback="fail"),
               RedisStorage(url=plain_form, prefix=_prefix(), timeout=TIMEOUT,
                            storage_fallback="fail")):
        try:
            assert isinstance(st.client, RedisCluster)
            spec = [LimitSpec("acct:u/dc:2", ((1, 5.0),))]
            assert (await st.reserve(spec)).delay == 0.0
            assert (await st.reserve(spec)).delay > 4.0  # the one slot is taken: shared state
        finally:
            await st.aclose()
    with pytest.raises(GuardConfigError, match="a Redis URL"):
        GuardConfig(storage="http+cluster://127.0.0.1:7000")
    with pytest.raises(GuardConfigError, match="names one node"):
        from_url("redis+cluster://")
    with pytest.raises(GuardConfigError, match="give them as keywords"):
        RedisStorage(url=f"{redis_cluster.url}?prefix=x")
    with pytest.raises(GuardConfigError, match="cluster"):
        RedisStorage(url="redis://127.0.0.1:7000/0?cluster=maybe")


def test_cluster_url_bad_input() -> None:
    with pytest.raises(GuardConfigError, match="only database 0"):
        from_url("redis+cluster://127.0.0.1:7000/3")
    with pytest.raises(GuardConfigError, match="cluster"):
        from_url("redis://127.0.0.1:7000/0?cluster=maybe")
    with pytest.raises(GuardConfigError, match="not a redis url"):
        from_url("http+cluster://127.0.0.1:7000")


async def test_busy_redis_is_a_clear_error_within_the_timeout(
        private_redis: PrivateRedis) -> None:
    admin = redis.Redis(host="127.0.0.1", port=private_redis.port, socket_timeout=10)
    admin.config_set("lua-time-limit", 100)  # BUSY after 0.1 s of a running script
    st = from_url(private_redis.url, prefix="busy", storage_fallback="fail", timeout=1.0)
    hog = redis.Redis(host="127.0.0.1", port=private_redis.port, socket_timeout=30)

    def run_hog() -> None:
        try:
            hog.eval("local t = redis.call('TIME')[1] + 20 "
                     "while tonumber(redis.call('TIME')[1]) < t do end", 0)
        except redis.RedisError:
            pass  # killed below

    thread = threading.Thread(target=run_hog, daemon=True)
    try:
        assert await st.flood_left("acct:1/method:x") == 0.0
        thread.start()
        await asyncio.sleep(0.4)
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailableError, match="BUSY"):
            await asyncio.wait_for(st.flood_left("acct:1/method:x"), 5)
        assert time.monotonic() - t0 < 1.0 + 1.0  # the storage timeout + a busy machine
    finally:
        try:
            admin.script_kill()
        except redis.RedisError:
            pass
        thread.join(10)
        admin.close()
        hog.close()
        await st.aclose()


async def test_other_applications_keys_are_never_touched_or_read(
        redis_url: str, prefix: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    # keys of other applications next to ours: same names under another prefix, a prefix
    # that starts with ours, and a bare key with our account's hash tag
    others = {f"{prefix}x:fl:{{acct:1}}/method:x": b"9999999999",
              "other-app:fl:{acct:1}/method:x": b"not a number",
              "{acct:1}/method:x": b"other",
              f"{prefix}x:br:{{acct:1}}/dc:2": b"OPEN"}
    for k, v in others.items():
        admin.set(k, v, ex=300)
    try:
        st = from_url(redis_url, prefix=prefix, storage_fallback="fail", timeout=TIMEOUT)
        try:
            assert await st.flood_left("acct:1/method:x") == 0.0
            assert (await st.breaker_state("acct:1/dc:2")).state == "CLOSED"
            assert (await st.reserve([LimitSpec("acct:1/method:x", ((1, 1.0),))])).delay == 0
            await st.flood_block("acct:1/method:x", 3.0)
            await st.flood_clear("acct:1/method:x")
            await st.refresh_view()
            assert st.flood_scopes() == {} and st.breaker_keys() == []
        finally:
            await st.aclose()
        for k, v in others.items():
            assert admin.get(k) == v and admin.ttl(k) > 250, k
    finally:
        admin.delete(*others)
        admin.close()


async def test_storage_accepts_a_cluster_client(redis_cluster: LocalCluster) -> None:
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[1])
    st = RedisStorage(client, prefix=_prefix(), storage_fallback="fail", timeout=TIMEOUT)
    try:
        assert await st.flood_block("acct:c1/method:x", 2.0) > 1.9
        await st.check()
    finally:
        await st.aclose()
        await client.aclose()


async def test_shared_pace_and_move_up_run_on_the_accounts_node(
        redis_cluster: LocalCluster) -> None:
    """The paced admission (admission + the pace record in one script) and the give-back /
    move-up scripts touch several keys of one account: on a cluster they run on the node
    owning its slot; six accounts, spread over the nodes."""
    prefix = _prefix()
    a = from_url(f"{redis_cluster.url}?prefix={prefix}", storage_fallback="fail",
                 timeout=TIMEOUT)
    b = from_url(f"{redis_cluster.url}?prefix={prefix}", storage_fallback="fail",
                 timeout=TIMEOUT)
    try:
        for i in range(6):
            acct = f"acct:p{i}"
            spec = (LimitSpec(f"{acct}/pace:m", ((1, 30.0),)),)
            pace = (f"{acct}/pace:m", b"")
            first = await a.admit(f"{acct}/dc:2", 5.0, [f"{acct}/method:m"], spec, pace)
            assert first.pace is None and first.reservation is not None
            assert first.reservation.delay == 0.0
            await a.pace_publish(f"{acct}/pace:m", b"v1 {}", 60.0)
            seen = await b.admit(f"{acct}/dc:2", 5.0, [f"{acct}/method:m"], spec, pace)
            assert seen.pace == "v1 {}"  # the record, in the same round trip
            assert seen.reservation is not None and seen.reservation.delay > 29.0
            again = await b.admit(f"{acct}/dc:2", 5.0, [f"{acct}/method:m"], spec,
                                  (pace[0], b"v1"))
            assert again.pace is None and again.reservation is not None
            # give back b's first slot (+30): b's later one (+60) moves up to it
            await b.release(spec, seen.reservation.token)
            moved = await b.move_up(acct, None, [(spec, again.reservation.token)])
            assert moved is not None and moved[1][0] is not None
            assert 29.0 < moved[1][0] <= 30.0, moved
        assert len(_node_keys(redis_cluster, f"{prefix}:pc:*")) >= 2  # on several nodes
    finally:
        await a.aclose()
        await b.aclose()
