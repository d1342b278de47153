"""Core behaviour, the same test on standalone Redis, behind Sentinel and on a Cluster."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

import aqueue
from aqueue.cli.queues import render
from aqueue.runtime.monitor import snapshot

from ..conftest import running_worker
from ..topologies import SERVICE, ClusterTopology, SentinelTopology


async def test_results_failures_and_delays(ha_app: aqueue.App) -> None:
    @ha_app.task
    async def double(x: int) -> int:
        return 2 * x

    @ha_app.task(retries=0)
    async def broken() -> None:
        raise ValueError("nope")

    async with running_worker(ha_app, concurrency=10):
        assert await (await double.enqueue(21)).get(timeout=30) == 42
        later = await double.options(delay=0.3).enqueue(5)
        failed = await broken.enqueue()
        assert await later.get(timeout=30) == 10
        try:
            await failed.get(timeout=30)
        except aqueue.TaskFailed as exc:
            assert "nope" in str(exc)
        else:
            raise AssertionError("the failure was not raised")
        assert (await failed.status()) is aqueue.TaskStatus.FAILED


async def test_unique_and_abort(ha_app: aqueue.App) -> None:
    gate = asyncio.Event()

    @ha_app.task
    async def report(n: int) -> int:
        await gate.wait()
        return n

    bound = report.options(unique_key="report:1")
    first, *again = await asyncio.gather(*(bound.enqueue(1) for _ in range(20)))
    assert {r.id for r in again} == {first.id}
    waiting = await report.options(delay=60).enqueue(2)
    assert await waiting.abort() is True
    async with running_worker(ha_app, concurrency=5):
        gate.set()
        assert await first.get(timeout=30) == 1
        assert (await waiting.status()) is aqueue.TaskStatus.ABORTED


async def test_dead_letters_and_replay(ha_app: aqueue.App, any_url: str) -> None:
    @ha_app.task
    async def ghost(x: int) -> int:
        return x

    sent = await ghost.enqueue(7)
    # A worker that does not know the task dead-letters its message.
    worker_app = aqueue.App(any_url, prefix=ha_app.settings.prefix)
    try:
        burst = aqueue.Worker(worker_app, queues=["default"], burst=True)
        await asyncio.wait_for(burst.run(), 60)
    finally:
        await worker_app.close()
    dead = await ha_app.dead_letters()
    assert [d.task_id for d in dead] == [sent.id]
    replayed = await ha_app.replay_dead()
    assert [queue for queue, _ in replayed] == ["default"]
    async with running_worker(ha_app, concurrency=2):
        assert await sent.get(timeout=30) == 7
    assert await ha_app.purge_dead() == 0


async def test_inspect_shows_the_topology_and_the_queues(ha_app: aqueue.App, any_url: str) -> None:
    @ha_app.task
    async def noop() -> None:
        return None

    await noop.enqueue()
    data = await snapshot(ha_app.client, ["default"], ha_app.tasks.values())
    text = render(data)
    assert data["queues"][0]["waiting"] == 1
    if any_url.startswith("redis+sentinel"):
        assert f"sentinel service '{SERVICE}'" in data["redis"] and "master 127.0.0.1:" in text
    elif any_url.startswith("redis+cluster"):
        assert data["redis"].startswith("cluster: masters ")
        assert isinstance(data["queues"][0]["slot"], int) and "node" in text
    else:
        assert data["redis"] == any_url


def test_delay_from_synchronous_code(any_url: str, prefix: str) -> None:
    app = aqueue.App(any_url, prefix=prefix)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async def work() -> None:
        async with running_worker(app, concurrency=5):
            result = await asyncio.to_thread(lambda: add.delay(2, 3).get(timeout=30))
            assert result == 5
        await app.close()

    try:
        asyncio.run(work())
    finally:
        app.close_sync()


def test_delay_with_an_injected_client(
    sentinels: SentinelTopology, cluster: ClusterTopology, prefix: str
) -> None:
    """delay() runs on a loop of its own: it makes a client for the same servers."""

    def injected() -> list[aioredis.Redis]:
        hosts = [("127.0.0.1", s.port) for s in sentinels.sentinels]
        return [
            Sentinel(hosts).master_for(SERVICE, redis_class=aioredis.Redis),  # type: ignore[no-untyped-call]
            RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", cluster.servers[0].port)]),  # type: ignore[list-item]
        ]

    async def work() -> None:
        for client in injected():
            app = aqueue.App(redis=client, prefix=prefix)

            @app.task
            async def add(a: int, b: int) -> int:
                return a + b

            try:
                async with running_worker(app, concurrency=5):
                    value = await asyncio.to_thread(lambda: add.delay(2, 3).get(timeout=30))
                    assert value == 5
            finally:
                app.close_sync()
                await app.close()
                await client.aclose()

    sentinels.wait_healthy()
    cluster.wait_healthy()
    asyncio.run(work())
