"""The same App code on standalone Redis, behind Sentinel and on a Cluster."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

import aqueue
from aqueue.core.keys import QueueKeys

from ..conftest import redis_server, running_worker, wait_until, worker_env
from ..topologies import SERVICE, ClusterTopology, SentinelTopology, sentinel_topology


def _register(app: aqueue.App) -> aqueue.Task[[int, int], int]:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    return add


async def test_tasks_run_and_bulk_over_one_chunk_works(ha_app: aqueue.App) -> None:
    add = _register(ha_app)
    async with running_worker(ha_app, concurrency=50):
        assert await (await add.enqueue(1, 2)).get(timeout=30) == 3
        # Over one script call's 1,000 messages, in bulk and one by one at once.
        many = await add.enqueue_many([(i, 1) for i in range(1500)])
        concurrent = await asyncio.gather(*(add.enqueue(i, 2) for i in range(1500)))
        values = await asyncio.gather(*(r.get(timeout=60) for r in [*many, *concurrent]))
    assert values == [i + 1 for i in range(1500)] + [i + 2 for i in range(1500)]


async def test_behind_sentinel_no_command_reaches_any_server_but_the_master(
    sentinels: SentinelTopology, prefix: str
) -> None:
    """The pool's default address is a decoy server: every command must still
    go to the master the sentinels name, the direct path's included."""
    sentinels.wait_healthy()
    hosts = [("127.0.0.1", s.port) for s in sentinels.sentinels]
    with redis_server() as decoy, redis.Redis(port=decoy.port) as probe:
        before = _calls(probe)
        injected = Sentinel(hosts).master_for(  # type: ignore[no-untyped-call]
            SERVICE, redis_class=aioredis.Redis, host="127.0.0.1", port=decoy.port
        )
        app = aqueue.App(redis=injected, prefix=prefix)
        add = _register(app)
        try:
            async with running_worker(app, concurrency=10):
                results = [await add.enqueue(i, i) for i in range(20)]
                results += await add.enqueue_many([(i, 0) for i in range(20)])
                assert [await r.get(timeout=30) for r in results] == [
                    *(2 * i for i in range(20)),
                    *range(20),
                ]
        finally:
            await app.close()
            await injected.aclose()
        after = _calls(probe)
        assert after == before
        assert len(probe.client_list()) == 1  # the probe itself
    with redis.Redis(port=sentinels.master().port) as master:
        assert master.keys(f"{prefix}:*")


def _calls(probe: redis.Redis) -> dict[str, int]:
    """Calls per command on the decoy, but the probe's own INFO."""
    stats = probe.info("commandstats")
    return {name: s["calls"] for name, s in stats.items() if name != "cmdstat_info"}


async def test_sentinel_url_writes_to_the_master(sentinels: SentinelTopology, prefix: str) -> None:
    sentinels.wait_healthy()
    app = aqueue.App(sentinels.url, prefix=prefix)
    add = _register(app)
    try:
        async with running_worker(app, concurrency=5):
            assert await (await add.enqueue(2, 3)).get(timeout=30) == 5
    finally:
        await app.close()
    with redis.Redis(port=sentinels.master().port) as master:
        assert master.keys(f"{prefix}:*")


async def test_an_injected_cluster_client_works(cluster: ClusterTopology, prefix: str) -> None:
    cluster.wait_healthy()
    injected = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", cluster.servers[0].port)])
    app = aqueue.App(redis=injected, prefix=prefix)
    add = _register(app)
    try:
        assert not app.client.broker.direct.enabled
        async with running_worker(app, concurrency=20):
            results = await add.enqueue_many([(i, i) for i in range(1200)])
            assert sum([await r.get(timeout=60) for r in results]) == 2 * sum(range(1200))
    finally:
        await app.close()
        await injected.aclose()


def test_cli_url_option_reaches_sentinel_and_cluster(
    sentinels: SentinelTopology, cluster: ClusterTopology, prefix: str
) -> None:
    """``--url`` takes both forms; ``inspect`` names the master / the cluster nodes."""
    env = {**worker_env("redis://127.0.0.1:1/0", prefix), "AQUEUE_APP": ""}
    for topology, expected in ((sentinels, "master 127.0.0.1:"), (cluster, "cluster: masters")):
        topology.wait_healthy()
        proc = subprocess.run(
            [sys.executable, "-m", "aqueue", "inspect", "--url", topology.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert expected in proc.stdout


async def test_plain_urls_to_the_wrong_node_give_aqueue_errors(
    sentinels: SentinelTopology, cluster: ClusterTopology, prefix: str
) -> None:
    """A redis:// URL of a cluster node or of a replica: an aqueue error that says
    what to do, never a raw redis-py one."""
    cluster.wait_healthy()
    sentinels.wait_healthy()
    owner = cluster.slot_owner(QueueKeys(prefix, "default").stream)
    other = next(s for s in cluster.servers[:3] if s is not owner and cluster.role(s) == "master")
    replica = next(s for s in sentinels.servers if s is not sentinels.master())
    for url, error, message in (
        (other.url, aqueue.ConfigError, "redis\\+cluster://"),
        (replica.url, aqueue.ConnectionFailed, "read-only replica"),
    ):
        app = aqueue.App(url, prefix=prefix)
        add = _register(app)
        try:
            with pytest.raises(error, match=message):
                await add.enqueue(1, 2)
        finally:
            await app.close()


def test_demo_runs_on_sentinel_and_cluster_and_cleans_up(
    sentinels: SentinelTopology, cluster: ClusterTopology
) -> None:
    for topology in (sentinels, cluster):
        topology.wait_healthy()
        proc = subprocess.run(
            [sys.executable, "-m", "aqueue", "demo", "-n", "200", "--url", topology.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 lost" in proc.stdout
        for server in topology.servers:
            with redis.Redis(port=server.port) as node:
                assert not node.keys("aqueue-demo-*")


async def test_an_old_master_that_was_never_demoted_is_left_within_a_second(
    prefix: str,
) -> None:
    """Split brain: the old master can't be turned into a replica (its REPLICAOF
    is renamed away, as if the sentinels could not reach it) and still takes
    writes. Once Sentinel names the new master, enqueues must go there."""
    hidden = ("--rename-command", "REPLICAOF", "", "--rename-command", "SLAVEOF", "")
    with sentinel_topology(*hidden) as topology:
        old = topology.master()
        app = aqueue.App(topology.url, prefix=prefix)
        add = _register(app)
        try:
            await add.enqueue(0, 0)
            topology.failover()
            new = topology.master()
            assert new is not old
            with redis.Redis(port=new.port) as on_new:

                async def lands_on_new_master() -> bool:
                    sent = await add.enqueue(1, 1)
                    return bool(on_new.exists(QueueKeys(prefix, "default").task(sent.id)))

                await wait_until(lands_on_new_master, 10, interval=0.1)
                with redis.Redis(port=old.port) as on_old:
                    keys_on_old = set(on_old.keys(f"{prefix}:*"))
                    for _ in range(20):
                        await add.enqueue(2, 2)
                    assert set(on_old.keys(f"{prefix}:*")) == keys_on_old
        finally:
            await app.close()
