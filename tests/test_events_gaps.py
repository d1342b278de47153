"""Events of changes that used to write none: a def task parked while it waits
for a worker thread, a debounced enqueue, and a task deferred by its rate or
concurrency limit. Exact sequences, against a real Redis and a real worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

import aqueue
from aqueue import Event

from .conftest import running_worker, wait_until


@pytest.fixture
async def events_app(redis_url: str, prefix: str) -> AsyncIterator[aqueue.App]:
    app = aqueue.App(redis_url, prefix=prefix, events=True)
    try:
        yield app
    finally:
        await app.close()


async def events_of(app: aqueue.App, task_id: str) -> list[Event]:
    return [ev async for ev in app.events(since="0", follow=False) if ev.task_id == task_id]


def states(events: list[Event]) -> list[tuple[str, int]]:
    return [(ev.state, ev.attempt) for ev in events]


async def test_a_def_task_parked_for_a_thread_is_queued_then_started_again(
    events_app: aqueue.App,
) -> None:
    app = events_app
    free = threading.Event()

    @app.task(name="gaps.blocking")
    def blocking(n: int) -> int:
        free.wait(10)
        return n

    async with running_worker(app, concurrency=2, threads=1) as worker:
        first = await blocking.enqueue(1)
        await wait_until(lambda: blocking_started(app, first.id))
        second = await blocking.enqueue(2)
        # Its run has begun on the worker, but the one thread is taken: parked.
        await wait_until(lambda: parked(app, second.id))
        free.set()
        assert await second.get(timeout=10) == 2
        assert await first.get(timeout=10) == 1
        name = worker.name
    events = await events_of(app, second.id)
    assert states(events) == [
        ("queued", 0),
        ("started", 1),
        ("queued", 1),  # parked: waits for a thread
        ("started", 1),  # a thread begins it
        ("succeeded", 1),
    ]
    assert [ev.worker for ev in events] == ["", name, name, name, name]
    assert states(await events_of(app, first.id)) == [
        ("queued", 0),
        ("started", 1),
        ("succeeded", 1),
    ]


async def blocking_started(app: aqueue.App, task_id: str) -> bool:
    return [ev.state for ev in await events_of(app, task_id)][-1:] == ["started"]


async def parked(app: aqueue.App, task_id: str) -> bool:
    return [ev.state for ev in await events_of(app, task_id)][-2:] == ["started", "queued"]


async def test_a_debounced_enqueue_is_scheduled_again(events_app: aqueue.App) -> None:
    app = events_app
    runs: list[str] = []

    @app.task(name="gaps.settle", unique_mode="debounce", unique_for=0.4)
    async def settle(value: str) -> None:
        runs.append(value)

    first = await settle.enqueue("a")
    again = await settle.enqueue("b")  # within the window: the same task, later
    assert again.id == first.id
    async with running_worker(app):
        await wait_until(lambda: runs == ["b"])
        await wait_until(lambda: finished(app, first.id))
    events = await events_of(app, first.id)
    assert states(events) == [
        ("scheduled", 0),  # the first enqueue: waits for its window
        ("scheduled", 0),  # debounced: the window starts again
        ("queued", 0),
        ("started", 1),
        ("succeeded", 1),
    ]
    assert {ev.name for ev in events} == {"gaps.settle"}
    assert events[0].at <= events[1].at <= events[2].at


async def finished(app: aqueue.App, task_id: str) -> bool:
    return [ev.state for ev in await events_of(app, task_id)][-1:] == ["succeeded"]


async def test_a_task_over_its_rate_is_scheduled_until_its_start_time(
    events_app: aqueue.App,
) -> None:
    app = events_app

    @app.task(name="gaps.rated", rate_limit="4/s")
    async def rated(n: int) -> int:
        return n

    handles = [await rated.enqueue(n) for n in range(2)]  # enqueued before any worker
    async with running_worker(app, concurrency=4):
        assert [await h.get(timeout=10) for h in handles] == [0, 1]
        await wait_until(lambda: finished(app, handles[1].id))
    assert states(await events_of(app, handles[0].id)) == [
        ("queued", 0),
        ("started", 1),
        ("succeeded", 1),
    ]
    events = await events_of(app, handles[1].id)
    assert states(events) == [
        ("queued", 0),
        ("scheduled", 0),  # over the rate: waits for the start time reserved for it
        ("queued", 0),
        ("started", 1),
        ("succeeded", 1),
    ]
    assert events[2].at.timestamp() - events[1].at.timestamp() >= 0.2


async def test_a_task_over_its_concurrency_waits_queued_for_a_token(
    events_app: aqueue.App,
) -> None:
    app = events_app
    free = asyncio.Event()

    @app.task(name="gaps.single", concurrency=1)
    async def single(n: int) -> int:
        await free.wait()
        return n

    handles = [await single.enqueue(n) for n in range(2)]
    async with running_worker(app, concurrency=4):
        # The second left the stream to wait for the first's token.
        await wait_until(lambda: deferred(app, handles[1].id))
        free.set()
        assert [await h.get(timeout=10) for h in handles] == [0, 1]
        await wait_until(lambda: finished(app, handles[1].id))
    assert states(await events_of(app, handles[0].id)) == [
        ("queued", 0),
        ("started", 1),
        ("succeeded", 1),
    ]
    assert states(await events_of(app, handles[1].id)) == [
        ("queued", 0),
        ("queued", 0),  # deferred: still queued, waiting for a token
        ("started", 1),
        ("succeeded", 1),
    ]


async def deferred(app: aqueue.App, task_id: str) -> bool:
    return [ev.state for ev in await events_of(app, task_id)] == ["queued", "queued"]


async def test_garbage_in_the_stream_is_started_then_dead_and_names_no_other_task(
    events_app: aqueue.App, redis_url: str
) -> None:
    """A message that is not an envelope, with or without a task id, is
    dead-lettered by the worker: its events say so, under the id the worker
    gives it, and name no task (not the task whose message came before it)."""
    import redis.asyncio as aioredis

    app = events_app

    @app.task(name="gaps.named")
    async def named() -> str:
        return "ok"

    stream = f"{app.settings.prefix}:{{default}}:stream"
    raw = aioredis.Redis.from_url(redis_url)
    try:
        async with running_worker(app, concurrency=1):
            assert await (await named.enqueue()).get(timeout=10) == "ok"
            await raw.xadd(stream, {"id": "garbage-1", "m": b"\xc1\xff not msgpack"})
            await raw.xadd(stream, {"m": b"\xc1 no id either"})
            await wait_until(lambda: dead_letters(app, 2))
    finally:
        await raw.aclose()
    events = [ev async for ev in app.events(since="0", follow=False)]
    garbage = [
        (ev.task_id, ev.name, ev.state)
        for ev in events
        if ev.name != "gaps.named" and not ev.state.startswith("worker_")
    ]
    # A message without a task id goes by its stream entry's id, as in the
    # worker's log line and the dead-letter stream.
    no_id = garbage[2][0]
    assert no_id and no_id != "garbage-1"
    assert garbage == [
        ("garbage-1", "", "started"),
        ("garbage-1", "", "dead"),
        (no_id, "", "started"),
        (no_id, "", "dead"),
    ]
    dead = [ev for ev in events if ev.state == "dead"]
    assert all(ev.error_type for ev in dead), dead


async def dead_letters(app: aqueue.App, n: int) -> bool:
    return len(await app.dead_letters()) >= n
