"""Workflow shapes beyond a plain chain: delayed later steps, groups inside
chains and chains inside groups. Real Redis, real workers."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import aqueue
from aqueue import TaskFailed, TaskStatus
from aqueue.canvas import chain

from .conftest import running_worker, wait_until

QUEUES = ["numbers", "words", "totals"]


def make_tasks(app: aqueue.App, runs: collections.Counter[str]) -> tuple[Any, ...]:
    @app.task(queue="numbers")
    async def add(x: int, y: int) -> int:
        runs["add"] += 1
        return x + y

    @app.task(queue="words")
    async def spell(n: int) -> str:
        runs["spell"] += 1
        return "x" * n

    @app.task(queue="numbers")
    async def length(word: str) -> int:
        runs["length"] += 1
        return len(word)

    @app.task(queue="totals")
    async def total(values: list[int], offset: int = 0) -> int:
        runs["total"] += 1
        return sum(values) + offset

    @app.task(queue="words")
    async def boom(n: int) -> int:
        runs["boom"] += 1
        raise ValueError(f"no {n}")

    return add, spell, length, total, boom


async def record_ms(app: aqueue.App, result: aqueue.AsyncResult[Any], field: str) -> int:
    """A time (Redis' clock, ms) from a task's record."""
    broker = app.client.broker
    value = await broker.client.hget(broker.keys(result.queue).task(result.id), field)
    assert value is not None, field
    return int(value)


async def test_a_later_step_waits_its_delay_from_when_its_parent_finished(
    app: aqueue.App,
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, length, _total, _boom = make_tasks(app, runs)
    eta = datetime.now(UTC) + timedelta(seconds=2)
    last = await chain(
        add.s(1, 2), spell.s().options(delay=1.0), length.s().options(eta=eta)
    ).enqueue()
    delayed = last.parent
    assert delayed is not None and delayed.parent is not None
    async with running_worker(app, queues=QUEUES):
        await wait_until(lambda: _is(delayed, TaskStatus.SCHEDULED), timeout=10)
        assert await last.get(timeout=15) == 3
        finished_first = await record_ms(app, delayed.parent, "finished")
        assert await record_ms(app, delayed, "started") - finished_first >= 1000
        assert await record_ms(app, last, "started") >= int(eta.timestamp() * 1000) - 5
    assert runs == {"add": 1, "spell": 1, "length": 1}


async def test_a_delayed_later_step_aborted_while_scheduled_ends_its_chain(
    app: aqueue.App,
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, length, _total, _boom = make_tasks(app, runs)
    last = await chain(add.s(1, 2), spell.s().options(delay=60), length).enqueue()
    waiting = last.parent
    assert waiting is not None
    async with running_worker(app, queues=QUEUES):
        await wait_until(lambda: _is(waiting, TaskStatus.SCHEDULED), timeout=10)
        assert await waiting.abort()
        with pytest.raises(TaskFailed, match="ended aborted"):
            await last.get(timeout=15)
    assert runs == {"add": 1}


async def _is(result: aqueue.AsyncResult[Any], state: TaskStatus) -> bool:
    return await result.status() is state
