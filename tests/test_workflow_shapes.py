"""Workflow shapes beyond a plain chain: delayed later steps, groups inside
chains and chains inside groups. Real Redis, real workers."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import aqueue
from aqueue import EnqueueError, TaskFailed, TaskStatus
from aqueue.canvas import chain
from aqueue.groups import chord, group

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

    @app.task(queue="words")
    async def double(x: int) -> int:
        runs["double"] += 1
        return 2 * x

    return add, spell, length, total, boom, double


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
    add, spell, length, _total, _boom, _double = make_tasks(app, runs)
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
    add, spell, length, _total, _boom, _double = make_tasks(app, runs)
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


async def test_a_group_inside_a_chain_is_a_chord_of_the_step_after_it(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _length, total, _boom, double = make_tasks(app, runs)
    async with running_worker(app, queues=QUEUES):
        # 1 + 2 = 3, then 3 + 10 and 3 + 20 side by side, then their sum, then spelled.
        last = await chain(add.s(1, 2), group(add.s(10), add.s(20)), total, spell).enqueue()
        assert await last.get(timeout=15) == "x" * 36
        callback = last.parent
        assert callback is not None and await callback == 36
        assert callback.parent is not None and await callback.parent == 3
        piped = await (add.s(1, 1) | group(add.s(1), add.s(2)) | total.s(100)).enqueue()
        assert await piped.get(timeout=15) == 3 + 4 + 100
        leading = await chain(group([add.s(1, 1), add.s(2, 2)]), total).enqueue()
        assert await leading.get(timeout=15) == 6
        assert await (await (group([add.s(5, 5)]) | total).enqueue()).get(timeout=15) == 10
        tasks_as_members = await chain(add.s(2, 3), group(double, double), total).enqueue()
        assert await tasks_as_members.get(timeout=15) == 20
    assert runs["total"] == 5 and runs["double"] == 2


async def test_a_step_failing_before_a_group_fails_the_group_and_every_later_step(
    app: aqueue.App,
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _length, total, boom, _double = make_tasks(app, runs)
    last = await chain(boom.s(1), group(add.s(1), add.s(2)), total, spell).enqueue()
    async with running_worker(app, queues=QUEUES):
        with pytest.raises(TaskFailed) as failed:
            await last.get(timeout=15)
        assert "earlier step" in failed.value.message and "no 1" in failed.value.message
        callback = last.parent
        assert callback is not None
        with pytest.raises(TaskFailed, match="2 of 2 chord members failed"):
            await callback.get(timeout=5)
    assert runs == {"boom": 1}


async def test_a_failed_member_of_a_group_inside_a_chain_fails_the_rest(
    app: aqueue.App,
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _length, total, boom, _double = make_tasks(app, runs)
    last = await chain(add.s(1, 2), group(add.s(1), boom.s()), total, spell).enqueue()
    async with running_worker(app, queues=QUEUES):
        with pytest.raises(TaskFailed) as failed:
            await last.get(timeout=15)
        assert "1 of 2 chord members failed" in failed.value.message
        assert "no 3" in failed.value.message
    assert runs == {"add": 2, "boom": 1}


async def test_chains_inside_a_group_and_a_chord(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, length, total, boom, _double = make_tasks(app, runs)
    async with running_worker(app, queues=QUEUES):
        gr = await group([chain(add.s(1, 2), spell), spell.s(2)]).enqueue()
        assert await gr.get(timeout=15) == ["xxx", "xx"]
        first = gr.results[0]
        assert first.parent is not None and await first.parent == 3
        r = await chord(
            group([chain(add.s(1, 2), add.s(10)), add.s(5, 5), chain(spell.s(4), length)]),
            total,
        ).enqueue()
        assert await r.get(timeout=15) == 13 + 10 + 4
        failing = await chord(group([chain(boom.s(7), spell), add.s(1, 1)]), total).enqueue()
        with pytest.raises(TaskFailed, match="1 of 2 chord members failed") as failed:
            await failing.get(timeout=15)
        assert "no 7" in failed.value.message
    assert runs["spell"] == 3 and runs["total"] == 1


async def test_shapes_a_chain_cant_take_are_refused_before_anything_is_sent(
    app: aqueue.App,
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _length, total, _boom, _double = make_tasks(app, runs)
    with pytest.raises(EnqueueError, match="no step after it"):
        await chain(add.s(1, 2), group(add.s(1), add.s(2))).enqueue()
    with pytest.raises(EnqueueError, match="are groups"):
        await chain(add.s(1, 2), group(add.s(1)), group(add.s(2)), total).enqueue()
    with pytest.raises(EnqueueError, match="immutable"):
        await chain(add.s(1, 2), group(add.s(1)), spell.si(3)).enqueue()
    with pytest.raises(EnqueueError, match="empty group"):
        await chain(add.s(1, 2), group([]), total).enqueue()
    broker = app.client.broker
    for queue in QUEUES:
        assert await broker.client.xlen(broker.keys(queue).stream) == 0


async def test_aborting_a_chain_with_a_group_inside_stops_the_steps_after_it(
    app: aqueue.App,
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _length, total, _boom, double = make_tasks(app, runs)
    last = await chain(add.s(1, 2), group(double, add.s(1)), total, spell).enqueue()
    assert await last.abort_chain() == 3  # the first step (queued), the callback, the last
    async with running_worker(app, queues=QUEUES):
        with pytest.raises(TaskFailed):
            await last.get(timeout=15)
        callback = last.parent
        assert callback is not None
        with pytest.raises(TaskFailed):
            await callback.get(timeout=15)
    assert runs == {}


async def test_a_member_chain_that_begins_with_a_group_inside_a_chain(app: aqueue.App) -> None:
    """chain(a, group(chain(group(b, c), d), e), f): groups nest through chains."""
    runs: collections.Counter[str] = collections.Counter()
    add, _spell, _length, total, _boom, double = make_tasks(app, runs)
    inner = chain(group(double, add.s(1)), total)  # 2x + (x + 1)
    last = await chain(add.s(1, 2), group(inner, double), total.s(1000)).enqueue()
    async with running_worker(app, queues=QUEUES):
        # x = 3: inner gives 6 + 4 = 10, double gives 6; total + 1000.
        assert await last.get(timeout=15) == 1016
    assert runs["total"] == 2
