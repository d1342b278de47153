"""A worker holds no more messages than it can run, so a crash strands little."""

from __future__ import annotations

import asyncio
import signal
import time

from aqueue.core.keys import CONSUMER_GROUP, QueueKeys

from ..conftest import wait_until
from .conftest import Counts, Workers, elapsed_since, producer, report

ENV = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5", "AQUEUE_DEAD_WORKER_AFTER": "2"}


async def test_prefetch_is_bounded_and_a_crash_strands_only_that(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    concurrency = 5
    keys = [f"b{i}" for i in range(60)]
    stream = QueueKeys(prefix, "default").stream
    async with producer(redis_url, prefix) as app:
        mark = app.tasks["faults.mark"]
        handles = [await mark.enqueue(k, 1.0) for k in keys]
        first = workers.start("-c", str(concurrency), **ENV)
        await wait_until(lambda: sum(counts.started(keys)) > 0, 30)
        held: list[int] = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # sample what the worker holds while it works
            summary = counts.client.xpending(stream, CONSUMER_GROUP)
            held.append(int(summary["pending"]))
            await asyncio.sleep(0.02)
        assert 0 < max(held) <= 2 * concurrency  # running + one batch being acknowledged
        assert max(held) >= concurrency

        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        stranded = int(counts.client.xpending(stream, CONSUMER_GROUP)["pending"])
        waiting = int(counts.client.xlen(stream))
        assert stranded <= 2 * concurrency
        workers.start("-c", "20", **ENV)
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in handles)), 60)
        assert min(counts.done(keys)) == 1
        # Only a stranded task can run twice (killed after its body, before its ack).
        assert sum(counts.done(keys)) <= 60 + stranded
        report(
            "bounded_prefetch_sigkill",
            tasks=60,
            concurrency=concurrency,
            max_held=max(held),
            stranded_at_kill=stranded,
            stream_length_at_kill=waiting,
            lost=sum(1 for d in counts.done(keys) if d == 0),
            reexecuted=sum(counts.started(keys)) - 60,
            all_done_after_s=elapsed_since(killed),
        )


async def test_second_sigterm_stops_at_once_and_hands_everything_back(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    env = {"AQUEUE_DEAD_WORKER_AFTER": "60"}
    keys = [f"t{i}" for i in range(8)]
    first = workers.start("-c", "8", "--grace-period", "60", **env)
    async with producer(redis_url, prefix) as app:
        mark = app.tasks["faults.mark"]
        handles = [await mark.enqueue(k, 5.0) for k in keys]
        await wait_until(lambda: counts.started(keys) == [1] * 8, 30)
        first.signal(signal.SIGTERM)
        await wait_until(lambda: "stopping: waiting up to" in first.output(), 10)
        first.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert first.wait(15) == 0  # well before the 60 s grace period
        exit_after = elapsed_since(stopped)
        assert "8 handed back" in first.output(), first.output()
        workers.start("-c", "8", **env)
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in handles)), 30)
        assert counts.done(keys) == [1] * 8
        report("double_sigterm", tasks=8, lost=0, handed_back=8, worker_exit_s=exit_after)
