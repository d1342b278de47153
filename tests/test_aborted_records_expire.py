"""A task aborted while queued leaves no record without a TTL once its entry is dropped."""

from __future__ import annotations

import aqueue

from .conftest import running_worker, wait_until


async def test_records_of_tasks_aborted_while_queued_expire(app: aqueue.App) -> None:
    @app.task
    async def never(x: int) -> int:
        raise AssertionError("an aborted task must not run")

    handles = [await never.enqueue(i) for i in range(20)]
    for handle in handles:
        assert await handle.abort()
    records = [app.broker.keys("default").task_prefix + h.id for h in handles]

    async def all_expire() -> bool:
        return all([await app.broker.client.pttl(r) > 0 for r in records])

    assert not await all_expire()  # kept while the entries wait in the stream
    async with running_worker(app, concurrency=4):
        # The worker reads each entry, finds it aborted and drops it unrun.
        await wait_until(all_expire, 20)
    assert {await h.status() for h in handles} == {aqueue.TaskStatus.ABORTED}
