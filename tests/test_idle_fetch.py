"""An idle worker's wait: a blocking XREAD and the fetch script in one round trip.

Once a fetch finds the queue's stream dry it says where (the id of the last
entry); ``Broker.wait_and_fetch`` then blocks on ``XREAD`` after that id with
the fetch script queued behind it on the same connection, so an entry that
arrives is read and marked running without a hop back to the worker. These
tests hold it to: no entry missed between the dry fetch and the wait, several
idle workers woken by one entry and only one taking it (and no such wait with
more than two workers on the queue), the timeout, a stream deleted during the
wait, flow control's bell, and the redis-py path.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

import aqueue
from aqueue import TaskStatus
from aqueue._redis.broker import Broker
from aqueue.core.protocol import Delivery

from .conftest import ROOT, running_worker, start_cli_worker, wait_until

#: Far longer than any test waits: a wait that ran into it means an entry was missed.
LONG_BLOCK_MS = 60_000


@pytest.fixture(params=["direct", "redis-py"])
async def idle_app(request: pytest.FixtureRequest, app: aqueue.App) -> AsyncIterator[aqueue.App]:
    """The App, its broker on aqueue's direct line or on redis-py's client."""
    if request.param == "redis-py":
        app.broker.direct.enabled = False
    yield app


async def _dry(broker: Broker, queue: str, consumer: str) -> None:
    """A fetch that finds the stream dry, so the next wait knows where to start."""
    await broker.ensure_group(queue)
    assert await broker.fetch(queue, consumer, 10) == []


async def _blocked_clients(client: aioredis.Redis) -> int:
    info = await client.info("clients")
    return int(info["blocked_clients"])


async def test_an_entry_added_between_the_dry_fetch_and_the_wait_is_not_missed(
    idle_app: aqueue.App,
) -> None:
    @idle_app.task
    async def job() -> None:
        pass

    broker, queue = idle_app.broker, idle_app.settings.default_queue
    await _dry(broker, queue, "w1")
    handle = await job.enqueue()  # before the wait begins
    got = await asyncio.wait_for(broker.wait_and_fetch(queue, "w1", 10, LONG_BLOCK_MS), 20)
    assert got is not None
    assert [d.task_id for d in got] == [handle.id]
    assert got[0].attempt == 1  # marked running by the fetch that followed the wait
    assert await handle.status() is TaskStatus.RUNNING


async def test_an_entry_added_during_the_wait_ends_it_and_is_marked_running(
    idle_app: aqueue.App,
) -> None:
    @idle_app.task
    async def job() -> None:
        pass

    broker, queue = idle_app.broker, idle_app.settings.default_queue
    await _dry(broker, queue, "w1")
    waiting = await _waiting(broker, queue, "w1")
    handle = await job.enqueue()
    got = await asyncio.wait_for(waiting, 20)
    assert got is not None
    assert [(d.task_id, d.attempt) for d in got] == [(handle.id, 1)]
    assert await handle.status() is TaskStatus.RUNNING


async def _blocked_clients_more(client: aioredis.Redis, before: int, more: int = 1) -> bool:
    return await _blocked_clients(client) >= before + more


async def _waiting(
    broker: Broker, queue: str, consumer: str
) -> asyncio.Task[list[Delivery] | None]:
    """A wait of ``consumer``'s begun, once Redis holds its read blocked."""
    before = await _blocked_clients(broker.client)
    waiting = asyncio.create_task(broker.wait_and_fetch(queue, consumer, 10, LONG_BLOCK_MS))
    await wait_until(lambda: _blocked_clients_more(broker.client, before))
    return waiting


async def test_one_entry_wakes_every_idle_worker_and_only_one_takes_it(
    idle_app: aqueue.App,
) -> None:
    @idle_app.task
    async def job() -> None:
        pass

    broker, queue = idle_app.broker, idle_app.settings.default_queue
    consumers = ["w1", "w2", "w3"]
    for consumer in consumers:
        await _dry(broker, queue, consumer)
    before = await _blocked_clients(broker.client)
    waits = [
        asyncio.create_task(broker.wait_and_fetch(queue, c, 10, LONG_BLOCK_MS)) for c in consumers
    ]
    await wait_until(lambda: _blocked_clients_more(broker.client, before, len(consumers)))
    handle = await job.enqueue()
    results = await asyncio.wait_for(asyncio.gather(*waits), 20)
    taken = [d.task_id for got in results if got for d in got]
    assert taken == [handle.id]
    # The others found the stream dry again and wait from its new end: a second
    # entry, added past it, ends each of their waits at once (had they waited
    # from a later id, this would run into LONG_BLOCK_MS), and exactly one of
    # the fetches behind them takes it.
    second = await job.enqueue()
    others = [c for c, got in zip(consumers, results, strict=True) if not got]
    again = [broker.wait_and_fetch(queue, c, 10, LONG_BLOCK_MS) for c in others]
    fetched = await asyncio.wait_for(asyncio.gather(*again), 20)
    assert all(got is not None for got in fetched)
    assert [d.task_id for got in fetched if got for d in got] == [second.id]


async def test_the_wait_ends_after_its_timeout_and_can_wait_again(idle_app: aqueue.App) -> None:
    broker, queue = idle_app.broker, idle_app.settings.default_queue
    await _dry(broker, queue, "w1")
    assert await broker.wait_and_fetch(queue, "w1", 10, 50) == []
    # Still dry: the fetch after the wait said where to wait from next.
    assert await broker.wait_and_fetch(queue, "w1", 10, 50) == []


async def test_without_a_dry_fetch_there_is_nothing_to_wait_from(idle_app: aqueue.App) -> None:
    @idle_app.task
    async def job() -> None:
        pass

    broker, queue = idle_app.broker, idle_app.settings.default_queue
    await broker.ensure_group(queue)
    assert await broker.wait_and_fetch(queue, "w1", 10, 50) is None
    handles = [await job.enqueue() for _ in range(3)]
    # A fetch that filled every slot it had may have left entries: no wait.
    assert len(await broker.fetch(queue, "w1", 2)) == 2
    assert await broker.wait_and_fetch(queue, "w1", 10, 50) is None
    # The one that took the last entry found the stream dry after it.
    assert [d.task_id for d in await broker.fetch(queue, "w1", 2)] == [handles[2].id]
    assert await broker.wait_and_fetch(queue, "w1", 10, 50) == []


async def test_a_stream_deleted_during_the_wait_comes_back_with_its_group(
    idle_app: aqueue.App,
) -> None:
    @idle_app.task
    async def job() -> None:
        pass

    broker, queue = idle_app.broker, idle_app.settings.default_queue
    await _dry(broker, queue, "w1")
    waiting = await _waiting(broker, queue, "w1")
    await broker.client.delete(broker.keys(queue).stream)
    handle = await job.enqueue()  # recreates the stream, without the group
    got = await asyncio.wait_for(waiting, 20)
    # The fetch behind the wait found no group: it was recreated and the entry read.
    assert got is not None
    assert [d.task_id for d in got] == [handle.id]


async def test_an_idle_worker_runs_tasks_that_arrive_one_at_a_time(idle_app: aqueue.App) -> None:
    @idle_app.task
    async def double(x: int) -> int:
        return 2 * x

    async with running_worker(idle_app, concurrency=4):
        for i in range(5):
            # Each arrives while the worker waits (the stream ran dry after the last).
            handle = await double.enqueue(i)
            assert await asyncio.wait_for(handle.get(), 20) == 2 * i


async def test_an_urgent_task_rings_the_waiting_worker(idle_app: aqueue.App) -> None:
    @idle_app.task
    async def job(x: int) -> int:
        return x

    async with running_worker(idle_app, concurrency=2):
        assert await asyncio.wait_for((await job.enqueue(1)).get(), 20) == 1
        urgent = await job.options(priority=7).enqueue(2)
        assert await asyncio.wait_for(urgent.get(), 20) == 2
        # The bell that woke the worker was dropped with the fetch that followed.
        stream = idle_app.broker.keys(idle_app.settings.default_queue).stream
        await wait_until(lambda: _stream_empty(idle_app.broker.client, stream))


async def _stream_empty(client: aioredis.Redis, stream: str) -> bool:
    return int(await client.xlen(stream)) == 0


async def test_beyond_two_workers_on_the_queue_they_wait_as_before(idle_app: aqueue.App) -> None:
    """Every idle worker's XREAD ends on a new entry: with more than two workers
    registered on the queue, the fetch offers no wait, and the blocking
    XREADGROUP (which wakes one) is used instead."""

    @idle_app.task
    async def job(x: int) -> int:
        return x

    broker, queue = idle_app.broker, idle_app.settings.default_queue
    await broker.ensure_group(queue)
    workers = broker.keys(queue).workers
    # Other workers with a fresh heartbeat (names only: nothing reads for them).
    beat = int(time.time() * 1000) + 3_600_000
    await broker.client.zadd(workers, {"other-0": beat, "other-1": beat})
    assert await broker.fetch(queue, "w1", 10) == []
    assert await broker.wait_and_fetch(queue, "w1", 10, 50) is not None  # 2: still offered
    await broker.client.zadd(workers, {"other-2": beat})
    assert await broker.fetch(queue, "w1", 10) == []
    assert await broker.wait_and_fetch(queue, "w1", 10, 50) is None
    async with running_worker(idle_app, concurrency=2):
        for i in range(3):
            assert await asyncio.wait_for((await job.enqueue(i)).get(), 20) == i


async def test_sigterm_ends_a_worker_waiting_in_its_read(redis_url: str, prefix: str) -> None:
    """The wait is cancelled at shutdown like the blocking read it replaces: the
    worker does not sit out the rest of its block, nor hold a task it fetched."""
    sys.path.insert(0, str(ROOT / "tests" / "apps"))
    import basic

    app = aqueue.App(redis_url, prefix=prefix)
    for task in basic.app.tasks.values():
        app.task(name=task.name, queue=task.config.queue)(task.fn)
    proc = start_cli_worker(redis_url, prefix, "basic:app", "--concurrency", "4")
    try:
        before = await _blocked_clients(app.broker.client)
        assert await (await app.tasks["basic.add"].enqueue(1, 2)).get(timeout=20) == 3
        await wait_until(lambda: _blocked_clients_more(app.broker.client, before))
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await app.close()
    assert proc.returncode == 0, output.decode()
    assert "worker stopped" in output.decode()
