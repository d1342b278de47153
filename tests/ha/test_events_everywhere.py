"""The event stream on standalone Redis, behind Sentinel and on a Cluster (one
stream per queue there, under the queue's hash tag)."""

from __future__ import annotations

import aqueue

from ..conftest import running_worker


async def test_events_of_two_queues(any_url: str, prefix: str) -> None:
    app = aqueue.App(any_url, prefix=prefix, events=True)

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    @app.task(queue="reports", retries=1, retry_delay=0.05, retry_jitter=False)
    async def flaky(ctx: aqueue.Context) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("once")
        return ctx.attempt

    try:
        async with running_worker(app, concurrency=10) as worker:
            one = await double.enqueue(21)
            two = await flaky.enqueue()
            assert await one.get(timeout=30) == 42
            assert await two.get(timeout=30) == 2
        events = [ev async for ev in app.events(since="0", follow=False)]
        reports = [ev async for ev in app.events(queues=["reports"], since="0", follow=False)]
    finally:
        await app.close()

    def of(task_id: str) -> list[tuple[str, int]]:
        return [(e.state, e.attempt) for e in events if e.task_id == task_id]

    assert of(one.id) == [("queued", 0), ("started", 1), ("succeeded", 1)]
    assert of(two.id) == [
        ("queued", 0),
        ("started", 1),
        ("retrying", 1),
        ("queued", 1),
        ("started", 2),
        ("succeeded", 2),
    ]
    assert {e.queue for e in reports} == {"reports"}
    assert [e.state for e in reports if e.task_id == two.id][-1] == "succeeded"
    online = [e for e in events if e.state == "worker_online"]
    assert sorted(e.queue for e in online) == ["default", "reports"]
    assert {e.worker for e in online} == {worker.name}
