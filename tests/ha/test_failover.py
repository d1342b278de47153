"""Failovers while tasks flow: a worker process rides them out, every run counted.

Each scenario enqueues a first batch, lets the worker start on it, makes sure
the batch has reached the replica, fails the topology over while a second
batch is being enqueued, and then counts per task id how often it started and
finished. The counts live on the session's plain Redis (FAULTS_COUNTS_URL),
which no failover touches.

Asserted: the same worker process is alive and never logged a crashed loop;
no task of the replicated first batch is lost; no acknowledged task of the
second batch is lost except in Sentinel's documented window (a write the old
master accepted after the replica was promoted), which is counted; duplicates
are counted. ``pytest -s`` prints one FAULT-FIGURES line per scenario.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis

import aqueue
from aqueue.core.keys import QueueKeys

from ..conftest import RedisServer
from ..faults.conftest import CliWorker, Counts, elapsed_since, producer, report
from ..topologies import ClusterTopology, SentinelTopology, wait_for

FIRST, SECOND = 150, 150


def _replicated(master: RedisServer) -> bool:
    """The master's replicas have everything it has (offsets equal)."""
    with redis.Redis(port=master.port, decode_responses=True) as client:
        info = client.info("replication")
    offset = int(info["master_repl_offset"])
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return bool(replicas) and all(int(r["offset"]) >= offset for r in replicas)


async def _run_scenario(
    scenario: str,
    url: str,
    counts_url: str,
    prefix: str,
    queue_master: Callable[[], RedisServer],
    fail_over: Callable[[], None],
    lost_allowed: bool,
    after: Callable[[], None],
    replicas_ack: int = 0,
) -> None:
    worker = CliWorker(
        url,
        prefix,
        "-c",
        "20",
        FAULTS_COUNTS_URL=counts_url,
        AQUEUE_REPLICAS_ACK=str(replicas_ack),
    )
    counts = Counts(counts_url, prefix)
    try:
        async with producer(url, prefix, replicas_ack=replicas_ack) as app:
            mark = app.tasks["faults.mark"]
            first = [f"a{i}" for i in range(FIRST)]
            for key in first:
                await mark.enqueue(key, 0.02)
            await _until(lambda: sum(counts.started(first)) > 0, 60)
            master = queue_master()
            wait_for(lambda: _replicated(master), "the first batch to reach the replica")

            began = time.monotonic()
            failing = asyncio.create_task(asyncio.to_thread(fail_over))
            second = [f"b{i}" for i in range(SECOND)]
            acknowledged: list[str] = []
            refused = 0
            for key in second:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        await mark.enqueue(key, 0.02)
                        acknowledged.append(key)
                        break
                    except aqueue.ConnectionFailed:
                        refused += 1
                        assert time.monotonic() < deadline, "enqueue never recovered"
                        await asyncio.sleep(0.1)
                await asyncio.sleep(0.01)  # tasks keep flowing through the failover
            await failing
            failed_over_s = elapsed_since(began)
            everything = first + acknowledged

            def settled() -> bool:
                done = counts.done(everything)
                return all(done[: len(first)]) and sum(1 for n in done if n) >= len(everything)

            try:
                await _until(settled, 90)
            except AssertionError:
                if not lost_allowed:
                    raise
            recovered_s = elapsed_since(began)
            started, done = counts.started(everything), counts.done(everything)
            lost_first = sum(1 for n in done[: len(first)] if n == 0)
            lost = sum(1 for n in done if n == 0)
            duplicated = sum(max(0, n - 1) for n in started)
            alive = worker.alive
            report(
                scenario,
                tasks=len(everything),
                lost=lost,
                duplicated=duplicated,
                worker_survived=alive,
                enqueue_refusals=refused,
                failover_s=failed_over_s,
                recovery_s=recovered_s,
            )
            assert lost_first == 0, "a replicated task was lost"
            if not lost_allowed:
                assert lost == 0
            assert all(s >= d for s, d in zip(started, done, strict=True))
            assert alive, worker.output()[-4000:]
            assert "crashed" not in worker.output(), worker.output()[-4000:]
    finally:
        print(worker.output()[-4000:])
        after()
        worker.close()
        counts.close()


async def _until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.1)


async def test_sentinel_failover_with_the_old_master_up(
    sentinels: SentinelTopology, redis_url: str, prefix: str
) -> None:
    sentinels.wait_healthy()
    await _run_scenario(
        "sentinel_failover_old_master_up",
        sentinels.url,
        redis_url,
        prefix,
        sentinels.master,
        lambda: sentinels.failover() and None,
        lost_allowed=True,  # writes the old master took after the promotion
        after=sentinels.wait_healthy,
    )


async def test_durable_sentinel_failover_loses_nothing(
    sentinels: SentinelTopology, redis_url: str, prefix: str
) -> None:
    """replicas_ack=1: what the old master took after the promotion never reached
    a replica, so it was not acknowledged and the producer sent it again."""
    sentinels.wait_healthy()
    await _run_scenario(
        "sentinel_failover_old_master_up_replicas_ack_1",
        sentinels.url,
        redis_url,
        prefix,
        sentinels.master,
        lambda: sentinels.failover() and None,
        lost_allowed=False,
        after=sentinels.wait_healthy,
        replicas_ack=1,
    )


async def test_killing_the_sentinel_master(
    sentinels: SentinelTopology, redis_url: str, prefix: str
) -> None:
    sentinels.wait_healthy()

    def kill_master() -> None:
        master = sentinels.master()
        old = sentinels.master_address()
        master.stop(kill=True)
        wait_for(lambda: sentinels.master_address() != old, "Sentinel to promote the replica", 60)
        master.start()  # the sentinels turn it into the new master's replica

    await _run_scenario(
        "sentinel_kill_master",
        sentinels.url,
        redis_url,
        prefix,
        sentinels.master,
        kill_master,
        lost_allowed=True,  # acknowledged writes the dead master had not replicated
        after=sentinels.wait_healthy,
    )


def _queue_master(cluster: ClusterTopology, prefix: str) -> Callable[[], RedisServer]:
    return lambda: cluster.slot_owner(QueueKeys(prefix, "default").stream)


async def test_cluster_failover(cluster: ClusterTopology, redis_url: str, prefix: str) -> None:
    cluster.wait_healthy()
    owner = _queue_master(cluster, prefix)

    def fail_over() -> None:
        master = owner()
        replica = cluster.replica_of(master)
        with cluster.client(replica) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: cluster.role(replica) == "master", "the replica to take over")

    await _run_scenario(
        "cluster_failover",
        cluster.url,
        redis_url,
        prefix,
        owner,
        fail_over,
        lost_allowed=False,
        after=cluster.wait_healthy,
    )


async def test_killing_a_cluster_master(
    cluster: ClusterTopology, redis_url: str, prefix: str
) -> None:
    cluster.wait_healthy()
    owner = _queue_master(cluster, prefix)

    def kill_master() -> None:
        master = owner()
        replica = cluster.replica_of(master)
        master.stop(kill=True)
        wait_for(lambda: cluster.role(replica) == "master", "the replica to be promoted", 60)
        master.start()  # comes back as the new master's replica

    await _run_scenario(
        "cluster_kill_master",
        cluster.url,
        redis_url,
        prefix,
        owner,
        kill_master,
        lost_allowed=True,  # acknowledged writes the dead master had not replicated
        after=cluster.wait_healthy,
    )


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
async def test_an_idle_worker_blocked_in_its_read_rides_out_a_failover(
    kind: str,
    sentinels: SentinelTopology,
    cluster: ClusterTopology,
    redis_url: str,
    prefix: str,
) -> None:
    """The blocked XREADGROUP is ended by the role change (UNBLOCKED): an outage."""
    topology: SentinelTopology | ClusterTopology = sentinels if kind == "sentinel" else cluster
    topology.wait_healthy()

    def fail_over() -> None:
        if isinstance(topology, SentinelTopology):
            topology.failover()
            return
        replica = topology.replica_of(_queue_master(topology, prefix)())
        with topology.client(replica) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: topology.role(replica) == "master", "the replica to take over")

    worker = CliWorker(topology.url, prefix, "-c", "5", FAULTS_COUNTS_URL=redis_url)
    counts = Counts(redis_url, prefix)
    try:
        async with producer(topology.url, prefix) as app:
            mark = app.tasks["faults.mark"]
            await mark.enqueue("before")
            await _until(lambda: counts.done(["before"]) == [1], 60)
            await asyncio.sleep(0.5)  # the worker is now blocked in its read
            await asyncio.to_thread(fail_over)
            began = time.monotonic()
            while True:
                try:
                    await mark.enqueue("after")
                    break
                except aqueue.ConnectionFailed:
                    await asyncio.sleep(0.1)
            await _until(lambda: counts.done(["after"]) == [1], 60)
            report(f"idle_worker_{kind}_failover", resumed_s=elapsed_since(began))
        assert worker.alive, worker.output()[-4000:]
        assert "crashed" not in worker.output(), worker.output()[-4000:]
        assert counts.started(["before", "after"]) == [1, 1]
    finally:
        print(worker.output()[-4000:])
        worker.close()
        counts.close()
        topology.wait_healthy()
