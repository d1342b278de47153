"""Plain ``def`` tasks run in threads that can't be stopped: shutdown, second signal, timeout.

A task whose thread still runs is never handed back, nor retried, while it
runs: it keeps its lease until its thread returns or its process exits, and
a process that exits with such a thread is left to the dead-worker reclaim.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

import aqueue

from ..conftest import wait_until
from .conftest import Counts, Workers, elapsed_since, producer, report

# Reclaim of an exited worker's entries only after its heartbeat is 6 s old,
# far beyond the moments the tests look (the lease itself is never what expires).
SLOW_RECLAIM = {"AQUEUE_DEAD_WORKER_AFTER": "6", "AQUEUE_VISIBILITY_TIMEOUT": "120"}


async def test_grace_end_exits_at_once_and_never_hands_back_a_running_thread(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    first = workers.start("-c", "4", "--grace-period", "1", **SLOW_RECLAIM)
    async with producer(redis_url, prefix) as app:
        sync_task = await app.tasks["faults.sync_mark"].enqueue("thread", 20.0)
        coroutines = [await app.tasks["faults.attempt_of"].enqueue(k, 60.0, 0.1) for k in "ab"]
        await wait_until(lambda: counts.started(["thread", "a", "b"]) == [1, 1, 1], 30)
        second = workers.start("-c", "4", **SLOW_RECLAIM)
        await wait_until(lambda: counts.workers_alive() == 2, 30)

        first.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert first.wait(30) == 0
        # It did not wait for the thread (20 s), and did not hand its task back.
        assert counts.done(["thread"]) == [0]
        assert counts.started(["thread"]) == [1]
        assert "keep their lease" in first.output()
        assert "2 handed back" in first.output()
        # The cancelled coroutines were handed back and run again at once.
        assert [await h.get(timeout=30) for h in coroutines] == [2, 2]
        assert counts.started(["thread"]) == [1]
        # The abandoned thread's task is reclaimed once the dead worker is seen.
        await wait_until(lambda: counts.started(["thread"]) == [2], 30)
        reclaimed = elapsed_since(stopped)
        assert await sync_task.get(timeout=60) == "thread"
        assert counts.done(["thread", "a", "b"]) == [1, 1, 1]
        assert second.alive
        report(
            "shutdown_with_running_thread",
            tasks=3,
            lost=0,
            duplicated_completions=sum(counts.done(["thread", "a", "b"])) - 3,
            thread_reclaimed_after_s=reclaimed,
            dead_worker_after_s=6,
        )


async def test_second_signal_exits_at_once_with_a_thread_still_running(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    worker = workers.start("-c", "2", "--grace-period", "120", **SLOW_RECLAIM)
    async with producer(redis_url, prefix) as app:
        await app.tasks["faults.sync_mark"].enqueue("forever", 600.0)
        await wait_until(lambda: counts.started(["forever"]) == [1], 30)
        worker.signal(signal.SIGTERM)
        await wait_until(lambda: "waiting up to" in worker.output(), 30)
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert counts.started(["forever"]) == [1]
        assert counts.done(["forever"]) == [0]
        assert "0 handed back" in worker.output()


async def test_timed_out_thread_is_not_retried_while_it_runs(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    workers.start("-c", "4", "--threads", "4")
    async with producer(redis_url, prefix) as app:
        handle = await app.tasks["faults.sync_over_timeout"].enqueue("slow", 3.0)
        await wait_until(lambda: counts.started(["slow"]) == [2], 30)
        # The retry began only after the first thread had returned.
        assert counts.done(["slow"]) == [1]
        with pytest.raises(aqueue.TaskFailed, match="timed out"):
            await handle.get(timeout=30)
        info = await handle.info()
        assert info.attempt == 2
        await wait_until(lambda: counts.done(["slow"]) == [2], 30)
        assert counts.started(["slow"]) == [2]


async def test_waiting_for_a_free_thread_is_not_running_and_sigterm_twice_ends_it(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    """--threads 2 with two stuck sync tasks: later sync tasks show as queued, not
    running, until a thread begins them, and their timeout counts from then
    (before, they showed RUNNING and ended FAILED "timed out" without ever
    running); one aborted while it waits never runs; SIGTERM twice ends the process."""
    worker = workers.start("-c", "8", "--threads", "2", "--grace-period", "120", **SLOW_RECLAIM)
    async with producer(redis_url, prefix) as app:
        sync_mark = app.tasks["faults.sync_mark"]
        stuck = [await sync_mark.enqueue(f"stuck-{i}", 6.0) for i in range(2)]
        await wait_until(lambda: counts.started(["stuck-0", "stuck-1"]) == [1, 1], 30)
        later_keys = [f"later-{i}" for i in range(4)]
        later = [await sync_mark.options(timeout=2.0).enqueue(k, 0.2) for k in later_keys]
        dropped = await sync_mark.enqueue("aborted-waiting", 0.2)

        async def parked_by_the_worker() -> bool:
            # Fetched (the record names the worker), then shown queued again
            # while no thread is free: the worker parks it just after the fetch.
            infos = [await h.info() for h in [*later, dropped]]
            return all(i.worker and i.status is aqueue.TaskStatus.QUEUED for i in infos)

        await wait_until(parked_by_the_worker, 30)
        await asyncio.sleep(1.0)  # and they stay queued while the threads are stuck
        assert {await h.status() for h in [*later, dropped]} == {aqueue.TaskStatus.QUEUED}
        assert await dropped.abort() is True
        assert [await h.get(timeout=60) for h in later] == later_keys
        assert [await h.get(timeout=30) for h in stuck] == ["stuck-0", "stuck-1"]
        assert counts.started(later_keys) == [1, 1, 1, 1]
        assert counts.done(later_keys) == [1, 1, 1, 1]
        assert await dropped.status() is aqueue.TaskStatus.ABORTED
        assert counts.started(["aborted-waiting"]) == [0]

        # Two threads stuck for good: SIGTERM twice ends the process all the same.
        for i in range(2):
            await sync_mark.enqueue(f"forever-{i}", 600.0)
        await wait_until(lambda: counts.started(["forever-0", "forever-1"]) == [1, 1], 30)
        worker.signal(signal.SIGTERM)
        await wait_until(lambda: "waiting up to" in worker.output(), 30)
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert counts.done(["forever-0", "forever-1"]) == [0, 0]
