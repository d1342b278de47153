"""Checked by ``mypy --strict`` (see tests/test_typing.py); never imported."""

from __future__ import annotations

from typing import assert_type

import aqueue
from aqueue import AsyncResult, TaskStatus

app = aqueue.App("redis://localhost:6379/0")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task(name="reports.build", queue="reports", timeout=30.0)
def resize(path: str) -> str:
    return path


@app.task(unique_mode="debounce", unique_for=2.0)
async def reindex(doc_id: int) -> None:
    return None


@app.task(executor="process", timeout=30.0)
def crunch(n: int) -> float:
    return n / 2


async def flow_control() -> None:
    d = await reindex.options(unique_key="doc:1").enqueue(1)
    assert_type(d, AsyncResult[None])
    c = await crunch.enqueue(3)
    assert_type(c, AsyncResult[float])
    await app.schedules.add("nightly", crunch, cron="0 3 * * *", args=(1,))
    for info in await app.schedules.list():
        assert_type(info.next_run, float | None)


async def use() -> None:
    r = await add.enqueue(1, 2)
    assert_type(r, AsyncResult[int])
    assert_type(await r, int)
    assert_type(await r.get(timeout=5.0), int)
    assert_type(await r.status(), TaskStatus)
    assert_type(r.id, str)
    s = await resize.enqueue("a.png")
    assert_type(s, AsyncResult[str])
    b = await add.options(task_id="invoice-42", queue="high").enqueue(1, 2)
    assert_type(b, AsyncResult[int])
    many = await add.enqueue_many([(1, 2), (3, 4)])
    assert_type(many, list[AsyncResult[int]])
    calls = await add.enqueue_many([add.call(1, 2), add.call(x=3, y=4)])
    assert_type(calls, list[AsyncResult[int]])
    await add.enqueue("a", 2)  # type: ignore[arg-type]
    await add.enqueue(1)  # type: ignore[call-arg]
    await add.enqueue(1, 2, z=3)  # type: ignore[call-arg]
    async with app:
        pass
