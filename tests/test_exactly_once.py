"""Exactly-once enqueue and idempotent outcomes: a call resent after its reply was lost
changes nothing, and a live task id is never enqueued twice."""

from __future__ import annotations

import asyncio

import aqueue
from aqueue.core.protocol import FinishItem, encode_value
from aqueue.core.status import TaskStatus
from aqueue.task import EnqueueOptions

from .conftest import running_worker


async def _stream_length(app: aqueue.App, queue: str) -> int:
    return int(await app.broker.client.xlen(app.broker.keys(queue).stream))


async def test_resent_enqueue_adds_nothing(app: aqueue.App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    for chosen_id in (None, "order-7"):
        queue, message = add.build_message((1, 2), {}, EnqueueOptions(task_id=chosen_id))
        before = await _stream_length(app, queue)
        # The same script call twice, as when the first reply was lost with its
        # connection and the call was sent again.
        first = await app.broker.enqueue_many(queue, [message])
        again = await app.broker.enqueue_many(queue, [message])
        assert first == again == [message.task_id]
        assert await _stream_length(app, queue) == before + 1


async def test_resent_enqueue_of_a_finished_chosen_id_does_not_run_it_again(
    app: aqueue.App,
) -> None:
    runs: list[int] = []

    @app.task
    async def count(x: int) -> int:
        runs.append(x)
        return x

    queue, message = count.build_message((5,), {}, EnqueueOptions(task_id="job-5"))
    await app.broker.enqueue_many(queue, [message])
    async with running_worker(app, concurrency=2):
        assert await app.result("job-5").get(timeout=10) == 5
        before = await _stream_length(app, queue)
        await app.broker.enqueue_many(queue, [message])  # the lost-reply resend, late
        assert await _stream_length(app, queue) == before  # nothing to run
        assert await app.result("job-5").status() is TaskStatus.SUCCEEDED
    assert runs == [5]
    # A new call with the same id after the task finished runs it again, as documented.
    async with running_worker(app, concurrency=2):
        await count.options(task_id="job-5").enqueue(6)
        await asyncio.wait_for(_until(lambda: runs == [5, 6]), 10)


async def _until(predicate: object) -> None:
    while not predicate():  # type: ignore[operator]
        await asyncio.sleep(0.02)


async def test_a_live_task_id_is_not_enqueued_again(app: aqueue.App) -> None:
    runs: list[int] = []

    @app.task
    async def count(x: int) -> int:
        runs.append(x)
        return x

    handles = [await count.options(task_id="only-once").enqueue(i) for i in range(10)]
    assert {h.id for h in handles} == {"only-once"}
    handles += await asyncio.gather(
        *(count.options(task_id="only-once").enqueue(i) for i in range(10, 20))
    )
    assert await _stream_length(app, count.config.queue) == 1
    async with running_worker(app, concurrency=4):
        values = await asyncio.gather(*(h.get(timeout=10) for h in handles))
    assert runs == [0]
    assert values == [0] * 20
    assert await handles[0].status() is TaskStatus.SUCCEEDED


async def test_resent_finish_is_not_taken_for_a_lost_lease(app: aqueue.App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    handle = await add.enqueue(1, 2)
    queue = add.config.queue
    await app.broker.ensure_group(queue)
    [delivery] = await app.broker.fetch(queue, "worker-a", 10)
    item = FinishItem(delivery.entry_id, handle.id, TaskStatus.SUCCEEDED, encode_value(3))
    assert await app.broker.finish(queue, "worker-a", [item]) == []
    # Sent again after a lost reply: recorded already, not fenced off.
    assert await app.broker.finish(queue, "worker-a", [item]) == []
    assert await handle.get(timeout=5) == 3
    # Another worker's outcome for that entry is still fenced off.
    assert await app.broker.finish(queue, "worker-b", [item]) == [delivery.entry_id]
