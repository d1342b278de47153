"""Checked by ``mypy --strict`` (see tests/test_typing.py); never imported.

A task that is an async generator is a streaming task: its value is the list of
its chunks, and ``r.stream()`` yields each chunk typed by the annotation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import assert_type

import aqueue
from aqueue import AsyncResult, Context
from aqueue.result import ChunkStream

app = aqueue.App("redis://localhost:6379/0")


@app.task
async def tokens(prompt: str) -> AsyncIterator[str]:
    yield prompt


@app.task(queue="rows")
async def rows(ctx: Context, n: int) -> AsyncIterator[int]:
    yield n


@app.task(queue="rows")
def lines(path: str) -> Iterator[str]:  # a ``def`` generator streams from its thread
    yield path


@app.task
def numbered(ctx: Context, n: int) -> Iterator[int]:
    yield n


@app.task
async def add(x: int, y: int) -> int:
    return x + y


async def use() -> None:
    r = await tokens.enqueue("hello")
    assert_type(r, AsyncResult[list[str]])
    assert_type(await r, list[str])
    assert_type(r.stream(), ChunkStream[str])
    async for token in r.stream(from_start=False):
        assert_type(token, str)
    s = await rows.enqueue(3)
    async for row in s.stream(after="1-5"):
        assert_type(row, int)
    t = await lines.enqueue("/tmp/x")
    assert_type(t, AsyncResult[list[str]])
    assert_type(await t, list[str])
    async for line in t.stream():
        assert_type(line, str)
    u = await numbered.enqueue(3)
    assert_type(u, AsyncResult[list[int]])
    await numbered.enqueue("3")  # type: ignore[arg-type]
    await tokens.enqueue(3)  # type: ignore[arg-type]
    plain = await add.enqueue(1, 2)
    plain.stream()  # type: ignore[misc]
