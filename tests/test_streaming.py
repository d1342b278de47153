"""Streaming tasks: an ``async def`` or a ``def`` that yields streams its chunks to readers."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

import aqueue
from aqueue import TaskAborted, TaskFailed

from .conftest import running_worker, wait_until


async def test_ten_thousand_chunks_with_a_reader_that_stops_and_resumes(
    app: aqueue.App,
) -> None:
    @app.task(queue="stream")
    async def numbers(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    n = 10_000
    async with running_worker(app, queues=["stream"]):
        r = await numbers.enqueue(n)
        seen: list[int] = []
        first = r.stream()
        async for chunk in first:  # the reader disconnects part way...
            seen.append(chunk)
            if len(seen) == 4_000:
                break
        assert first.position is not None
        async for chunk in r.stream(after=first.position):  # ...and resumes
            seen.append(chunk)
        assert seen == list(range(n))  # nothing lost, nothing twice
        assert await r.get(timeout=30) == list(range(n))
        late = [chunk async for chunk in r.stream()]  # a late reader sees the start
        assert late == list(range(n))
        assert [chunk async for chunk in r.stream(from_start=False)] == []  # ended: nothing new


async def test_a_stream_that_fails_keeps_its_chunks_and_raises(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()

    @app.task(queue="stream")
    async def words(text: str) -> AsyncIterator[str]:
        runs["words"] += 1
        for word in text.split():
            if word == "boom":
                raise ValueError("boom")
            yield word

    async with running_worker(app, queues=["stream"]):
        r = await words.enqueue("one two boom three")
        assert [w async for w in r.stream()] == ["one", "two"]
        with pytest.raises(TaskFailed, match="boom"):
            await r.get(timeout=10)
    assert runs["words"] == 1


async def test_a_def_generator_streams_from_its_thread(app: aqueue.App) -> None:
    """A plain ``def`` that yields runs in a worker thread and streams like an async one."""
    threads: set[str] = set()

    @app.task(queue="stream")
    def lines(n: int) -> Iterator[str]:
        for i in range(n):
            threads.add(threading.current_thread().name)
            yield f"line {i}"

    n = 2_000
    async with running_worker(app, queues=["stream"]):
        r = await lines.enqueue(n)
        reader = r.stream()
        seen = []
        async for chunk in reader:
            seen.append(chunk)
            if len(seen) == 500:
                break
        assert reader.position is not None
        seen += [chunk async for chunk in r.stream(after=reader.position)]
        assert seen == [f"line {i}" for i in range(n)]  # in order, none lost or twice
        assert await r.get(timeout=30) == seen
    assert threads and threading.main_thread().name not in threads


async def test_a_def_generator_that_fails_keeps_its_chunks(app: aqueue.App) -> None:
    @app.task(queue="stream")
    def countdown(n: int) -> Iterator[int]:
        yield from range(n, 0, -1)
        raise RuntimeError("liftoff failed")

    async with running_worker(app, queues=["stream"]):
        r = await countdown.enqueue(3)
        assert [c async for c in r.stream()] == [3, 2, 1]
        with pytest.raises(TaskFailed, match="liftoff failed") as failed:
            await r.get(timeout=10)
        assert failed.value.exc_type == "RuntimeError"


async def test_aborting_a_def_generator_closes_it_at_its_next_yield(app: aqueue.App) -> None:
    closed = threading.Event()
    produced: list[int] = []

    @app.task(queue="stream")
    def forever() -> Iterator[int]:
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
                time.sleep(0.01)
        finally:
            closed.set()

    async with running_worker(app, queues=["stream"]):
        r = await forever.enqueue()
        stream = r.stream()
        assert await anext(stream) == 0
        assert await r.abort()
        with pytest.raises(TaskAborted):
            await r.get(timeout=10)
        await wait_until(closed.is_set)
        count = len(produced)
        await asyncio.sleep(0.1)
        assert len(produced) == count  # the thread stopped making chunks


async def test_a_reader_from_now_on_gets_only_new_chunks(app: aqueue.App) -> None:
    go = asyncio.Event()

    @app.task(queue="stream")
    async def phases() -> AsyncIterator[str]:
        for word in ("old-1", "old-2"):
            yield word
        await go.wait()
        for word in ("new-1", "new-2"):
            yield word

    async with running_worker(app, queues=["stream"]):
        r = await phases.enqueue()
        everything = r.stream()
        assert [await anext(everything), await anext(everything)] == ["old-1", "old-2"]
        later = r.stream(from_start=False)
        first = asyncio.create_task(anext(later))
        await wait_until(lambda: later.position is not None)  # it knows where "now" is
        go.set()
        assert await first == "new-1"
        assert [chunk async for chunk in later] == ["new-2"]
        assert [chunk async for chunk in everything] == ["new-1", "new-2"]
