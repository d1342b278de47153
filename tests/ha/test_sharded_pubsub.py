"""Completion pushes on a Redis Cluster travel on sharded channels.

A plain PUBLISH on a cluster is copied to every node; SPUBLISH stays on the
node that owns the channel's slot (the queue's). These tests watch the
channels from outside with raw connections to the session cluster's nodes.
"""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

import aqueue
from aqueue.core.keys import QueueKeys

from ..conftest import running_worker
from ..topologies import ClusterTopology, wait_for

#: The fallback poll would take a minute: a result that comes sooner came by push.
NO_POLL = 60.0


async def test_round_trip_pushes_only_to_the_queue_node(
    cluster: ClusterTopology, prefix: str
) -> None:
    cluster.wait_healthy()
    keys = QueueKeys(prefix, "default")
    done = keys.base + ":done"
    owner = cluster.slot_owner(keys.stream)
    other = next(s for s in cluster.servers[:3] if s.port != cluster.slot_owner(keys.stream).port)
    # Outside listeners: a sharded one on the owner, a plain one on another master.
    sharded = aioredis.Redis(port=owner.port).pubsub()
    plain = aioredis.Redis(port=other.port).pubsub()
    await sharded.ssubscribe(done)
    await plain.subscribe(done)
    app = aqueue.App(cluster.url, prefix=prefix, result_poll_interval=NO_POLL)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    try:
        async with running_worker(app):
            assert await (await add.enqueue(1, 2)).get(timeout=20) == 3
            with redis.Redis(port=owner.port) as client:
                # The waiter and our listener: SSUBSCRIBEd on the owner, nothing plain.
                assert client.execute_command("PUBSUB", "SHARDNUMSUB", done)[1] >= 2
                assert client.execute_command("PUBSUB", "NUMSUB", done)[1] == 0
        pushes = []
        while (msg := await sharded.get_message(timeout=0.5)) is not None:
            if msg["type"] == "smessage":
                pushes.append(msg)
        assert pushes  # the completion push reached the owner's shard channel...
        stray = []
        while (msg := await plain.get_message(timeout=0.2)) is not None:
            if msg["type"] == "message":
                stray.append(msg)
        assert stray == []  # ...and no other node heard of it
    finally:
        await sharded.aclose()
        await plain.aclose()
        await app.close()


async def test_ten_thousand_waiters_on_the_cluster_are_woken_by_pushes(
    cluster: ClusterTopology, prefix: str
) -> None:
    cluster.wait_healthy()
    app = aqueue.App(cluster.url, prefix=prefix, result_poll_interval=NO_POLL)

    @app.task(queue="a")
    async def double(x: int) -> int:
        return 2 * x

    try:
        handles = await double.enqueue_many([(i,) for i in range(10_000)])
        waiting = [asyncio.create_task(r.get(timeout=50)) for r in handles]
        async with running_worker(app, queues=["a"], concurrency=200):
            assert await asyncio.gather(*waiting) == [2 * i for i in range(10_000)]
    finally:
        await app.close()


async def test_pushes_still_arrive_after_a_cluster_failover(
    cluster: ClusterTopology, prefix: str
) -> None:
    cluster.wait_healthy()
    keys = QueueKeys(prefix, "default")
    app = aqueue.App(cluster.url, prefix=prefix, result_poll_interval=NO_POLL)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    try:
        async with running_worker(app):
            assert await (await add.enqueue(1, 1)).get(timeout=20) == 2
            master = cluster.slot_owner(keys.stream)
            replica = cluster.replica_of(master)
            with cluster.client(replica) as client:
                client.execute_command("CLUSTER", "FAILOVER")
            wait_for(lambda: cluster.role(replica) == "master", "the replica to take over")
            # The push wakes the waiter: its subscription either moved to the new
            # master (the old one let go of the slot) or stayed on the old one, now
            # a replica of the same shard, which receives the shard's messages too.
            assert await (await add.enqueue(2, 2)).get(timeout=30) == 4
    finally:
        await app.close()
        cluster.wait_healthy()


async def test_the_subscription_follows_its_slot_when_the_master_is_killed(
    cluster: ClusterTopology, prefix: str
) -> None:
    cluster.wait_healthy()
    keys = QueueKeys(prefix, "default")
    app = aqueue.App(cluster.url, prefix=prefix, result_poll_interval=NO_POLL)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    master = cluster.slot_owner(keys.stream)
    try:
        async with running_worker(app):
            assert await (await add.enqueue(1, 1)).get(timeout=20) == 2
            replica = cluster.replica_of(master)
            master.stop(kill=True)  # the subscription's connection dies with it
            wait_for(lambda: cluster.role(replica) == "master", "the replica's promotion", 60)
            # Enqueue refused while the slot has no master is an outage: try again.
            for _ in range(100):
                try:
                    handle = await add.enqueue(2, 2)
                    break
                except aqueue.ConnectionFailed:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the cluster took no enqueue after the promotion")
            assert await handle.get(timeout=30) == 4  # by push: the poll is a minute away
    finally:
        await app.close()
        if master.proc is None:
            master.start()  # comes back as the new master's replica
        cluster.wait_healthy()
