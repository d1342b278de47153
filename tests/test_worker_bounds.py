"""Bounds found by attacking aqueue: slots in burst mode, connections, batch sizes."""

from __future__ import annotations

import asyncio

import redis

import aqueue

from .conftest import RedisServer, redis_server


async def test_burst_with_one_slot_drains_every_queue(app: aqueue.App) -> None:
    ran: list[str] = []

    @app.task(queue="first")
    async def on_first(n: int) -> int:
        ran.append(f"first-{n}")
        return n

    @app.task(queue="second")
    async def on_second(n: int) -> int:
        ran.append(f"second-{n}")
        return n

    handles = [await on_second.enqueue(i) for i in range(3)]
    handles += [await on_first.enqueue(i) for i in range(3)]
    worker = aqueue.Worker(app, queues=["first", "second"], concurrency=1, burst=True)
    await asyncio.wait_for(worker.run(), 30)
    assert sorted(ran) == sorted(
        [f"first-{i}" for i in range(3)] + [f"second-{i}" for i in range(3)]
    )
    assert [await h.get(timeout=5) for h in handles] == [0, 1, 2, 0, 1, 2]
    assert worker.stats.succeeded == 6


def connections_received(server: RedisServer) -> int:
    client = redis.Redis(port=server.port)
    try:
        return int(client.info("stats")["total_connections_received"])
    finally:
        client.close()


async def test_concurrent_aborts_stay_within_max_connections() -> None:
    with redis_server() as server:
        async with aqueue.App(server.url, prefix="aborts", max_connections=20) as app:

            @app.task
            async def never_run(n: int) -> int:
                return n

            handles = await never_run.enqueue_many([(i,) for i in range(3000)])
            before = connections_received(server)
            aborted = await asyncio.gather(*(h.abort() for h in handles))
            opened = connections_received(server) - before - 1  # minus our own INFO
            assert aborted == [True] * 3000
            statuses = await asyncio.gather(*(h.status() for h in handles[:100]))
            assert set(statuses) == {aqueue.TaskStatus.ABORTED}
        # 3,000 before: one connection per concurrent call.
        assert opened <= 20, opened


async def test_600_concurrent_enqueues_of_almost_1mb_all_succeed() -> None:
    with redis_server() as server:
        async with aqueue.App(server.url, prefix="big") as app:

            @app.task
            async def store(blob: bytes) -> int:
                return len(blob)

            blob = b"x" * 950_000
            handles = await asyncio.gather(*(store.enqueue(blob) for _ in range(600)))
            assert len({h.id for h in handles}) == 600
            statuses = await asyncio.gather(*(h.status() for h in handles))
            assert set(statuses) == {aqueue.TaskStatus.QUEUED}
            figures = await app.client.views.queue_figures("default")
            assert figures["waiting"] == 600
