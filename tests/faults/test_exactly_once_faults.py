"""Connections killed every 50 ms while tasks are enqueued and run: each runs exactly once.

An enqueue or a finish whose reply is lost with its connection is sent
again; neither may add a task twice nor take a recorded outcome for a lost
lease (which would run the task again).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

import aqueue

from ..conftest import wait_until
from .conftest import Counts, Workers, elapsed_since, producer, report

ENV = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5", "AQUEUE_DEAD_WORKER_AFTER": "2"}


async def _enqueue_all(
    mark: aqueue.Task[Any, Any], keys: list[str], chosen_ids: bool
) -> list[aqueue.AsyncResult[Any]]:
    handles = []
    for key in keys:
        call = mark.options(task_id=key) if chosen_ids else mark
        while True:
            try:
                handles.append(await call.enqueue(key, 0.0))
                break
            except aqueue.ConnectionFailed:
                # Not acknowledged: it may or may not be in Redis; enqueue it again.
                await asyncio.sleep(0.01)
    return handles


@pytest.mark.parametrize("ids", ["chosen", "drawn"])
async def test_client_kill_every_50ms_runs_each_task_exactly_once(
    redis_url: str, prefix: str, workers: Workers, counts: Counts, ids: str
) -> None:
    keys = [f"x{i}" for i in range(1000)]
    worker = workers.start("-c", "20", **ENV)
    admin = redis.Redis.from_url(redis_url)
    kills = 0
    async with producer(redis_url, prefix) as app:
        producing = asyncio.create_task(
            _enqueue_all(app.tasks["faults.mark"], keys, ids == "chosen")
        )
        started = time.monotonic()
        while not producing.done() or sum(counts.done(keys)) < len(keys):
            await asyncio.sleep(0.05)
            kills += int(admin.client_kill_filter(_type="normal", skipme=True))
            if time.monotonic() - started > 120:
                break
        handles = await producing
        await wait_until(lambda: min(counts.done(keys)) >= 1, 60)
        all_done = elapsed_since(started)
        assert len(await asyncio.wait_for(asyncio.gather(*(h.get() for h in handles)), 60)) == 1000
    admin.close()
    started_n, done = counts.started(keys), counts.done(keys)
    report(
        f"client_kill_50ms_enqueue_{ids}_ids",
        tasks=len(keys),
        connections_killed=kills,
        lost=sum(1 for d in done if d == 0),
        duplicated=sum(d - 1 for d in done if d > 1),
        started_twice=sum(1 for s in started_n if s > 1),
        all_done_after_s=all_done,
    )
    assert kills > 0
    assert worker.alive
    assert done == [1] * len(keys)
    assert started_n == [1] * len(keys)
    assert "its lease was lost" not in worker.output()
