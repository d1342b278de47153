"""Streaming tasks: an ``async def`` that yields streams its chunks to readers."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator

import pytest

import aqueue
from aqueue import TaskFailed

from .conftest import running_worker


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
