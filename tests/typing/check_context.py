"""Checked by ``mypy --strict`` (see tests/test_typing_context.py); never imported.

A first parameter annotated ``aqueue.Context`` is filled in by the worker, so it
is not part of what ``enqueue`` takes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, assert_type

import aqueue
from aqueue import AsyncResult, Context, Task

app = aqueue.App("redis://localhost:6379/0")


@app.task
async def crawl(ctx: Context, url: str, depth: int = 1) -> list[str]:
    assert_type(ctx.id, str)
    assert_type(ctx.attempt, int)
    assert_type(ctx.deadline, float | None)
    await ctx.progress(0.5, "half way")
    return [url] * depth


@app.task(queue="reports", timeout=60.0)
async def report(ctx: Context, week: int) -> str:
    return f"{ctx.task}:{week}"


@app.task
def resize(ctx: Context, path: str) -> bytes:
    return path.encode()


@app.task
async def no_context(x: int) -> int:
    return x


@app.periodic(every=timedelta(minutes=5))
async def sweep(ctx: Context) -> int:
    return ctx.attempt


@app.periodic(cron="0 3 * * MON", tz="Asia/Seoul", args=(3,))
def weekly(days: int) -> None:
    pass


async def use() -> None:
    assert isinstance(crawl, Task)
    r = await crawl.enqueue("https://example.com")
    assert_type(r, AsyncResult[list[str]])
    assert_type(await r, list[str])
    await crawl.enqueue("https://example.com", depth=2)
    await crawl.options(delay=timedelta(seconds=5), unique_key="crawl").enqueue("u", 3)
    assert_type(await report.enqueue(47), AsyncResult[str])
    assert_type(await resize.enqueue("a.png"), AsyncResult[bytes])
    assert_type(await no_context.enqueue(1), AsyncResult[int])
    assert_type(await sweep.enqueue(), AsyncResult[int])
    assert_type(await weekly.enqueue(7), AsyncResult[None])
    assert_type(await r.progress(), tuple[Any, str] | None)
    assert_type(await r.abort(), bool)

    await crawl.enqueue(Context)  # type: ignore[arg-type]
    await crawl.enqueue()  # type: ignore[call-arg]
    await report.enqueue("47")  # type: ignore[arg-type]
    await sweep.enqueue(1)  # type: ignore[call-arg]
