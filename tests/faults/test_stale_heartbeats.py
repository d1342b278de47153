"""Heartbeats of SIGKILLed idle workers are removed, so inspect counts only
live workers (issue 11, attack item 12). Real worker processes."""

from __future__ import annotations

import asyncio
import json
import signal

from aqueue.core.keys import QueueKeys

from ..conftest import wait_until
from .conftest import Counts, Workers, producer, report, run_cli

ENV = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5", "AQUEUE_DEAD_WORKER_AFTER": "1"}


async def test_killed_idle_workers_leave_no_heartbeat(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    pool = [workers.start("-c", "2", **ENV) for _ in range(4)]
    async with producer(redis_url, prefix) as app:
        # Every worker has read the queue at least once, then they idle.
        handles = [await app.tasks["faults.mark"].enqueue(f"k{i}", 0.3) for i in range(8)]
        for h in handles:
            assert await asyncio.wait_for(h.get(), 30) == 1
    await wait_until(lambda: counts.workers_alive() == 4, 20)
    for worker in pool[:3]:
        worker.signal(signal.SIGKILL)
        worker.wait(10)
    # What a worker killed between its heartbeat and its first read leaves (or
    # one whose consumer was dropped while a blocking read was under way): a
    # heartbeat entry and no consumer in the group. Made here outright, since
    # the timing that leaves it is not reproducible at will.
    workers_key = QueueKeys(prefix, "default").workers
    counts.client.zadd(workers_key, {"vm:1:never-read": 1})
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await wait_until(lambda: counts.workers_alive() == 1, 20)
    gone_after = round(loop.time() - killed_at, 2)
    status, out = await run_cli(redis_url, prefix, "inspect", "faults:app", "--json")
    assert status == 0, out
    seen = json.loads(out)
    assert [q["heartbeats"] for q in seen["queues"] if q["queue"] == "default"] == [1]
    assert [w["pid"] for w in seen["workers"]] == [pool[3].pid]
    assert pool[3].alive
    report("SIGKILLed idle workers", killed=3, heartbeats_left=0, removed_after_s=gone_after)
