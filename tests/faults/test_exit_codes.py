"""A worker that stops on an internal error exits non-zero, and ``--processes`` restarts it."""

from __future__ import annotations

from ..conftest import wait_until
from .conftest import Counts, Workers, producer


async def test_worker_loop_crash_exits_non_zero(
    redis_url: str, prefix: str, workers: Workers
) -> None:
    worker = workers.start("-c", "2", AQUEUE_HEARTBEAT_INTERVAL="0.2")
    async with producer(redis_url, prefix) as app:
        await app.tasks["faults.break_heartbeat"].enqueue()
        code = worker.wait(30)
    assert code == 1
    assert "worker loop heartbeat crashed" in worker.output()


async def test_supervisor_restarts_a_child_that_crashed(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    supervisor = workers.start(
        "-c", "2", "--processes", "2", "--grace-period", "2", AQUEUE_HEARTBEAT_INTERVAL="0.2"
    )
    async with producer(redis_url, prefix) as app:
        await wait_until(lambda: counts.workers_alive() == 2, 30)
        # Both children crash (each task breaks the process that runs it) ...
        for _ in range(2):
            await app.tasks["faults.break_heartbeat"].enqueue()
        await wait_until(lambda: supervisor.output().count("exited with code 1") >= 1, 30)
        # ... and the supervisor keeps workers running: new work still gets done.
        keys = [f"after{i}" for i in range(4)]
        handles = [await app.tasks["faults.mark"].enqueue(k) for k in keys]
        for handle in handles:
            await handle.get(timeout=30)
    assert counts.done(keys) == [1] * 4
    assert supervisor.alive
    assert "restarting" in supervisor.output()
