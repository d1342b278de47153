"""The event stream: exact event sequences, written by the scripts that change state."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aqueue
from aqueue import Event, TaskStatus

from .conftest import ROOT, running_worker, worker_env


@pytest.fixture
async def events_app(redis_url: str, prefix: str) -> AsyncIterator[aqueue.App]:
    app = aqueue.App(redis_url, prefix=prefix, events=True)
    try:
        yield app
    finally:
        await app.close()


async def task_events(app: aqueue.App, task_id: str) -> list[tuple[str, int]]:
    """(state, attempt) of each event of one task, oldest first."""
    return [
        (ev.state, ev.attempt)
        async for ev in app.events(since="0", follow=False)
        if ev.task_id == task_id
    ]


async def all_events(app: aqueue.App) -> list[Event]:
    return [ev async for ev in app.events(since="0", follow=False)]


async def test_success(events_app: aqueue.App) -> None:
    app = events_app

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with running_worker(app) as worker:
        handle = await add.enqueue(1, 2)
        assert await handle.get(timeout=10) == 3
        name = worker.name
    events = [ev for ev in await all_events(app) if ev.task_id == handle.id]
    assert [(e.state, e.attempt) for e in events] == [
        ("queued", 0),
        ("started", 1),
        ("succeeded", 1),
    ]
    queued, started, done = events
    assert {e.name for e in events} == {add.name}
    assert {e.queue for e in events} == {"default"}
    assert queued.worker == "" and started.worker == name and done.worker == name
    assert done.duration is not None and done.duration >= 0
    assert started.duration is None and done.error_type is None
    assert queued.at <= started.at <= done.at
    # The worker's own events frame its tasks'.
    workers = [(e.state, e.worker) for e in await all_events(app) if not e.task_id]
    assert workers == [("worker_online", name), ("worker_offline", name)]


async def test_retry_then_success(events_app: aqueue.App) -> None:
    app = events_app

    @app.task(retries=2, retry_delay=0.05, retry_jitter=False)
    async def flaky(ctx: aqueue.Context) -> int:
        if ctx.attempt < 2:
            raise ConnectionError("try again")
        return ctx.attempt

    async with running_worker(app):
        handle = await flaky.enqueue()
        assert await handle.get(timeout=10) == 2
    events = [ev for ev in await all_events(app) if ev.task_id == handle.id]
    assert [(e.state, e.attempt) for e in events] == [
        ("queued", 0),
        ("started", 1),
        ("retrying", 1),
        ("queued", 1),
        ("started", 2),
        ("succeeded", 2),
    ]
    retrying = events[2]
    assert retrying.error_type == "ConnectionError"
    assert retrying.error_message == "try again"
    assert retrying.duration is not None


async def test_timeout(events_app: aqueue.App) -> None:
    app = events_app

    @app.task(timeout=0.2)
    async def stuck() -> None:
        await asyncio.sleep(30)

    async with running_worker(app):
        handle = await stuck.enqueue()
        with pytest.raises(aqueue.TaskFailed):
            await handle.get(timeout=10)
    events = [ev for ev in await all_events(app) if ev.task_id == handle.id]
    assert [(e.state, e.attempt) for e in events] == [
        ("queued", 0),
        ("started", 1),
        ("failed", 1),
    ]
    assert events[-1].error_type == "TimeoutError"
    assert events[-1].duration is not None and events[-1].duration >= 0.2


async def test_abort_waiting_and_running(events_app: aqueue.App) -> None:
    app = events_app
    started = asyncio.Event()

    @app.task
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    waiting = await slow.options(delay=3600).enqueue()
    assert await waiting.abort() is True
    async with running_worker(app):
        running = await slow.enqueue()
        await asyncio.wait_for(started.wait(), 10)
        assert await running.abort() is True
        with pytest.raises(aqueue.TaskAborted):
            await running.get(timeout=10)
    assert await task_events(app, waiting.id) == [("scheduled", 0), ("aborted", 0)]
    assert await task_events(app, running.id) == [("queued", 0), ("started", 1), ("aborted", 1)]


async def test_dead_letter(redis_url: str, prefix: str) -> None:
    app = aqueue.App(redis_url, prefix=prefix, events=True, dead_letter_on_failure=True)

    @app.task(retries=1, retry_delay=0.05, retry_jitter=False)
    async def doomed() -> None:
        raise RuntimeError("nope")

    try:
        async with running_worker(app):
            handle = await doomed.enqueue()
            with pytest.raises(aqueue.TaskDead):
                await handle.get(timeout=10)
        events = [ev for ev in await all_events(app) if ev.task_id == handle.id]
        assert [(e.state, e.attempt) for e in events] == [
            ("queued", 0),
            ("started", 1),
            ("retrying", 1),
            ("queued", 1),
            ("started", 2),
            ("dead", 2),
        ]
        assert events[-1].error_type == "RuntimeError" and events[-1].error_message == "nope"
        assert await handle.status() is TaskStatus.DEAD
    finally:
        await app.close()


async def test_progress_events(events_app: aqueue.App) -> None:
    app = events_app

    @app.task
    async def report(ctx: aqueue.Context) -> None:
        await ctx.progress(0.5, "half")

    async with running_worker(app):
        handle = await report.enqueue()
        await handle.get(timeout=10)
    assert await task_events(app, handle.id) == [
        ("queued", 0),
        ("started", 1),
        ("progress", 1),
        ("succeeded", 1),
    ]


async def test_off_by_default_writes_no_event(app: aqueue.App, prefix: str) -> None:
    @app.task
    async def noop() -> None: ...

    async with running_worker(app):
        await (await noop.enqueue()).get(timeout=10)
    assert not await app.broker.client.exists(f"{prefix}:events")
    assert await all_events(app) == []


async def test_follow_sees_new_events_only_and_filters_queues(events_app: aqueue.App) -> None:
    app = events_app

    @app.task
    async def a() -> None: ...

    @app.task(queue="other")
    async def b() -> None: ...

    old = await a.enqueue()
    seen: list[Event] = []

    async def follow() -> None:
        async for ev in app.events(queues=["other"]):
            seen.append(ev)
            if ev.state == "succeeded":
                return

    reader = asyncio.create_task(follow())
    await asyncio.sleep(0.3)  # the reader has taken its position
    async with running_worker(app, queues=["default", "other"]):
        new = await b.enqueue()
        await asyncio.wait_for(reader, 10)
    assert [(e.task_id, e.state) for e in seen if e.task_id] == [
        (new.id, "queued"),
        (new.id, "started"),
        (new.id, "succeeded"),
    ]
    # Resuming after an event's id reads on from there.
    after = [ev async for ev in app.events(since=seen[0].id, follow=False) if ev.task_id]
    assert (old.id, "queued") not in {(e.task_id, e.state) for e in after}
    assert [e.state for e in after if e.task_id == new.id] == ["started", "succeeded"]


async def test_bad_since_is_a_clear_error(events_app: aqueue.App) -> None:
    with pytest.raises(aqueue.ConfigError, match="not an event id"):
        [ev async for ev in events_app.events(since="yesterday")]


def test_cli_prints_events_as_json_lines_and_text(redis_url: str, prefix: str) -> None:
    async def produce() -> str:
        app = aqueue.App(redis_url, prefix=prefix, events=True)
        try:

            @app.task(name="basic.add")
            async def add(a: int, b: int) -> int:
                return a + b

            async with running_worker(app):
                handle = await add.enqueue(2, 3)
                await handle.get(timeout=10)
            return handle.id
        finally:
            await app.close()

    task_id = asyncio.run(produce())
    env = worker_env(redis_url, prefix)
    run: Any = subprocess.run(
        [
            sys.executable,
            "-m",
            "aqueue",
            "events",
            "--url",
            redis_url,
            "--prefix",
            prefix,
            "--json",
        ],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    mine = [(r["state"], r["attempt"]) for r in rows if r["task_id"] == task_id]
    assert mine == [("queued", 0), ("started", 1), ("succeeded", 1)]
    assert all(r["name"] == "basic.add" for r in rows if r["task_id"] == task_id)
    text = subprocess.run(
        [sys.executable, "-m", "aqueue", "events", "--url", redis_url, "--prefix", prefix],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if task_id in line]
    assert len(lines) == 3 and "succeeded" in lines[-1] and "basic.add" in lines[-1]


async def test_hand_back_at_shutdown(events_app: aqueue.App) -> None:
    app = events_app
    started = asyncio.Event()

    @app.task
    async def slow(ctx: aqueue.Context) -> int:
        if ctx.attempt == 1:
            started.set()
            await asyncio.sleep(30)
        return ctx.attempt

    handle = await slow.enqueue()
    first = aqueue.Worker(app, grace_period=0.2)
    run = asyncio.create_task(first.run())
    await asyncio.wait_for(started.wait(), 10)
    first.stop()  # the run is cancelled after the grace period and handed back
    await asyncio.wait_for(run, 30)
    # The next worker is another process in real life: an App of its own.
    other = aqueue.App(app.settings.redis_url, prefix=app.settings.prefix, events=True)
    other.tasks.update(app.tasks)
    try:
        async with running_worker(other):
            assert await handle.get(timeout=10) == 2
    finally:
        await other.close()
    events = [(e.state, e.attempt, e.worker) for e in await all_events(app) if e.task_id]
    assert events[:3] == [("queued", 0, ""), ("started", 1, first.name), ("queued", 1, first.name)]
    # The second run: started and succeeded by one worker. Usually the new one;
    # sometimes the stopping worker itself takes the message back with a read it
    # still had under way, and runs it (once) before it returns.
    (started, attempt, by), done = events[3], events[4]
    assert (started, attempt) == ("started", 2) and done == ("succeeded", 2, by)
    assert len(events) == 5


async def test_events_of_one_call_share_an_entry_and_since_reads_within_it(
    events_app: aqueue.App,
) -> None:
    @events_app.task
    async def noop(i: int) -> None: ...

    handles = await noop.enqueue_many([(i,) for i in range(3)])
    events = await all_events(events_app)
    assert [(e.task_id, e.state) for e in events] == [(h.id, "queued") for h in handles]
    entry = events[0].id.rpartition("-")[0]
    assert [e.id for e in events] == [f"{entry}-{i}" for i in range(3)]
    after = [e.task_id async for e in events_app.events(since=events[0].id, follow=False)]
    assert after == [handles[1].id, handles[2].id]


async def test_expired(events_app: aqueue.App) -> None:
    app = events_app

    @app.task
    async def stale() -> None: ...

    handle = await stale.options(expires=0.05).enqueue()
    await asyncio.sleep(0.2)  # past its expiry before any worker reads it
    async with running_worker(app):
        with pytest.raises(aqueue.TaskExpired):
            await handle.get(timeout=10)
    events = [ev for ev in await all_events(app) if ev.task_id == handle.id]
    # The record says running for a moment (the read marks it) before the expiry.
    assert [(e.state, e.attempt) for e in events] == [
        ("queued", 0),
        ("started", 1),
        ("expired", 1),
    ]
    assert events[-1].error_type == "TaskExpired"


async def test_a_big_batch_is_split_into_entries_of_at_most_100_events(
    events_app: aqueue.App,
) -> None:
    @events_app.task
    async def noop(i: int) -> None: ...

    handles = await noop.enqueue_many([(i,) for i in range(250)])
    events = await all_events(events_app)
    assert [e.task_id for e in events] == [h.id for h in handles]
    entries = [e.id.rpartition("-")[0] for e in events]
    sizes = [entries.count(entry) for entry in dict.fromkeys(entries)]
    assert sizes == [100, 100, 50]


def test_entries_of_both_layouts_are_read() -> None:
    # A stream may hold entries of older workers (layout 1: ten values per
    # event) beside today's (layout 2: what the events share, written once).
    import msgspec

    from aqueue.core.events import decode_events

    old = msgspec.msgpack.encode(
        ["q", "t1", "add", "failed", 2, "w1", 1_700_000_000_000, 250, "ValueError", "bad\nx"]
    )
    head = [2, "q", "w1", 1_700_000_000_000]
    failed_values = ["t1", "add", "failed", 2, 250, "ValueError\nbad\nx"]
    started_values = ["t2", "add", "started", 1, -1, ""]
    new = msgspec.msgpack.encode([*head, *failed_values, *started_values])
    first = decode_events("1-0", old)[0]
    failed, started = decode_events("1-0", new)
    assert failed == first
    assert (failed.error_type, failed.error_message, failed.duration) == (
        "ValueError",
        "bad\nx",
        0.25,
    )
    assert (started.task_id, started.state, started.worker, started.queue) == (
        "t2",
        "started",
        "w1",
        "q",
    )
    assert started.id == "1-0-1" and started.at == first.at
    assert (started.error_type, started.error_message, started.duration) == (None, None, None)
    # A layout this version does not know gives no event rather than wrong ones.
    assert (
        decode_events(
            "1-0", msgspec.msgpack.encode([3, "q", "w1", 0, "t", "n", "queued", 0, -1, ""])
        )
        == []
    )


def test_layout_3_entries_are_read_like_layout_2() -> None:
    # Layout 3 (today's scripts) is text: the head and six values per event
    # joined by byte 0xFF (never in UTF-8); an entry of the wrong length gives none.
    import msgspec

    from aqueue.core.events import decode_events

    head = [2, "q", "w1", 1_700_000_000_000]
    failed_values = ["t1", "add", "failed", 2, 250, "ValueError\nbad\nx"]
    started_values = ["t2", "add", "started", 1, -1, ""]
    older = decode_events("1-0", msgspec.msgpack.encode([*head, *failed_values, *started_values]))
    values = ["3", "q", "w1", "1700000000000", *map(str, failed_values + started_values)]
    text = b"\xff".join(value.encode() for value in values)
    assert decode_events("1-0", text) == older
    plain = ["3", "q", "", "5", "\u00e91", "n", "queued", "0", "-1", ""]
    events = decode_events("7-0", b"\xff".join(value.encode() for value in plain))
    assert [(e.task_id, e.name, e.state, e.error_type, e.duration) for e in events] == [
        ("\u00e91", "n", "queued", None, None)
    ]
    assert decode_events("7-0", b"\xff".join(value.encode() for value in plain[:-1])) == []
    # Lua writes a number that is not whole with %.14g.
    timed = [*plain[:7], "1", "2.5e-01", ""]
    assert [e.duration for e in decode_events("7-0", b"\xff".join(v.encode() for v in timed))] == [
        0.00025
    ]
