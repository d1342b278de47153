"""A Redis over maxmemory with noeviction is an outage, not a crash (issue 11,
attack item 6): every worker rides it out, in-flight tasks finish once each,
and their outcomes are recorded. Real worker processes, exact counts."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
import redis

import aqueue
from aqueue import TaskStatus

from ..conftest import redis_server, wait_until
from .conftest import Counts, Workers, elapsed_since, producer, report

TASKS = 60


async def test_workers_ride_out_redis_out_of_memory(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    with redis_server("--maxmemory", "16mb", "--maxmemory-policy", "noeviction") as srv:
        admin = redis.Redis(port=srv.port)
        env = {
            # Counted on the session's server: the full one refuses the counts too.
            "FAULTS_COUNTS_URL": redis_url,
            "AQUEUE_HEARTBEAT_INTERVAL": "0.5",
            "AQUEUE_DEAD_WORKER_AFTER": "2",
        }
        pool = [workers.start("-c", "20", url=srv.url, **env) for _ in range(3)]
        async with producer(srv.url, prefix) as app:
            mark = app.tasks["faults.mark"]
            keys = [f"oom{i}" for i in range(TASKS)]
            handles = [await mark.enqueue(k, 4.0) for k in keys]
            await wait_until(lambda: sum(counts.started(keys)) == TASKS, 30)
            # Fill it, until even a small write is refused.
            filled = 0
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                while filled < 100_000:
                    # Big values first: the fill must end well within the tasks' 4 s, even
                    # on a loaded machine.
                    size = 1_000_000 if filled < 10 else 4096 if filled < 3000 else 16
                    admin.set(f"filler:{filled}", b"x" * size)
                    filled += 1
            with pytest.raises(aqueue.ConnectionFailed, match="out of memory"):
                await mark.enqueue("refused")
            full_at = time.monotonic()
            # Keep it full: whatever the workers' own writes free (an XACK, a
            # trim) is taken again at once, so their outcomes meet the outage.
            # Each top-up is big: Redis lets a write through while it is even a
            # byte under maxmemory, so one that gets in puts it well over again,
            # and a worker's write between two top-ups still meets a full Redis
            # (a loaded machine may run this thread only now and then).
            keep_full = threading.Event()
            topped: list[int] = []

            def top_up() -> None:
                with redis.Redis(port=srv.port) as filler:
                    while not keep_full.is_set():
                        with contextlib.suppress(redis.exceptions.OutOfMemoryError):
                            filler.set(f"topup:{len(topped)}", b"x" * 65536)
                            topped.append(1)
                        time.sleep(0.002)

            topper = threading.Thread(target=top_up, daemon=True)
            topper.start()
            # Every task ends during the outage (they sleep 4 s); then memory is freed.
            await wait_until(lambda: sum(counts.done(keys)) == TASKS, 30)
            await asyncio.sleep(1.0)
            keep_full.set()
            topper.join(5)
            for start in range(0, filled, 1000):
                admin.delete(*(f"filler:{i}" for i in range(start, min(filled, start + 1000))))
            for start in range(0, len(topped), 1000):
                stop = min(len(topped), start + 1000)
                admin.delete(*(f"topup:{i}" for i in range(start, stop)))
            freed_at = time.monotonic()
            for handle in handles:
                assert await asyncio.wait_for(handle.get(), 30) == 1
            recorded = elapsed_since(freed_at)
            assert counts.started(keys) == [1] * TASKS
            assert counts.done(keys) == [1] * TASKS
            assert [await h.status() for h in handles] == [TaskStatus.SUCCEEDED] * TASKS
            assert all(w.alive for w in pool)
            assert any("is out of memory" in w.output() for w in pool)
            assert not any("Traceback" in w.output() for w in pool)
            report(
                "Redis over maxmemory (noeviction)",
                tasks=TASKS,
                lost=0,
                duplicated=0,
                worker_exits=0,
                full_for=round(freed_at - full_at, 1),
                all_recorded_after_free=recorded,
            )
        admin.close()
