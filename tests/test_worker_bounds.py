"""Bounds found by attacking aqueue: slots in burst mode, connections, batch sizes."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

import aqueue
from aqueue._redis import connection

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


class PeakClients:
    """The most clients connected at once while the block runs (sampled every ms or so)."""

    def __init__(self, server: RedisServer) -> None:
        self.client = redis.Redis(port=server.port)
        self.peak = 0
        self.baseline = self._connected()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _connected(self) -> int:
        return int(self.client.info("clients")["connected_clients"])

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._connected())
            time.sleep(0.001)

    def __enter__(self) -> PeakClients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


async def test_concurrent_aborts_stay_within_max_connections() -> None:
    with redis_server() as server:
        async with aqueue.App(server.url, prefix="aborts", max_connections=20) as app:

            @app.task
            async def never_run(n: int) -> int:
                return n

            handles = await never_run.enqueue_many([(i,) for i in range(3000)])
            with PeakClients(server) as clients:
                aborted = await asyncio.gather(*(h.abort() for h in handles))
            assert aborted == [True] * 3000
            statuses = await asyncio.gather(*(h.status() for h in handles[:100]))
            assert set(statuses) == {aqueue.TaskStatus.ABORTED}
        # Before: one connection per concurrent call (2,999 for 3,000 aborts).
        assert clients.peak - clients.baseline <= 20, (clients.baseline, clients.peak)


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


async def test_concurrent_bulk_enqueues_wait_for_the_pool_instead_of_failing() -> None:
    # Bulk enqueues over 1,000 messages go through the direct path's connections,
    # bounded like the client's own pool: past max_connections they wait for one.
    with redis_server() as server:
        async with aqueue.App(server.url, prefix="bulk", max_connections=10) as app:

            @app.task
            async def count(n: int) -> int:
                return n

            with PeakClients(server) as clients:
                batches = await asyncio.gather(
                    *(count.enqueue_many([(i,) for i in range(1_200)]) for _ in range(60))
                )
            assert sum(len(b) for b in batches) == 72_000
            broker = app.client.broker
            assert await broker.client.xlen(broker.keys("default").stream) == 72_000
        # Before: "Too many connections" for every call past the tenth.
        assert clients.peak - clients.baseline <= 10 + 2, (clients.baseline, clients.peak)


async def test_a_call_that_finds_every_connection_busy_too_long_is_told_so(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "POOL_WAIT", 0.5)
    async with aqueue.App(redis_url, prefix=prefix, max_connections=2) as app:

        @app.task
        async def noop() -> None:
            return None

        direct = app.client.broker.direct
        # Both connections busy for 3 s, each with a blocking pop no one answers.
        busy = [asyncio.create_task(direct.call("BLPOP", f"{prefix}:nothing", 3)) for _ in "ab"]
        await asyncio.sleep(0.1)
        with pytest.raises(aqueue.ConnectionFailed, match="max_connections"):
            await noop.enqueue()
        assert await asyncio.gather(*busy) == [None, None]
        # Free again: the next call gets a connection, and the count came back.
        assert (await noop.enqueue()).id
        assert direct.opened <= 2
