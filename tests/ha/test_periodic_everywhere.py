"""Periodic tasks on standalone Redis, behind Sentinel and on a Cluster: each tick
is enqueued exactly once, however many schedulers compete for it."""

from __future__ import annotations

import asyncio
import collections
from datetime import UTC, datetime, timedelta

import aqueue
from aqueue.periodic import Scheduler

from ..conftest import running_worker, wait_until
from ..test_periodic import FakeClock


async def test_two_schedulers_enqueue_each_tick_once(any_url: str, prefix: str) -> None:
    apps = [aqueue.App(any_url, prefix=prefix) for _ in range(2)]
    runs: collections.Counter[str] = collections.Counter()
    for a in apps:

        @a.periodic(cron="* * * * *", name="minutely", queue="beat")
        async def minutely(ctx: aqueue.Context) -> None:
            runs[ctx.id] += 1

    start = datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC).timestamp()
    clock = FakeClock(start)
    schedulers = [Scheduler(a, clock=clock) for a in apps]
    try:
        first = await asyncio.gather(*(s.run_due() for s in schedulers))
        assert sorted(o.outcome for batch in first for o in batch) == ["claimed", "new"]
        enqueued: list[str] = []
        for minute in range(1, 6):
            clock.now = start + 60 * minute
            rounds = await asyncio.gather(*(s.run_due() for s in schedulers))
            got = [o for batch in rounds for o in batch]
            assert sorted(o.outcome for o in got) == ["claimed", "enqueued"]
            enqueued += [o.task_id for o in got if o.outcome == "enqueued"]
        assert len(set(enqueued)) == 5
        async with (
            running_worker(apps[0], queues=["beat"], beat=False),
            running_worker(apps[1], queues=["beat"], beat=False),
        ):
            await wait_until(lambda: sum(runs.values()) >= 5, timeout=30)
            for task_id in enqueued:  # every run recorded, so nothing is left to run
                await apps[0].result(task_id, "beat").get(timeout=30)
        assert runs == {task_id: 1 for task_id in enqueued}
    finally:
        for a in apps:
            await a.close()


async def test_two_workers_with_beat_run_each_tick_once(any_url: str, prefix: str) -> None:
    apps = [aqueue.App(any_url, prefix=prefix) for _ in range(2)]
    runs: collections.Counter[str] = collections.Counter()
    for a in apps:

        @a.periodic(every=timedelta(seconds=1), name="second", queue="beat")
        async def second(ctx: aqueue.Context) -> None:
            runs[ctx.id] += 1

    try:
        async with (
            running_worker(apps[0], queues=["beat"]),
            running_worker(apps[1], queues=["beat"]),
        ):
            await wait_until(lambda: len(runs) >= 3, timeout=30)
            await asyncio.sleep(0.5)  # a second run of a tick would show by now
        assert len(runs) >= 3
        assert set(runs.values()) == {1}
        ticks = [int(task_id.rsplit(":", 1)[1]) for task_id in runs]
        assert all(t % 1000 == 0 for t in ticks)
    finally:
        for a in apps:
            await a.close()
