"""Eager mode: ``enqueue()`` runs the task inline through the worker's executor, no Redis.

The App here points at a port nothing listens on, so any attempt to reach
Redis would fail the test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
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

    @app.task
    async def total(values: list[float]) -> float:
        return sum(values)

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


def test_delay_runs_inline_from_synchronous_code() -> None:
    app = make_app()
    norm = app.tasks["tests.test_eager.make_app.<locals>.norm"]
    with app.eager():
        r = norm.delay(Point(3, 4), datetime.now(UTC))
        assert r.get(timeout=1) == 5.0
        assert r.status() is aqueue.TaskStatus.SUCCEEDED and r.ready()
        assert r.abort() is False
        failed = app.tasks["tests.test_eager.make_app.<locals>.fails"].delay("ann")
        assert failed.status() is aqueue.TaskStatus.FAILED
        with pytest.raises(aqueue.TaskFailed, match="no customer ann"):
            failed.get()


async def test_delay_inside_a_running_loop_still_needs_no_redis() -> None:
    app = make_app()
    with app.eager():
        r = app.tasks["tests.test_eager.make_app.<locals>.norm"].delay(
            Point(6, 8), datetime.now(UTC)
        )
        assert r.get() == 10.0


async def test_a_delay_or_eta_runs_at_once_and_expiry_is_judged_at_the_eta() -> None:
    app = make_app()
    norm = app.tasks["tests.test_eager.make_app.<locals>.norm"]
    with app.eager():
        later = await norm.options(delay=3600).enqueue(Point(1, 0), datetime.now(UTC))
        assert await later == 1.0
        # Due in an hour, good for ten minutes: a worker would find it expired.
        stale = await norm.options(delay=3600, expires=600).enqueue(Point(1, 0), datetime.now(UTC))
        assert await stale.status() is aqueue.TaskStatus.EXPIRED


async def test_groups_run_inline_chains_and_chords_are_refused_clearly() -> None:
    app = make_app()
    norm = app.tasks["tests.test_eager.make_app.<locals>.norm"]
    now = datetime.now(UTC)
    with app.eager():
        gr = await aqueue.group([norm.s(Point(3, 4), now), norm.s(Point(0, 2), now)]).enqueue()
        assert await gr == [5.0, 2.0]
        with pytest.raises(aqueue.ConfigError, match="a chain can't run in eager mode"):
            await aqueue.chain(norm.s(Point(3, 4), now), norm.si(Point(1, 1), now)).enqueue()
        with pytest.raises(aqueue.ConfigError, match="a chord can't run in eager mode"):
            await aqueue.chord(
                [norm.s(Point(3, 4), now)],
                app.tasks["tests.test_eager.make_app.<locals>.total"].s(),
            ).enqueue()


async def test_a_streaming_tasks_chunks_come_from_its_held_value() -> None:
    app = make_app()

    @app.task
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    with app.eager():
        r = await count.enqueue(3)
        assert [x async for x in r.stream()] == [0, 1, 2]
        first = r.stream()
        assert await first.__anext__() == 0
        assert [x async for x in r.stream(after=first.position)] == [1, 2]
        assert await r == [0, 1, 2]
