"""Workflows under crashes: a chord's callback runs exactly once, a chain goes on."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from aqueue import TaskFailed, TaskStatus, chain, chord, group

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


async def test_a_step_dead_lettered_by_the_reclaimer_fails_its_chain_and_chord(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    """A step that crashes its worker every time is dead-lettered by the reclaimer,
    never by a worker's outcome: the workflow must still end, with that reason."""
    env = {**FAST, "AQUEUE_DEAD_WORKER_AFTER": "1", "AQUEUE_MAX_DELIVERIES": "2"}
    async with producer(redis_url, prefix) as app:
        mark, collect = app.tasks["faults.mark"], app.tasks["faults.collect"]
        kill = app.tasks["faults.kill_own_worker"]
        # One slot and no read-ahead: the healthy member runs (and is recorded)
        # before any crash, so only the poisoned steps are dead-lettered.
        callback = await chord(
            group([mark.s("member", 0.0), kill.s("chord-boom")]), collect.s("callback")
        ).enqueue()
        last = await chain(kill.s("chain-boom"), mark.si("after", 0.0)).enqueue()
        deadline = time.monotonic() + 90
        while not (await last.status()).is_final or not (await callback.status()).is_final:
            assert time.monotonic() < deadline, "the workflows never ended"
            if not any(w.alive for w in workers.started):
                workers.start("-c", "1", "--prefetch", "0", **env)
            await asyncio.sleep(0.1)
        with pytest.raises(TaskFailed) as chain_failed:
            await last.get(timeout=5)
        assert chain_failed.value.exc_type == "DeadLetter"
        assert "dead-letter stream" in chain_failed.value.message
        with pytest.raises(TaskFailed) as chord_failed:
            await callback.get(timeout=5)
        assert "1 of 2 chord members failed" in chord_failed.value.message
        assert "#1" in chord_failed.value.message and "dead" in chord_failed.value.message
        assert counts.started(["after", "callback"]) == [0, 0]
        # The next crash may come before the healthy member's outcome was recorded:
        # then it runs again (at least once); it is counted by the chord once.
        assert counts.done(["member"])[0] >= 1
        assert counts.started(["chain-boom", "chord-boom"]) == [2, 2]


async def test_steps_that_never_run_end_their_workflows_on_a_worker_process(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    """Aborted while waiting its delay, refused as an unknown task, refused for
    bad arguments: each ends its chain or chord with the reason, and nothing
    after it runs."""
    workers.start("-c", "5")
    async with producer(redis_url, prefix) as app:
        mark, collect = app.tasks["faults.mark"], app.tasks["faults.collect"]

        @app.task(name="faults.ghost")  # the worker has no such task
        async def ghost(key: str) -> int:
            raise NotImplementedError

        delayed = await chain(
            mark.s("a1"), mark.si("a2").options(delay=60), mark.si("a3")
        ).enqueue()
        waiting = delayed.parent
        assert waiting is not None

        async def scheduled() -> bool:
            assert waiting is not None
            return await waiting.status() is TaskStatus.SCHEDULED

        await wait_until(scheduled, 30)
        assert await waiting.abort()
        with pytest.raises(TaskFailed, match="ended aborted"):
            await delayed.get(timeout=30)

        refused = await chord(group([mark.s("m1"), ghost.s("m2")]), collect.s("cb")).enqueue()
        with pytest.raises(TaskFailed, match="1 of 2 chord members failed") as failed:
            await refused.get(timeout=30)
        assert "no task named" in failed.value.message

        # mark's first parameter is a key (str): the int before it is refused.
        mismatched = await chain(mark.s("b1"), mark, mark.si("b3")).enqueue()
        with pytest.raises(TaskFailed, match="ended dead") as failed:
            await mismatched.get(timeout=30)
        assert failed.value.exc_type == "bad_arguments"

    assert counts.started(["a1", "m1", "b1"]) == [1, 1, 1]
    assert counts.started(["a2", "a3", "cb", "b3"]) == [0, 0, 0, 0]
