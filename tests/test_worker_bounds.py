"""Worker edge cases found by attacking it: burst mode with one slot on several queues."""

from __future__ import annotations

import asyncio

import aqueue


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
