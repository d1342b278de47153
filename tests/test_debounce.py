"""Unique tasks that debounce or replace, against a real Redis and real workers."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

import aqueue
from aqueue import TaskStatus
from aqueue.core.errors import ConfigError, EnqueueError

from .conftest import running_worker, start_cli_worker


async def _ran(redis_url: str, prefix: str, key: str) -> list[int]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [int(v) for v in await client.lrange(f"{prefix}:ran:{key}", 0, -1)]
    finally:
        await client.aclose()


async def test_debounce_many_concurrent_enqueuers_one_run_with_the_last_arguments(
    redis_url: str, prefix: str
) -> None:
    # Four producers (four Apps, four connections) enqueue at once; a real
    # worker process runs the task. The ops_app task debounces by its name
    # with a 1 s window.
    producers = [aqueue.App(redis_url, prefix=prefix) for _ in range(4)]
    tasks = [
        p.task(name="ops_app.settle", unique_mode="debounce", unique_for=1.0)(_settle)
        for p in producers
    ]
    worker = start_cli_worker(redis_url, prefix, "ops_app:app", "--concurrency", "4")
    try:
        handles = await asyncio.gather(*(tasks[i % 4].enqueue("burst", i) for i in range(200)))
        assert len({h.id for h in handles}) == 1
        # Then, still inside the window, the last enqueue of all.
        last_at = time.time()  # the window restarts after this, on the same clock
        last = await tasks[0].enqueue("burst", 1000)
        assert last.id == handles[0].id
        assert await last.status() is TaskStatus.SCHEDULED
        assert await last.get(timeout=30) == 1000
        info = await last.info()
        assert info.started_at is not None and info.started_at >= last_at + 0.95
        # Every handle is the one run's handle.
        assert await handles[57].get(timeout=5) == 1000
        await asyncio.sleep(1.5)  # a second run would have started by now
        assert await _ran(redis_url, prefix, "burst") == [1000]
        # Once it ran, the next enqueue is a new debounced run.
        again = await tasks[1].enqueue("burst", 7)
        assert again.id != last.id
        assert await again.get(timeout=30) == 7
        assert await _ran(redis_url, prefix, "burst") == [1000, 7]
    finally:
        worker.terminate()
        worker.wait(30)
        for p in producers:
            await p.close()


async def _settle(key: str, value: int) -> int:  # the signature ops_app.settle has
    return value


async def test_debounce_window_restarts_with_each_enqueue(app: aqueue.App) -> None:
    ran: list[tuple[int, float]] = []

    @app.task
    async def save(value: int) -> int:
        ran.append((value, time.time()))
        return value

    bound = save.options(unique_key="doc:1", unique_mode="debounce", unique_for=0.6)
    async with running_worker(app):
        first = await bound.enqueue(1)
        for value in (2, 3, 4):
            await asyncio.sleep(0.3)  # each inside the window of the one before
            last_at = time.time()
            handle = await bound.enqueue(value)
            assert handle.id == first.id
        assert await first.get(timeout=10) == 4
    assert [v for v, _ in ran] == [4]
    assert ran[0][1] >= last_at + 0.55


async def test_replace_newest_arguments_win_start_time_kept(app: aqueue.App) -> None:
    ran: list[str] = []

    @app.task
    async def render(page: str) -> str:
        ran.append(page)
        return page

    bound = render.options(unique_key="page", unique_mode="replace", delay=1.0)
    first = await bound.enqueue("v1")
    eta = (await first.info()).eta
    second = await bound.enqueue("v2")
    third = await bound.enqueue("v3")
    assert first.id == second.id == third.id
    assert (await third.info()).eta == eta  # the start time is unchanged
    async with running_worker(app):
        assert await first.get(timeout=10) == "v3"
        # Started: a replace now makes a new task rather than losing its arguments.
        later = await bound.enqueue("v4")
        assert later.id != first.id
        assert await later.get(timeout=10) == "v4"
    assert ran == ["v3", "v4"]


async def test_debounce_from_sync_code_shares_the_handle(app: aqueue.App) -> None:
    @app.task(unique_mode="debounce", unique_for=0.5)
    async def refresh(n: int) -> int:
        return n

    first = await asyncio.to_thread(refresh.delay, 1)
    second = await asyncio.to_thread(refresh.delay, 2)
    assert first.id == second.id
    async with running_worker(app):
        assert await app.result(first.id).get(timeout=10) == 2


async def test_unique_mode_bad_values_are_clear_errors(app: aqueue.App) -> None:
    @app.task
    async def job(n: int) -> int:
        return n

    with pytest.raises(ConfigError, match="unique_mode must be"):
        job.options(unique_mode="debunce")
    with pytest.raises(ConfigError, match="unique_mode must be"):
        app.task(name="bad_mode", unique_mode="later")(job.fn)
    with pytest.raises(EnqueueError, match="task_id"):
        await job.options(unique_mode="replace", task_id="x").enqueue(1)
    with pytest.raises(EnqueueError, match="enqueue_many"):
        await job.options(unique_mode="debounce").enqueue_many([(1,), (2,)])
