"""After a SIGKILL, a dead worker's tasks run again within a bound, however full the queue.

The bound: ``dead_worker_after`` (the dead worker is detected) + one heartbeat
(the next reclaim pass) + one task duration of the backlog (running tasks
free their slots; reclaimed work takes them before any newer work), plus a
margin for a noisy, shared test machine. It does not depend on the
visibility timeout.
"""

from __future__ import annotations

import signal
import time

from ..conftest import wait_until
from .conftest import Counts, Workers, elapsed_since, producer, report

DEAD_WORKER_AFTER = 5.0
HEARTBEAT = 1.0
BACKLOG_TASK_SECONDS = 2.0
#: Process start-up, Redis round trips and a loaded 2-core machine.
MARGIN = 6.0


async def test_sigkill_with_a_backlog_reclaims_first(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    keys = [f"k{i}" for i in range(40)]
    backlog = [f"b{i}" for i in range(300)]
    first = workers.start("-c", "40", "--visibility-timeout", "30")
    async with producer(redis_url, prefix) as app:
        # 40 in flight, twice the new worker's concurrency: long on their first
        # attempt, short once reclaimed.
        handles = [await app.tasks["faults.attempt_of"].enqueue(k, 600.0, 0.1) for k in keys]
        await wait_until(lambda: counts.started(keys) == [1] * 40, 30)
        await app.tasks["faults.mark"].enqueue_many([(b, BACKLOG_TASK_SECONDS) for b in backlog])
        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        workers.start("-c", "20", "--visibility-timeout", "30")
        await wait_until(lambda: counts.started(keys) == [2] * 40, 60)
        restarted = elapsed_since(killed)
        assert [await h.get(timeout=30) for h in handles] == [2] * 40
        backlog_done = sum(counts.done(backlog))
    bound = DEAD_WORKER_AFTER + HEARTBEAT + BACKLOG_TASK_SECONDS + MARGIN
    report(
        "sigkill_with_backlog",
        tasks=40,
        backlog=len(backlog),
        lost=0,
        duplicated_completions=sum(counts.done(keys)) - 40,
        all_restarted_after_s=restarted,
        bound_s=bound,
        backlog_done_meanwhile=backlog_done,
        visibility_timeout_s=30,
    )
    assert counts.done(keys) == [1] * 40
    assert restarted <= bound, f"restarted {restarted}s after the kill, bound {bound}s"
