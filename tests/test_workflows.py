"""Chains, groups and chords against a real Redis and real workers."""

from __future__ import annotations

import asyncio
import collections
import re
import threading
from typing import Any

import pytest
import redis

import aqueue
from aqueue import AsyncResult, EnqueueError, TaskAborted, TaskFailed, TaskStatus
from aqueue.canvas import chain
from aqueue.core.handoffs import HANDOFF_CHORD, HANDOFF_ENQUEUE, encode_handoffs
from aqueue.core.protocol import encode_value
from aqueue.groups import GroupResult, chord, group
from aqueue.runtime.workflow import Forwarder

from .conftest import outbox_is_empty, running_worker, wait_until


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
    with pytest.raises(EnqueueError, match="fixed task_id"):
        await chain(add.s(1, 2), spell.s().options(task_id="mine")).enqueue()
    assert await app.client.broker.client.xlen(app.client.broker.keys("numbers").stream) == 0


async def test_a_hand_off_forwarded_twice_runs_the_step_once(app: aqueue.App) -> None:
    """A forwarder that stopped after forwarding and before dropping the hand-off
    leaves it in the outbox: forwarding it again must not run the step again."""
    runs: collections.Counter[str] = collections.Counter()
    _add, spell, _length, _boom, _constant = make_tasks(app, runs)
    queue, message = spell.build_message((4,), {}, spell.options()._opts, task_id="step-2")
    broker = app.client.broker
    row = ("words", "step-2", spell.name, message.payload, HANDOFF_ENQUEUE)
    assert await broker.forward(queue, [row]) == (1, [])
    assert await broker.forward(queue, [row]) == (0, [])
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
        # Dropped just after it was handed on.
        await wait_until(lambda: outbox_is_empty(app, broker.keys("numbers").outbox))
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


def make_chord_tasks(app: aqueue.App, runs: collections.Counter[str]) -> tuple[Any, ...]:
    @app.task(queue="numbers")
    async def square(x: int) -> int:
        runs["square"] += 1
        if x < 0:
            raise ValueError(f"negative {x}")
        return x * x

    @app.task(queue="words")
    async def count_letters(word: str) -> int:
        runs["count_letters"] += 1
        return len(word)

    @app.task(queue="totals")
    async def total(values: list[int], offset: int = 0) -> int:
        runs["total"] += 1
        return sum(values) + offset

    @app.task(queue="totals")
    async def tally(values: list[Any]) -> list[str]:
        runs["tally"] += 1
        return [
            f"{v.exc_type}: {v.message}" if isinstance(v, TaskFailed) else str(v) for v in values
        ]

    return square, count_letters, total, tally


async def test_chord_across_three_queues_calls_back_once_with_values_in_order(
    app: aqueue.App,
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    square, count_letters, total, _tally = make_chord_tasks(app, runs)
    members = [square.s(i) if i % 2 else count_letters.s("x" * i) for i in range(20)]
    c = chord(group(members), total.s(1000))
    r = await c.enqueue()
    assert r.queue == "totals" and c.members is not None and len(c.members) == 20
    async with running_worker(app, queues=["numbers", "words", "totals"]):
        expected = sum(i * i if i % 2 else i for i in range(20)) + 1000
        assert await r.get(timeout=15) == expected
        assert await c.members.get(timeout=5) == [i * i if i % 2 else i for i in range(20)]
    assert runs["total"] == 1


async def test_chord_with_a_failed_member_fails_listing_every_failure(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    square, _count_letters, total, _tally = make_chord_tasks(app, runs)
    r = await chord(group(square.s(x) for x in (1, -2, 3, -4)), total).enqueue()
    async with running_worker(app, queues=["numbers", "totals"]):
        with pytest.raises(TaskFailed) as failed:
            await r.get(timeout=15)
    assert failed.value.exc_type == "ValueError"
    assert "2 of 4 chord members failed" in failed.value.message
    assert "#1" in failed.value.message and "negative -2" in failed.value.message
    assert "#3" in failed.value.message and "negative -4" in failed.value.message
    assert runs["total"] == 0 and runs["square"] == 4


async def test_chord_allowing_failures_passes_them_in_place(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    square, _count_letters, _total, tally = make_chord_tasks(app, runs)
    c = chord(group(square.s(x) for x in (1, -2, 3)), tally, allow_failures=True)
    r = await c.enqueue()
    async with running_worker(app, queues=["numbers", "totals"]):
        assert await r.get(timeout=15) == ["1", "ValueError: negative -2", "9"]
    assert runs["tally"] == 1


async def test_chord_of_no_members_calls_back_at_once(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    _square, _count_letters, total, _tally = make_chord_tasks(app, runs)
    r = await chord(group([]), total.s(7)).enqueue()
    async with running_worker(app, queues=["totals"]):
        assert await r.get(timeout=10) == 7


async def test_a_chord_member_forwarded_twice_is_counted_once(app: aqueue.App) -> None:
    """Two forwarders racing (or one repeating after a crash, before it dropped
    the hand-offs): each member is counted once and the callback enqueued once."""
    runs: collections.Counter[str] = collections.Counter()
    square, _count_letters, total, _tally = make_chord_tasks(app, runs)
    c = chord(group(square.s(x) for x in (2, 3)), total)
    r = await c.enqueue()
    assert c.id is not None
    broker = app.client.broker
    forwarder = Forwarder(lambda: broker, ["numbers"], app.client.codec)
    first = ("totals", c.id, "0", b"s" + encode_value(4), HANDOFF_CHORD)
    second = ("totals", c.id, "1", b"s" + encode_value(9), HANDOFF_CHORD)
    assert await broker.forward("totals", [first]) == (0, [])
    assert await broker.forward("totals", [first]) == (0, [])
    assert await broker.forward("totals", [second, second]) == (0, [c.id])
    assert await broker.forward("totals", [second]) == (0, [c.id])  # due, not yet fired
    assert await forwarder.fire("totals", c.id) is True
    assert await forwarder.fire("totals", c.id) is False
    assert await broker.forward("totals", [first, second]) == (0, [])
    async with running_worker(app, queues=["totals"]) as worker:
        assert await r.get(timeout=10) == 13
        await wait_until(lambda: worker.stats.succeeded >= 1)
    assert runs == {"total": 1}


async def test_every_script_of_a_workflow_across_queues_stays_in_one_slot(
    app: aqueue.App, redis_url: str, prefix: str
) -> None:
    """Redis Cluster runs a script only when every key it touches is in one slot.
    Watch every command the scripts of a chain and a chord spanning three queues
    run (MONITOR), and check that each script touched keys of one hash tag only."""
    runs: collections.Counter[str] = collections.Counter()
    add, spell, length, _boom, _constant = make_tasks(app, runs)
    square, count_letters, total, _tally = make_chord_tasks(app, runs)
    commands: list[dict[str, Any]] = []
    watching = threading.Event()
    stop = threading.Event()
    monitor_client = redis.Redis.from_url(redis_url)

    def watch() -> None:
        with monitor_client.monitor() as monitor:
            watching.set()
            for command in monitor.listen():
                if stop.is_set():
                    return
                commands.append(command)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert watching.wait(10)
    try:
        async with running_worker(app, queues=["numbers", "words", "totals"]):
            last = await chain(add.s(1, 2), spell, length).enqueue()
            members = [square.s(3), count_letters.s("abcd")]
            callback = await chord(group(members), total).enqueue()
            assert await last.get(timeout=10) == 3
            assert await callback.get(timeout=10) == 13
    finally:
        stop.set()
        await app.client.broker.client.ping()  # wakes the monitor so it sees `stop`
        watcher.join(10)
        monitor_client.close()
    tag = re.compile(re.escape(prefix) + r":\{([^}]*)\}")
    scripts: list[set[str]] = []
    current: set[str] | None = None
    for command in commands:
        if command.get("client_type") != "lua":
            current = None  # a command from outside a script ends the script before it
            continue
        if current is None:
            current = set()
            scripts.append(current)
        if not command["command"].upper().startswith("PUBLISH"):
            current.update(tag.findall(command["command"]))
    assert any(":chord:" in c["command"] for c in commands)  # the chord scripts were seen
    assert any(":outbox" in c["command"] for c in commands)
    assert len(scripts) > 5
    assert [tags for tags in scripts if len(tags) > 1] == []


async def test_aborting_a_running_chain_aborts_every_step_not_finished(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    started = asyncio.Event()
    never = asyncio.Event()

    @app.task(queue="numbers")
    async def first(x: int) -> int:
        runs["first"] += 1
        return x

    @app.task(queue="numbers")
    async def blocked(x: int) -> int:
        runs["blocked"] += 1
        started.set()
        await never.wait()
        return x

    @app.task(queue="words")
    async def later(x: int) -> int:
        runs["later"] += 1
        return x

    async with running_worker(app, queues=["numbers", "words"]) as worker:
        last = await chain(first.s(1), blocked, later, later).enqueue()
        await asyncio.wait_for(started.wait(), 10)
        assert await last.abort_chain() == 3  # the running step and the two not yet sent
        with pytest.raises(TaskAborted):
            await last.get(timeout=10)
        statuses = []
        step: AsyncResult[Any] | None = last
        while step is not None:
            statuses.append(await step.status())
            step = step.parent
        assert statuses == [TaskStatus.ABORTED] * 3 + [TaskStatus.SUCCEEDED]
        # The aborted step's own hand-off has been forwarded, and changed nothing.
        broker = app.client.broker
        outbox = broker.keys("numbers").outbox

        async def forwarded() -> bool:
            return worker.stats.aborted >= 1 and await broker.client.xlen(outbox) == 0

        await wait_until(forwarded)
    assert runs == {"first": 1, "blocked": 1}


async def test_aborting_a_group_aborts_every_member_not_finished(app: aqueue.App) -> None:
    never = asyncio.Event()

    @app.task(queue="numbers")
    async def wait_forever(i: int) -> int:
        await never.wait()
        return i

    gr = await group(wait_forever.s(i) for i in range(5)).enqueue()
    assert await gr.abort() == 5
    values = await gr.get(timeout=10, return_exceptions=True)  # final: no worker needed
    assert all(isinstance(v, TaskAborted) for v in values)
    assert await gr.failed() == 5
