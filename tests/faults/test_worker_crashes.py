"""Workers die, stop or stall while running tasks: nothing is lost, healthy work runs once."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

import aqueue
from aqueue import TaskStatus

from ..conftest import wait_until
from .conftest import Counts, Workers, elapsed_since, producer, report

FAST = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5", "AQUEUE_DEAD_WORKER_AFTER": "2"}


async def _results(handles: list[aqueue.AsyncResult[Any]], timeout: float) -> list[Any]:
    return await asyncio.wait_for(asyncio.gather(*(h.get() for h in handles)), timeout)


@pytest.mark.parametrize("settings", ["fast", "defaults"])
async def test_sigkill_with_20_tasks_in_flight(
    redis_url: str, prefix: str, workers: Workers, counts: Counts, settings: str
) -> None:
    # fast: heartbeat every 0.5 s, dead after 2 s; defaults: 1 s and 5 s.
    env = FAST if settings == "fast" else {}
    keys = [f"k{i}" for i in range(20)]
    first = workers.start("-c", "20", **env)
    async with producer(redis_url, prefix) as app:
        mark = app.tasks["faults.mark"]
        handles = [await mark.enqueue(k, 3.0) for k in keys]
        await wait_until(lambda: counts.started(keys) == [1] * 20, 30)
        second = workers.start("-c", "20", **env)
        await wait_until(lambda: counts.workers_alive() == 2, 30)
        assert counts.done(keys) == [0] * 20  # all 20 are in flight on the first worker

        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        await wait_until(lambda: counts.started(keys) == [2] * 20, 30)
        restarted = elapsed_since(killed)
        attempts = await _results(handles, 30)
        recovered = elapsed_since(killed)

        assert counts.done(keys) == [1] * 20
        assert counts.started(keys) == [2] * 20  # each interrupted run, then one more
        assert attempts == [2] * 20
        assert [await h.status() for h in handles] == [TaskStatus.SUCCEEDED] * 20
        assert second.alive
        report(
            f"sigkill_{settings}",
            tasks=20,
            lost=20 - sum(counts.done(keys)),
            duplicated_completions=sum(counts.done(keys)) - 20,
            reexecuted_after_crash=sum(counts.started(keys)) - 20,
            reclaimed_after_s=restarted,
            all_done_after_s=recovered,
            task_seconds=3.0,
        )


async def test_sigterm_hands_back_unfinished_work_at_once(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    # Leases (60s) and dead-worker detection (60s) are far off: only the
    # hand-back on shutdown can get the long tasks running again in time.
    env = {"AQUEUE_DEAD_WORKER_AFTER": "60"}
    short = [f"s{i}" for i in range(10)]
    long = [f"l{i}" for i in range(10)]
    first = workers.start("-c", "20", "--grace-period", "1.5", "--visibility-timeout", "60", **env)
    async with producer(redis_url, prefix) as app:
        mark = app.tasks["faults.mark"]
        handles = [await mark.enqueue(k, 0.5) for k in short]
        handles += [await mark.enqueue(k, 8.0) for k in long]
        await wait_until(lambda: counts.started(short + long) == [1] * 20, 30)

        first.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert first.wait(20) == 0
        grace_exit = elapsed_since(stopped)
        assert counts.done(short) == [1] * 10  # finished within the grace period
        assert counts.done(long) == [0] * 10
        out = first.output()
        assert "10 handed back" in out, out

        workers.start("-c", "20", "--visibility-timeout", "60", **env)
        # 8 s of work each, well inside the 60 s lease a crash would have waited for.
        await _results(handles, 20)
        recovered = elapsed_since(stopped)

        assert counts.done(short + long) == [1] * 20
        assert counts.started(short) == [1] * 10
        assert counts.started(long) == [2] * 10
        report(
            "sigterm",
            tasks=20,
            lost=20 - sum(counts.done(short + long)),
            duplicated_completions=sum(counts.done(short + long)) - 20,
            handed_back=10,
            worker_exit_s=grace_exit,
            all_done_after_s=recovered,
            long_task_seconds=8.0,
        )


async def test_task_longer_than_visibility_timeout_runs_once(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    env = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5"}
    keys = ["long0", "long1"]
    workers.start("-c", "4", "--visibility-timeout", "2", **env)
    workers.start("-c", "4", "--visibility-timeout", "2", **env)
    async with producer(redis_url, prefix) as app:
        await wait_until(lambda: counts.workers_alive() == 2, 30)
        mark = app.tasks["faults.mark"]
        handles = [await mark.enqueue(k, 6.0) for k in keys]  # 3x the visibility timeout
        # A plain def task blocks its thread, not the event loop that renews its lease.
        handles.append(await app.tasks["faults.sync_mark"].enqueue("sync", 6.0))
        keys.append("sync")
        assert await _results(handles, 30) == [1, 1, "sync"]
        assert counts.started(keys) == [1, 1, 1]
        assert counts.done(keys) == [1, 1, 1]
        report("long_task_vt2", tasks=3, lost=0, duplicated=sum(counts.started(keys)) - 3)


async def test_stalled_worker_is_fenced_off(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    stale = workers.start("-c", "4", "--visibility-timeout", "2", **FAST)
    async with producer(redis_url, prefix) as app:
        attempt_of = app.tasks["faults.attempt_of"]
        # Attempt 1 would finish after 2 s, any later attempt after 4 s.
        handle = await attempt_of.enqueue("t", 2.0, 4.0)
        await wait_until(lambda: counts.started(["t"]) == [1], 30)
        stale.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        fresh = workers.start("-c", "4", "--visibility-timeout", "2", **FAST)
        await wait_until(lambda: counts.started(["t"]) == [2], 30)
        taken_over = elapsed_since(stopped)

        # The stale copy's sleep is long over: it finishes at once, too late (its
        # outcome is fenced off), unless its next lease renewal notices first
        # and cancels it.
        stale.signal(signal.SIGCONT)
        await wait_until(
            lambda: "result discarded" in stale.output() or "lease lost" in stale.output(), 15
        )
        assert await asyncio.wait_for(handle.get(), 20) == 2
        info = await handle.info()
        assert info.status is TaskStatus.SUCCEEDED and info.attempt == 2
        assert counts.started(["t"]) == [2]
        assert counts.done(["t"])[0] >= 1
        assert stale.alive and fresh.alive
        report(
            "fencing_sigstop",
            tasks=1,
            lost=0,
            recorded_attempt=2,
            stale_result_rejected=True,
            taken_over_after_s=taken_over,
        )
