"""A result too large to store fails its task, and never holds back the others
(issue 11, attack item 5). Real worker processes, exact counts."""

from __future__ import annotations

import asyncio

import pytest

import aqueue

from ..conftest import redis_server
from .conftest import Counts, Workers, producer, report

MIB = 1024 * 1024


def _with_big_value(app: aqueue.App) -> aqueue.App:
    @app.task(name="faults.big_value")
    async def big_value(key: str, size: int) -> str:
        raise NotImplementedError

    return app


async def test_a_result_over_max_result_bytes_fails_the_task(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    worker = workers.start("-c", "4", AQUEUE_MAX_RESULT_BYTES=str(MIB))
    async with _with_big_value(producer(redis_url, prefix)) as app:
        huge = await app.tasks["faults.big_value"].enqueue("huge", 2 * MIB)
        small = [await app.tasks["faults.mark"].enqueue(f"s{i}") for i in range(10)]
        with pytest.raises(aqueue.TaskFailed) as failed:
            await asyncio.wait_for(huge.get(), 30)
        assert failed.value.exc_type == "aqueue.errors.ResultTooLarge"
        assert "max_result_bytes=1,048,576" in str(failed.value)
        assert [await asyncio.wait_for(h.get(), 30) for h in small] == [1] * 10
        assert counts.started(["huge"]) == [1]
        assert worker.alive
        report("result over max_result_bytes", tasks=11, failed=1, succeeded=10, worker_exits=0)


async def test_an_outcome_redis_refuses_never_blocks_the_others(
    prefix: str, workers: Workers
) -> None:
    """Redis takes no argument over 1 MB here: the huge outcome can't be
    recorded as it is, so it is recorded as a failure saying so, and the ten
    small outcomes of the same worker are recorded all the same."""
    with redis_server("--proto-max-bulk-len", "1mb") as srv:
        counts = Counts(srv.url, prefix)
        try:
            worker = workers.start("-c", "11", url=srv.url, AQUEUE_MAX_RESULT_BYTES=str(8 * MIB))
            async with _with_big_value(producer(srv.url, prefix)) as app:
                huge = await app.tasks["faults.big_value"].enqueue("huge", 3 * MIB)
                small = [await app.tasks["faults.mark"].enqueue(f"s{i}") for i in range(10)]
                assert [await asyncio.wait_for(h.get(), 30) for h in small] == [1] * 10
                with pytest.raises(aqueue.TaskFailed) as failed:
                    await asyncio.wait_for(huge.get(), 30)
                assert failed.value.exc_type == "aqueue.errors.OutcomeNotRecorded"
                assert "could not be recorded" in str(failed.value)
                assert counts.started(["huge"]) == [1]
                assert worker.alive
                report("outcome Redis refuses", tasks=11, failed=1, succeeded=10, worker_exits=0)
        finally:
            counts.close()
