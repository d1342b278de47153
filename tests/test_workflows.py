"""Chains and groups against a real Redis and real workers."""

from __future__ import annotations

import collections
from typing import Any

import pytest

import aqueue
from aqueue import AsyncResult, EnqueueError, TaskFailed, TaskStatus
from aqueue.canvas import GroupResult, chain, group
from aqueue.core.protocol import HANDOFF_ENQUEUE, encode_handoffs

from .conftest import running_worker, wait_until


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
    async def length(word: str, extra: int = 0) -> int:
        runs["length"] += 1
        return len(word) + extra

    @app.task(queue="words")
    async def boom(n: int) -> int:
        runs["boom"] += 1
        raise ValueError(f"no {n}")

    @app.task(queue="numbers")
    async def constant() -> str:
        runs["constant"] += 1
        return "fixed"

    return add, spell, length, boom, constant


async def test_chain_of_three_across_queues_passes_each_value_on(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, length, _boom, _constant = make_tasks(app, runs)
    async with running_worker(app, queues=["numbers", "words"]):
        last = await chain(add.s(1, 2), spell, length.s(10)).enqueue()
        assert await last.get(timeout=10) == 13  # len("xxx") + 10
        middle = last.parent
        assert middle is not None and await middle == "xxx"
        assert middle.queue == "words"
        first = middle.parent
        assert first is not None and first.parent is None and await first == 3
        piped = await (add.s(2, 2) | spell | length).enqueue()
        assert await piped.get(timeout=10) == 4
    assert runs == {"add": 2, "spell": 2, "length": 2}


async def test_an_immutable_step_ignores_its_parents_value(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, _spell, _length, _boom, constant = make_tasks(app, runs)
    async with running_worker(app, queues=["numbers", "words"]):
        r = await (add.s(1, 1) | constant.si()).enqueue()
        assert await r.get(timeout=10) == "fixed"


async def test_a_failed_step_fails_every_later_step_with_its_reason(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, length, boom, _constant = make_tasks(app, runs)
    async with running_worker(app, queues=["numbers", "words"]):
        last = await chain(add.s(1, 2), boom, spell, length).enqueue()
        with pytest.raises(TaskFailed) as failed:
            await last.get(timeout=10)
        assert failed.value.exc_type == "ValueError"
        assert "no 3" in failed.value.message and "earlier step" in failed.value.message
        assert last.parent is not None
        assert await last.parent.status() is TaskStatus.FAILED
    assert runs == {"add": 1, "boom": 1}


async def test_a_chain_that_cant_run_is_refused_before_anything_is_sent(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _length, _boom, _constant = make_tasks(app, runs)
    with pytest.raises(EnqueueError, match="spell"):
        await chain(add.s(1, 2), spell.s(5)).enqueue()
    with pytest.raises(EnqueueError):
        chain(add.s(1, 2), 42)
    assert await app.client.broker.client.xlen(app.client.broker.keys("numbers").stream) == 0


async def test_a_hand_off_forwarded_twice_runs_the_step_once(app: aqueue.App) -> None:
    """A forwarder that stopped after forwarding and before dropping the hand-off
    leaves it in the outbox: forwarding it again must not run the step again."""
    runs: collections.Counter[str] = collections.Counter()
    _add, spell, _length, _boom, _constant = make_tasks(app, runs)
    queue, message = spell.build_message((4,), {}, spell.options()._opts, task_id="step-2")
    broker = app.client.broker
    row = ("words", "step-2", spell.name, message.payload, HANDOFF_ENQUEUE)
    assert await broker.forward(queue, [row]) == 1
    assert await broker.forward(queue, [row]) == 0
    async with running_worker(app, queues=["words"]) as worker:
        assert await app.result("step-2", "words").get(timeout=10) == "xxxx"
        await wait_until(lambda: worker.stats.succeeded >= 1)
    assert runs == {"spell": 1}


async def test_outbox_left_by_a_crash_is_forwarded_by_any_worker(app: aqueue.App) -> None:
    """The finish script wrote the hand-off; its worker died before forwarding it.
    Another worker's forwarder finds it in the outbox and the chain goes on."""
    runs: collections.Counter[str] = collections.Counter()
    _add, spell, _length, _boom, _constant = make_tasks(app, runs)
    _, message = spell.build_message((2,), {}, spell.options()._opts, task_id="later")
    broker = app.client.broker
    rows = encode_handoffs([("words", "later", spell.name, message.payload, HANDOFF_ENQUEUE)])
    await broker.client.xadd(broker.keys("numbers").outbox, {"f": rows})
    async with running_worker(app, queues=["numbers", "words"]):
        assert await app.result("later", "words").get(timeout=15) == "xx"
    assert await broker.client.xlen(broker.keys("numbers").outbox) == 0
    assert runs == {"spell": 1}


async def test_group_of_ten_thousand_in_order(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, _spell, _length, _boom, _constant = make_tasks(app, runs)
    n = 10_000
    gr = await group(add.s(i, i) for i in range(n)).enqueue()
    assert isinstance(gr, GroupResult) and len(gr) == n
    async with running_worker(app, queues=["numbers"], concurrency=200):
        assert await gr.get(timeout=120) == [2 * i for i in range(n)]
        assert await gr.completed() == n
        assert await gr.failed() == 0
    assert runs["add"] == n


async def test_group_failures_raise_or_are_collected(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, _spell, _length, boom, _constant = make_tasks(app, runs)
    members = [add.s(1, 1), boom.s(7), add.s(2, 2)]
    gr = await group(members).enqueue()
    async with running_worker(app, queues=["numbers", "words"]):
        with pytest.raises(TaskFailed, match="no 7"):
            await gr.get(timeout=10)
        values = await gr.get(timeout=10, return_exceptions=True)
        assert values[0] == 2 and values[2] == 4
        assert isinstance(values[1], TaskFailed) and values[1].exc_type == "ValueError"
        assert await gr.completed() == 2 and await gr.failed() == 1 and await gr.ready()
        seen = [r async for r in gr.as_completed()]
        assert sorted(r.id for r in seen) == sorted(r.id for r in gr)
        assert all(isinstance(r, AsyncResult) for r in seen)
