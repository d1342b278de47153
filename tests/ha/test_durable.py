"""replicas_ack=N: an enqueue or an outcome is acknowledged only once N replicas have it."""

from __future__ import annotations

import pytest

import aqueue

from ..conftest import running_worker
from ..topologies import ClusterTopology, SentinelTopology


def test_replicas_ack_is_validated_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(aqueue.ConfigError, match="replicas_ack must be"):
        aqueue.App("redis://localhost:6379/0", replicas_ack=-1)
    monkeypatch.setenv("AQUEUE_REPLICAS_ACK", "1")
    assert aqueue.App("redis://localhost:6379/0").settings.replicas_ack == 1


async def test_without_enough_replicas_nothing_is_acknowledged(redis_url: str, prefix: str) -> None:
    """The session's server has no replica: a durable enqueue can't be confirmed."""
    app = aqueue.App(redis_url, prefix=prefix, replicas_ack=1, connect_timeout=0.3)

    @app.task
    async def noop() -> None:
        return None

    try:
        with pytest.raises(aqueue.ConnectionFailed, match="0 of 1"):
            await noop.enqueue()
        with pytest.raises(aqueue.ConnectionFailed, match="0 of 1"):
            await noop.enqueue_many([() for _ in range(1500)])
    finally:
        await app.close()


async def test_durable_round_trip_behind_sentinel(sentinels: SentinelTopology, prefix: str) -> None:
    sentinels.wait_healthy()
    app = aqueue.App(sentinels.url, prefix=prefix, replicas_ack=1)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    try:
        async with running_worker(app, concurrency=10):
            results = [await add.enqueue(1, 2)] + await add.enqueue_many(
                [(i, i) for i in range(1200)]
            )
            values = [await r.get(timeout=60) for r in results]
        assert values == [3, *(2 * i for i in range(1200))]
    finally:
        await app.close()


async def test_durable_round_trip_on_the_cluster(cluster: ClusterTopology, prefix: str) -> None:
    """WAIT runs on the master that owns each queue's slot, after the script's writes."""
    cluster.wait_healthy()
    app = aqueue.App(cluster.url, prefix=prefix, replicas_ack=1)

    @app.task(queue="words")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(queue="numbers")  # a queue on another master
    async def twice(a: int) -> int:
        return 2 * a

    try:
        async with running_worker(app, queues=["words", "numbers"], concurrency=10):
            results = [await add.enqueue(1, 2), await twice.enqueue(5)]
            results += await add.enqueue_many([(i, i) for i in range(1200)])
            values = [await r.get(timeout=60) for r in results]
        assert values == [3, 10, *(2 * i for i in range(1200))]
        for r in results[:2]:  # outcomes were recorded durably too: the replica has them
            owner = cluster.slot_owner(f"{prefix}:{{{r.queue}}}:stream")
            with cluster.client(cluster.replica_of(owner)) as replica:
                replica.execute_command("READONLY")  # let the replica answer for its slots
                assert (
                    replica.execute_command("HGET", f"{prefix}:{{{r.queue}}}:task:{r.id}", "state")
                    == "succeeded"
                )
    finally:
        await app.close()


async def test_on_the_cluster_too_few_replicas_means_not_acknowledged(
    cluster: ClusterTopology, prefix: str
) -> None:
    """Each master of the session cluster has one replica: two can never confirm."""
    cluster.wait_healthy()
    app = aqueue.App(cluster.url, prefix=prefix, replicas_ack=2, connect_timeout=0.3)

    @app.task
    async def noop() -> None:
        return None

    try:
        with pytest.raises(aqueue.ConnectionFailed, match="1 of 2"):
            await noop.enqueue()
        with pytest.raises(aqueue.ConnectionFailed, match="1 of 2"):
            await noop.enqueue_many([() for _ in range(1500)])
    finally:
        await app.close()
