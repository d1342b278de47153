"""An ``async def`` task that blocks the event loop doesn't make its neighbours run twice.

The worker's heartbeat and lease renewal run on its event loop; a task that
calls ``time.sleep(12)`` stopped them, a second worker took the first for
dead and ran its healthy tasks again (10 of 150 completed twice, the blocker
ran 5 times and ended DEAD). The watchdog thread keeps the leases alive and
names the task that blocked the loop.
"""

from __future__ import annotations

import asyncio

from ..conftest import wait_until
from .conftest import Counts, Workers, producer, report

SHORT_LEASES = {
    "AQUEUE_VISIBILITY_TIMEOUT": "4",
    "AQUEUE_DEAD_WORKER_AFTER": "3",
    "AQUEUE_HEARTBEAT_INTERVAL": "1",
}
HEALTHY = 150


async def test_a_blocked_event_loop_causes_no_duplicates(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    first = workers.start("-c", "200", **SHORT_LEASES)
    await wait_until(lambda: counts.workers_alive() == 1, 30)
    keys = [f"healthy-{i}" for i in range(HEALTHY)]
    async with producer(redis_url, prefix) as app:
        mark = app.tasks["faults.mark"]
        handles = [await mark.enqueue(k, 2.0) for k in keys]
        await wait_until(lambda: sum(counts.started(keys)) == HEALTHY, 30)
        blocker = await app.tasks["faults.block_loop"].enqueue("blocker", 12.0)
        await wait_until(lambda: counts.started(["blocker"]) == [1], 30)
        # A second worker, ready to take over anything whose lease lapses.
        second = workers.start("-c", "200", **SHORT_LEASES)
        assert await blocker.get(timeout=60) == "blocker"
        attempts = await asyncio.gather(*(h.get(timeout=60) for h in handles))
        await asyncio.sleep(2)  # time for a late duplicate to show up
        started, done = counts.started(keys), counts.done(keys)
        duplicates = sum(n - 1 for n in done if n > 1)
        report(
            "blocked_event_loop",
            tasks=HEALTHY + 1,
            lost=sum(1 for n in done if n == 0),
            duplicated=duplicates,
            blocker_runs=counts.started(["blocker"])[0],
        )
        assert started == [1] * HEALTHY
        assert done == [1] * HEALTHY
        assert attempts == [1] * HEALTHY
        assert counts.started(["blocker"]) == [1]
        assert first.alive and second.alive
    log = first.output()
    assert "the event loop has been blocked for" in log
    assert f"faults.block_loop[{blocker.id}]" in log
