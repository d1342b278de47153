"""Eager mode: ``enqueue()`` runs the task inline through the worker's executor, no Redis.

The App here points at a port nothing listens on, so any attempt to reach
Redis would fail the test.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import msgspec
import pytest

import aqueue


class Point(msgspec.Struct):
    x: int
    y: int


def make_app() -> aqueue.App:
    # Port 1: nothing answers there; eager mode must never try.
    app = aqueue.App("redis://127.0.0.1:1/0", connect_timeout=0.5)
    calls: list[int] = []

    @app.task
    async def norm(p: Point, at: datetime) -> float:
        assert isinstance(p, Point) and isinstance(at, datetime)
        return (p.x**2 + p.y**2) ** 0.5

    @app.task
    async def fails(customer: str) -> None:
        raise ValueError(f"no customer {customer}")

    @app.task(retries=3, retry_delay=3600)
    async def flaky(ctx: aqueue.Context) -> int:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("try again")
        return ctx.attempt

    @app.task(timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(10)

    @app.task
    def in_thread() -> str:
        return threading.current_thread().name

    @app.task
    async def fan_out(n: int) -> list[int]:
        results = [await norm.enqueue(Point(i, 0), datetime.now(UTC)) for i in range(n)]
        return [int(await r) for r in results]

    app.calls = calls  # type: ignore[attr-defined]
    return app


async def test_enqueue_runs_inline_and_returns_a_finished_typed_result() -> None:
    app = make_app()
    norm = app.tasks["tests.test_eager.make_app.<locals>.norm"]
    with app.eager():
        r = await norm.enqueue(Point(3, 4), datetime.now(UTC))
    assert await r == 5.0
    assert await r.status() is aqueue.TaskStatus.SUCCEEDED
    info = await r.info()
    assert (info.attempt, info.name) == (1, norm.name)


async def test_a_failure_is_a_finished_failed_result() -> None:
    app = make_app()
    fails = app.tasks["tests.test_eager.make_app.<locals>.fails"]
    async with app.eager():
        r = await fails.enqueue("acme")
    assert await r.status() is aqueue.TaskStatus.FAILED
    with pytest.raises(aqueue.TaskFailed) as raised:
        await r
    assert raised.value.exc_type == "ValueError"
    assert "no customer acme" in str(raised.value)


async def test_retries_run_again_at_once_with_the_context() -> None:
    app = make_app()
    flaky = app.tasks["tests.test_eager.make_app.<locals>.flaky"]
    with app.eager():
        r = await flaky.enqueue()
    assert await r == 3
    assert app.calls == [1, 2, 3]  # type: ignore[attr-defined]
    assert (await r.info()).attempt == 3


async def test_timeouts_apply() -> None:
    app = make_app()
    slow = app.tasks["tests.test_eager.make_app.<locals>.slow"]
    with app.eager():
        r = await slow.enqueue()
    assert await r.status() is aqueue.TaskStatus.FAILED
    with pytest.raises(aqueue.TaskFailed, match="timed out"):
        await r


async def test_plain_def_tasks_run_in_a_thread_and_tasks_may_enqueue_tasks() -> None:
    app = make_app()
    in_thread = app.tasks["tests.test_eager.make_app.<locals>.in_thread"]
    fan_out = app.tasks["tests.test_eager.make_app.<locals>.fan_out"]
    with app.eager():
        assert (await (await in_thread.enqueue())).startswith("aqueue-eager")
        assert await (await fan_out.enqueue(3)) == [0, 1, 2]
        many = await in_thread.enqueue_many([(), ()])
        assert [await r.status() for r in many] == [aqueue.TaskStatus.SUCCEEDED] * 2


async def test_eager_mode_nests_and_ends_with_its_block() -> None:
    app = make_app()
    norm = app.tasks["tests.test_eager.make_app.<locals>.norm"]
    with app.eager():
        async with app.eager():
            pass
        await norm.enqueue(Point(1, 0), datetime.now(UTC))
    # Outside the block enqueue goes to Redis again, and nothing answers on port 1.
    with pytest.raises((aqueue.ConnectionFailed, ConnectionError, OSError)):
        await norm.enqueue(Point(1, 0), datetime.now(UTC))
    await app.close()
