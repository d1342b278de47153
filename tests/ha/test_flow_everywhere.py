"""Flow control, the same test on standalone Redis, behind Sentinel and on a Cluster.

Every key flow control adds sits under the queue's hash tag, so each script
still touches one cluster slot.
"""

from __future__ import annotations

import asyncio

import aqueue

from ..conftest import running_worker, wait_until


async def test_priorities_and_a_keyed_concurrency_limit(ha_app: aqueue.App) -> None:
    started: list[tuple[str, int]] = []
    running: dict[str, int] = {}
    most: dict[str, int] = {}

    @ha_app.task
    async def job(level: int) -> None:
        started.append(("job", level))

    @ha_app.task(concurrency=(1, "tenant:{tenant}"))
    async def limited(tenant: str, n: int) -> int:
        running[tenant] = running.get(tenant, 0) + 1
        most[tenant] = max(most.get(tenant, 0), running[tenant])
        await asyncio.sleep(0.02)
        running[tenant] -= 1
        started.append((tenant, n))
        return n

    await job.enqueue(0)  # a backlog, so the urgent ones wait by level
    for level in (2, 9, 5):
        await job.options(priority=level).enqueue(level)
    handles = await limited.enqueue_many([(t, n) for t in ("a", "b") for n in range(5)])
    async with running_worker(ha_app, concurrency=1, prefetch=0):
        await wait_until(lambda: len([s for s in started if s[0] == "job"]) == 4, 30)
        assert [await h.get(timeout=30) for h in handles] == [*range(5), *range(5)]
    assert [level for kind, level in started if kind == "job"] == [9, 5, 2, 0]
    async with running_worker(ha_app, concurrency=8):
        again = await limited.enqueue_many([(t, n) for t in ("a", "b") for n in range(5)])
        assert [await h.get(timeout=30) for h in again] == [*range(5), *range(5)]
    assert most == {"a": 1, "b": 1}
    # Per key, in the order they were enqueued.
    assert [n for t, n in started if t == "a"] == [*range(5), *range(5)]
