"""Priorities: a waiting task of a higher priority is fetched before a lower one.

Every test runs a real worker against the session's private redis-server and
records the order in which tasks start.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import aqueue
from aqueue import TaskStatus
from aqueue.core.errors import ConfigError

from ..conftest import running_worker, wait_until


async def test_a_backlog_of_10000_low_then_100_high_inverts_at_most_one_batch(
    app: aqueue.App,
) -> None:
    concurrency, prefetch = 10, 5
    started: list[str] = []

    @app.task
    async def job(kind: str) -> None:
        started.append(kind)
        await asyncio.sleep(0)

    await job.enqueue_many([("low",)] * 10_000)
    async with running_worker(app, concurrency=concurrency, prefetch=prefetch):
        await wait_until(lambda: len(started) >= 1_000, 60)
        await job.options(priority=9).enqueue_many([("high",)] * 100)
        # Every task that starts from here on was fetched after the 100 were in
        # Redis, or was already held by the worker (its slots and read-ahead).
        in_redis = len(started)
        await wait_until(lambda: started.count("high") == 100, 60)
    # Orders, not clocks: a task's place in the start order, against the moment
    # the enqueue returned (wall-clock times of Redis and of task starts differ
    # by less than a millisecond, in which dozens of no-op tasks start).
    since = min(in_redis, started.index("high"))
    last_high = len(started) - 1 - started[::-1].index("high")
    inversion = started[since:last_high].count("low")
    print(
        f"\npriority inversion: {inversion} low task(s) began after 100 high were "
        f"enqueued, before the last high one (one batch: {concurrency + prefetch})"
    )
    # At most what the worker held when the urgent ones arrived; without
    # priorities, thousands of the backlog's low tasks would come first.
    assert inversion <= concurrency + prefetch


async def test_levels_are_strict_and_first_in_first_out_within_a_level(app: aqueue.App) -> None:
    started: list[tuple[int, int]] = []

    @app.task
    async def job(priority: int, n: int) -> None:
        started.append((priority, n))

    # Something in the stream first, so urgent tasks wait in their sorted set.
    await job.enqueue_many([(0, n) for n in range(5)])
    for n in range(5):
        for level in (3, 9, 1, 5):
            await job.options(priority=level).enqueue(level, n)
    async with running_worker(app, concurrency=1, prefetch=0):
        await wait_until(lambda: len(started) == 25, 30)
    urgent = [p for p, _ in started if p > 0]
    assert urgent == sorted(urgent, reverse=True)
    for level in (0, 1, 3, 5, 9):
        assert [n for p, n in started if p == level] == list(range(5))


async def test_delayed_and_retried_tasks_keep_their_priority(app: aqueue.App) -> None:
    started: list[str] = []
    gate = asyncio.Event()

    @app.task(retries=1, retry_delay=0.2, retry_jitter=False)
    async def flaky(kind: str) -> str:
        started.append(kind)
        if kind == "retried" and started.count("retried") == 1:
            raise RuntimeError("once")
        if kind == "blocker":
            await gate.wait()
        return kind

    async with running_worker(app, concurrency=1, prefetch=0):
        first = await flaky.options(priority=5).enqueue("retried")
        assert await first.get(timeout=10) == "retried"
        assert started == ["retried", "retried"]
        record = await app.client.broker.record(flaky.config.queue, first.id)
        assert record[b"pri"] == b"5"

        # The one slot is busy; a delayed urgent task becomes due behind a backlog.
        blocker = await flaky.enqueue("blocker")
        await wait_until(lambda: "blocker" in started, 10)
        await flaky.enqueue_many([("low",)] * 20)
        delayed = await flaky.options(priority=9, delay=0.3).enqueue("delayed")
        await asyncio.sleep(0.6)  # due by now, promoted while the slot is busy
        gate.set()
        assert await delayed.get(timeout=10) == "delayed"
        await blocker
        await wait_until(lambda: started.count("low") == 20, 10)
    assert started.index("delayed") < started.index("low")


async def test_status_abort_and_purge_see_urgent_tasks(app: aqueue.App) -> None:
    @app.task
    async def job(n: int) -> int:
        return n

    await job.enqueue_many([(n,) for n in range(3)])  # a backlog: urgent tasks wait aside
    waiting = await job.options(priority=7).enqueue(10)
    aborted = await job.options(priority=7).enqueue(11)
    assert await waiting.status() == TaskStatus.QUEUED
    await aborted.abort()
    async with running_worker(app, concurrency=2):
        assert await waiting.get(timeout=10) == 10
        with pytest.raises(aqueue.TaskAborted):
            await aborted.get(timeout=10)

    await job.enqueue_many([(n,) for n in range(3)])
    purged = await job.options(priority=4).enqueue(12)
    await app.broker.purge(job.config.queue, b"purged")
    assert await purged.status() == TaskStatus.ABORTED


async def test_a_priority_outside_0_to_9_is_refused(app: aqueue.App) -> None:
    with pytest.raises(ConfigError, match="priority must be an integer from 0 to 9"):

        @app.task(priority=10)
        async def too_high() -> None: ...

    @app.task
    async def job() -> None: ...

    with pytest.raises(ConfigError, match="priority"):
        job.options(priority=-1)
    with pytest.raises(ConfigError, match="priority"):
        job.options(priority="high")


async def test_a_leaving_worker_hands_its_urgent_tasks_back_at_once(app: aqueue.App) -> None:
    ran: list[int] = []

    @app.task
    async def job(n: int) -> int:
        ran.append(n)
        await asyncio.sleep(0.5)
        return n

    await job.enqueue(0)  # a backlog, so the urgent ones wait aside
    handles = [await job.options(priority=8).enqueue(n) for n in range(1, 5)]
    async with running_worker(app, concurrency=1, prefetch=3, grace_period=0.1) as first:
        # It holds all four urgent ones (one running, three read ahead) before it
        # leaves: one still unread would stay ahead of those handed back.
        await wait_until(lambda: bool(ran) and first.running_count == 4, 10)
    assert ran == [1]  # urgent first; the rest read ahead, then handed back
    figures = await app.broker.views.queue_figures(job.config.queue)
    assert figures["pending"] == 0
    assert figures["waiting"] == 5
    assert [await h.status() for h in handles] == [TaskStatus.QUEUED] * 4
    async with running_worker(app, concurrency=1, prefetch=0):
        assert [await h.get(timeout=20) for h in handles] == [1, 2, 3, 4]
    assert ran[1:5] == [1, 2, 3, 4]  # the urgent ones still before the plain one


async def test_levels_hold_while_every_worker_slot_is_busy(app: aqueue.App) -> None:
    started: list[str] = []
    gate = asyncio.Event()

    @app.task
    async def job(kind: str) -> None:
        started.append(kind)
        if kind == "blocker":
            await gate.wait()

    async with running_worker(app, concurrency=1, prefetch=0):
        await job.enqueue("blocker")
        await wait_until(lambda: started == ["blocker"], 10)
        # Nothing waits in the stream: the first urgent task rings the bell and
        # still waits by its level, ahead of less urgent ones enqueued after it.
        await job.options(priority=9).enqueue("nine")
        for _ in range(3):
            await job.options(priority=1).enqueue("one")
        gate.set()
        await wait_until(lambda: len(started) == 5, 10)
    assert started == ["blocker", "nine", "one", "one", "one"]


async def test_an_urgent_task_wakes_an_idle_worker(app: aqueue.App) -> None:
    from aqueue.runtime.fetching import BLOCK_MS

    @app.task
    async def job() -> float:
        return time.monotonic()

    async with running_worker(app, concurrency=4):
        await (await job.enqueue()).get(timeout=10)  # the worker is up and reading
        await asyncio.sleep(0.3)  # now blocked on the empty stream
        sent = time.monotonic()
        began = await (await job.options(priority=9).enqueue()).get(timeout=10)
    # Woken by the bell, not by the end of its blocking read.
    assert began - sent < BLOCK_MS / 1000
    keys = app.broker.keys(job.config.queue)
    assert await app.broker.client.xlen(keys.stream) == 0  # the bell was dropped


async def test_an_urgent_delivery_lost_with_its_reply_is_found_again(app: aqueue.App) -> None:
    @app.task
    async def job(n: int) -> int:
        return n

    queue = job.config.queue
    broker = app.broker
    await broker.ensure_group(queue)
    await job.enqueue(0)
    urgent = await job.options(priority=6).enqueue(1)
    # A fetch whose reply the worker never saw (its connection dropped).
    lost = await broker.fetch(queue, "w1", 1)
    assert [d.task_id for d in lost] == [urgent.id]
    assert lost[0].entry_id.startswith("0-")  # delivered from the urgent stream
    found = await broker.claim_own_stale(queue, "w1", 0, 10, set())
    assert [d.task_id for d in found] == [urgent.id]
    assert found[0].entry_id == lost[0].entry_id
