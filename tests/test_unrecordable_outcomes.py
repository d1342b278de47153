"""Every outcome can be recorded: odd retries, broken exceptions and deep nesting
fail one task with a clear error, never freeze it or the worker."""

from __future__ import annotations

import pytest

import aqueue

from .conftest import running_worker


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


async def test_odd_outcomes_fail_the_task_and_the_worker_goes_on(app: aqueue.App) -> None:
    @app.task(retries=3)
    async def retry_in(delay: float) -> None:
        raise aqueue.Retry(delay=delay)

    @app.task
    async def unprintable() -> None:
        raise Unprintable

    @app.task
    async def fine(x: int) -> int:
        return x

    async with running_worker(app, concurrency=2):
        for delay in (float("inf"), float("nan"), 1e300):
            handle = await retry_in.enqueue(delay)
            with pytest.raises(aqueue.TaskFailed, match="is not a number of seconds"):
                await handle.get(timeout=10)
        broken = await unprintable.enqueue()
        with pytest.raises(aqueue.TaskFailed, match=r"whose str\(\) raised RuntimeError"):
            await broken.get(timeout=10)
        # Two slots, four odd outcomes: none of them kept its slot.
        assert [await (await fine.enqueue(i)).get(timeout=10) for i in range(3)] == [0, 1, 2]


async def test_deep_nesting_is_refused_at_enqueue(app: aqueue.App) -> None:
    @app.task
    async def takes(tree: list[object]) -> None:
        return None

    @app.task
    async def untyped(tree):  # type: ignore[no-untyped-def]
        return None

    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(aqueue.EnqueueError):
        await takes.enqueue(deep)
    with pytest.raises(aqueue.EnqueueError):
        await untyped.enqueue(deep)
