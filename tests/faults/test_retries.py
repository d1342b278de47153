"""Retries, backoff, retry filters, explicit Retry, timeouts: exact attempt counts."""

from __future__ import annotations

import asyncio
import time

import pytest

import aqueue
from aqueue import TaskStatus

from ..conftest import running_worker, wait_until


async def test_retries_reach_the_right_attempt_count(app: aqueue.App) -> None:
    attempts: list[int] = []

    @app.task(retries=3, retry_delay=0.05, retry_backoff=True, retry_jitter=False)
    async def flaky(ctx: aqueue.Context) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError(f"attempt {ctx.attempt}")

    async with running_worker(app):
        handle = await flaky.enqueue()
        with pytest.raises(aqueue.TaskFailed) as caught:
            await asyncio.wait_for(handle.get(), 20)
    assert attempts == [1, 2, 3, 4]  # retries=3: the first run and three more
    assert caught.value.exc_type == "ConnectionError"
    assert "attempt 4" in caught.value.message
    assert await handle.status() is TaskStatus.FAILED


async def test_retry_on_filters_exceptions(app: aqueue.App) -> None:
    runs: list[str] = []

    @app.task(retries=5, retry_delay=0.05, retry_on=(ConnectionError,))
    async def picky(kind: str) -> None:
        runs.append(kind)
        raise (ConnectionError if kind == "retry" else KeyError)(kind)

    async with running_worker(app):
        no_retry = await picky.enqueue("fail")
        with pytest.raises(aqueue.TaskFailed) as caught:
            await asyncio.wait_for(no_retry.get(), 20)
        assert caught.value.exc_type == "KeyError"
        assert runs == ["fail"]  # a non-matching exception fails at once

        retried = await picky.enqueue("retry")
        with pytest.raises(aqueue.TaskFailed):
            await asyncio.wait_for(retried.get(), 20)
        assert runs.count("retry") == 6


async def test_explicit_retry_with_delay_shows_retrying(app: aqueue.App) -> None:
    attempts: list[int] = []

    @app.task(retries=2)
    async def later(ctx: aqueue.Context) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise aqueue.Retry(delay=1.5)
        return ctx.attempt

    async with running_worker(app):
        handle = await later.enqueue()
        await wait_until(lambda: attempts == [1], 10)
        await wait_until(
            lambda: _status_is(handle, TaskStatus.RETRYING), 5
        )  # waiting out its delay
        info = await handle.info()
        assert info.status is TaskStatus.RETRYING
        assert attempts == [1]
        assert await asyncio.wait_for(handle.get(), 20) == 2
    assert attempts == [1, 2]


async def _status_is(handle: aqueue.AsyncResult[object], status: TaskStatus) -> bool:
    return await handle.status() is status


async def test_retry_exhausted_with_explicit_retry(app: aqueue.App) -> None:
    runs: list[int] = []

    @app.task(retries=1)
    async def never(ctx: aqueue.Context) -> None:
        runs.append(ctx.attempt)
        raise aqueue.Retry(delay=0.05, message="still not ready")

    async with running_worker(app):
        handle = await never.enqueue()
        with pytest.raises(aqueue.TaskFailed) as caught:
            await asyncio.wait_for(handle.get(), 20)
    assert runs == [1, 2]
    assert "still not ready" in caught.value.message


async def test_exhausted_retries_dead_letter_when_asked(redis_url: str, prefix: str) -> None:
    app = aqueue.App(redis_url, prefix=prefix, dead_letter_on_failure=True)
    runs: list[int] = []

    @app.task(retries=2, retry_delay=0.05)
    async def doomed(ctx: aqueue.Context) -> None:
        runs.append(ctx.attempt)
        raise RuntimeError("nope")

    try:
        async with running_worker(app):
            handle = await doomed.enqueue()
            with pytest.raises(aqueue.TaskDead):
                await asyncio.wait_for(handle.get(), 20)
        assert runs == [1, 2, 3]
        assert await handle.status() is TaskStatus.DEAD
        [letter] = await app.dead_letters()
        assert letter.task_id == handle.id and letter.reason == "failed"
        assert "RuntimeError" in letter.error
    finally:
        await app.close()


async def test_timeout_frees_the_slot(app: aqueue.App) -> None:
    @app.task(timeout=0.3)
    async def stuck() -> None:
        await asyncio.sleep(60)

    @app.task
    async def quick() -> str:
        return "ran"

    async with running_worker(app, concurrency=1):
        first = await stuck.enqueue()
        second = await quick.enqueue()
        # Far less than the 60 s the stuck task would hold the only slot.
        assert await asyncio.wait_for(second.get(), 15) == "ran"
        with pytest.raises(aqueue.TaskFailed) as caught:
            await asyncio.wait_for(first.get(), 5)
    assert caught.value.exc_type == "TimeoutError"
    assert "timed out" in caught.value.message


async def test_plain_def_task_over_its_timeout_is_reported_failed(app: aqueue.App) -> None:
    @app.task(timeout=0.2)
    def slow_sync() -> str:
        time.sleep(1.0)
        return "too late"

    async with running_worker(app, concurrency=2):
        handle = await slow_sync.enqueue()
        with pytest.raises(aqueue.TaskFailed) as caught:
            await asyncio.wait_for(handle.get(), 15)
    assert caught.value.exc_type == "TimeoutError"
    assert await handle.status() is TaskStatus.FAILED
