"""Workflows under crashes: a chord's callback runs exactly once, a chain goes on."""

from __future__ import annotations

import signal

from aqueue import chain, chord, group

from ..conftest import wait_until
from .conftest import Counts, Workers, producer, report

FAST = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5", "AQUEUE_DEAD_WORKER_AFTER": "2"}


async def test_chord_under_a_sigkilled_worker_calls_back_exactly_once(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    members = [f"m{i}" for i in range(10)]
    first = workers.start("-c", "20", **FAST)
    async with producer(redis_url, prefix) as app:
        mark, collect = app.tasks["faults.mark"], app.tasks["faults.collect"]
        c = chord(group(mark.s(k, 3.0) for k in members), collect.s("callback"))
        callback = await c.enqueue()
        await wait_until(lambda: counts.started(members) == [1] * 10, 30)
        second = workers.start("-c", "20", **FAST)
        await wait_until(lambda: counts.workers_alive() == 2, 30)

        first.signal(signal.SIGKILL)
        # Every member is re-run once on the second worker (attempt 2), then the
        # callback gets their values: the sum of ten attempts numbered 2.
        assert await callback.get(timeout=60) == 20
        assert c.members is not None and await c.members.get(timeout=5) == [2] * 10

        assert counts.started(members) == [2] * 10
        assert counts.done(members) == [1] * 10
        assert counts.started(["callback"]) == [1]
        assert counts.done(["callback"]) == [1]
        assert second.alive
        report(
            "chord_sigkill",
            members=10,
            callback_runs=counts.started(["callback"])[0],
            members_rerun_after_crash=sum(counts.started(members)) - 10,
        )


async def test_chain_under_a_sigkilled_worker_runs_each_step_to_completion_once(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    first = workers.start("-c", "5", **FAST)
    async with producer(redis_url, prefix) as app:
        mark = app.tasks["faults.mark"]
        # Each step is immutable (mark's first parameter is a key, not a value).
        last = await chain(
            mark.s("step1", 3.0), mark.si("step2", 0.0), mark.si("step3", 0.0)
        ).enqueue()
        await wait_until(lambda: counts.started(["step1"]) == [1], 30)
        second = workers.start("-c", "5", **FAST)
        await wait_until(lambda: counts.workers_alive() == 2, 30)
        first.signal(signal.SIGKILL)
        assert await last.get(timeout=60) == 1
        assert counts.started(["step1", "step2", "step3"]) == [2, 1, 1]
        assert counts.done(["step1", "step2", "step3"]) == [1, 1, 1]
        assert second.alive
