"""A workflow step that never runs still ends its chain or chord.

Aborted or purged while it waited, expired before a worker could start it,
or refused by the worker (unknown task, bad arguments, bad signature): the
chain's last step and the chord's callback fail promptly, naming the reason,
instead of waiting for ever. Real Redis, real workers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

import pytest

import aqueue
from aqueue import TaskFailed, TaskStatus
from aqueue.canvas import chain
from aqueue.groups import chord, group

from .conftest import outbox_is_empty, running_worker, wait_until

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

    @app.task(queue="totals")
    async def total(values: list[int]) -> int:
        runs["total"] += 1
        return sum(values)

    @app.task(queue="totals")
    async def tally(values: list[Any]) -> list[str]:
        runs["tally"] += 1
        return [type(v).__name__ if isinstance(v, TaskFailed) else str(v) for v in values]

    return add, spell, total, tally


async def ends_with(result: aqueue.AsyncResult[Any], *words: str) -> TaskFailed:
    """The result fails within seconds, its message naming every word."""
    with pytest.raises(TaskFailed) as failed:
        await result.get(timeout=15)
    for word in words:
        assert word in failed.value.message, failed.value.message
    return failed.value


async def test_a_step_aborted_while_queued_ends_its_chain(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _total, _tally = make_tasks(app, runs)
    last = await chain(add.s(1, 2), spell, add.s(1)).enqueue()
    first = last.parent.parent  # type: ignore[union-attr]
    assert first is not None and await first.abort()
    async with running_worker(app, queues=QUEUES):
        await ends_with(last, "ended aborted")
        assert await last.parent.status() is TaskStatus.FAILED  # type: ignore[union-attr]
    assert runs == {}


async def test_a_step_aborted_while_scheduled_ends_its_chain(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _total, _tally = make_tasks(app, runs)
    last = await chain(add.s(1, 2).options(delay=60), spell).enqueue()
    assert last.parent is not None and await last.parent.abort()
    async with running_worker(app, queues=QUEUES):
        await ends_with(last, "ended aborted")
    assert runs == {}


async def test_a_purged_step_ends_its_chain_and_its_chord(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, total, _tally = make_tasks(app, runs)
    last = await chain(add.s(1, 2), spell).enqueue()
    later = await chain(add.s(3, 4).options(delay=60), spell).enqueue()
    callback = await chord(group([add.s(1, 1), spell.s(2)]), total).enqueue()
    assert await app.client.purge("numbers") == (2, 1)  # two queued, one scheduled
    async with running_worker(app, queues=QUEUES):
        await ends_with(last, "ended aborted", "purged")
        await ends_with(later, "ended aborted", "purged")
        failed = await ends_with(callback, "1 of 2 chord members failed", "aborted")
        assert failed.exc_type == "TaskAborted"
        # The purge leaves nothing behind in the outbox once forwarded (the
        # forwarder drops its entries just after handing them on).
        outbox = app.client.broker.keys("numbers").outbox
        await wait_until(lambda: outbox_is_empty(app, outbox))
    assert runs == {"spell": 1}  # the chord's other member ran; the callback did not


async def test_an_expired_step_ends_its_chain(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _total, _tally = make_tasks(app, runs)
    last = await chain(add.s(1, 2).options(expires=0.05), spell, add.s(1)).enqueue()
    await asyncio.sleep(0.1)
    async with running_worker(app, queues=QUEUES):
        failed = await ends_with(last, "ended expired")
        assert failed.exc_type == "TaskExpired"
    assert runs == {}


async def test_a_step_with_bad_arguments_is_dead_lettered_and_ends_its_chain(
    app: aqueue.App,
) -> None:
    """``add`` gets ``spell``'s string as its first argument: refused before it runs."""
    runs: collections.Counter[str] = collections.Counter()
    add, spell, _total, _tally = make_tasks(app, runs)
    last = await chain(spell.s(2), add.s(1), spell).enqueue()
    async with running_worker(app, queues=QUEUES):
        failed = await ends_with(last, "ended dead")
        assert failed.exc_type == "bad_arguments"
        refused = last.parent
        assert refused is not None and await refused.status() is TaskStatus.DEAD
    assert runs == {"spell": 1}
    assert len(await app.dead_letters("numbers")) == 1


async def test_a_step_no_worker_knows_ends_its_chain_and_its_chord(
    app: aqueue.App, redis_url: str, prefix: str
) -> None:
    """The producer knows a task the workers don't: the step is dead-lettered unrun."""
    runs: collections.Counter[str] = collections.Counter()
    make_tasks(app, runs)  # the worker's tasks
    producer = aqueue.App(redis_url, prefix=prefix)
    try:
        add, spell, _total, tally = make_tasks(producer, collections.Counter())

        @producer.task(queue="words")
        async def ghost(word: str) -> str:
            return word

        last = await chain(spell.s(2), ghost, spell.si(1)).enqueue()
        callback = await chord(
            group([add.s(1, 1), ghost.s("x")]), tally, allow_failures=True
        ).enqueue()
        async with running_worker(app, queues=QUEUES):
            failed = await ends_with(last, "ended dead", "no task named")
            assert failed.exc_type == "unknown_task"
            assert await callback.get(timeout=15) == ["2", "TaskDead"]
        assert runs == {"spell": 1, "add": 1, "tally": 1}
    finally:
        await producer.close()


async def test_a_step_with_a_bad_signature_ends_its_chain(redis_url: str, prefix: str) -> None:
    """Signed with another key: refused unrun, and its chain fails instead of waiting."""
    runs: collections.Counter[str] = collections.Counter()
    worker_app = aqueue.App(redis_url, prefix=prefix, signing_key="the-real-key")
    producer = aqueue.App(redis_url, prefix=prefix, signing_key="an-old-key")
    try:
        make_tasks(worker_app, runs)
        add, spell, _total, _tally = make_tasks(producer, collections.Counter())
        last = await chain(add.s(1, 2), spell).enqueue()
        async with running_worker(worker_app, queues=QUEUES):
            failed = await ends_with(last, "ended dead", "signature")
            assert failed.exc_type == "bad_signature"
        assert runs == {}
    finally:
        await producer.close()
        await worker_app.close()


async def test_a_chord_member_aborted_while_queued_fails_the_chord(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, spell, total, _tally = make_tasks(app, runs)
    c = chord(group([add.s(1, 1), add.s(2, 2), spell.s(1)]), total)
    callback = await c.enqueue()
    assert c.members is not None and await c.members.results[1].abort()
    async with running_worker(app, queues=QUEUES):
        failed = await ends_with(callback, "1 of 3 chord members failed", "#1", "aborted")
        assert failed.exc_type == "TaskAborted"
    assert runs == {"add": 1, "spell": 1}


async def test_an_expired_chord_member_is_passed_on_as_expired(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    add, _spell, _total, tally = make_tasks(app, runs)
    members = group([add.s(1, 1), add.s(2, 2).options(expires=0.05)])
    callback = await chord(members, tally, allow_failures=True).enqueue()
    await asyncio.sleep(0.1)
    async with running_worker(app, queues=QUEUES):
        assert await callback.get(timeout=15) == ["2", "TaskExpired"]
    assert runs == {"add": 1, "tally": 1}


async def test_a_step_aborted_while_waiting_to_retry_ends_its_chain(app: aqueue.App) -> None:
    runs: collections.Counter[str] = collections.Counter()
    _add, spell, _total, _tally = make_tasks(app, runs)

    @app.task(queue="numbers", retries=3, retry_delay=60)
    async def flaky(x: int) -> int:
        runs["flaky"] += 1
        raise ConnectionError("try later")

    last = await chain(flaky.s(1), spell).enqueue()
    first = last.parent
    assert first is not None

    async def retrying() -> bool:
        assert first is not None
        return await first.status() is TaskStatus.RETRYING

    async with running_worker(app, queues=QUEUES):
        await wait_until(retrying)
        assert await first.abort()
        await ends_with(last, "ended aborted")
    assert runs == {"flaky": 1}


async def test_signed_steps_purged_or_aborted_while_waiting_end_their_chain(
    redis_url: str, prefix: str
) -> None:
    """The scripts tell a workflow step by its envelope, after a signature too."""
    runs: collections.Counter[str] = collections.Counter()
    signed = aqueue.App(redis_url, prefix=prefix, signing_key="k" * 32)
    try:
        add, spell, _total, _tally = make_tasks(signed, runs)
        queued = await chain(add.s(1, 2), spell).enqueue()
        later = await chain(add.s(3, 4).options(delay=60), spell).enqueue()
        assert queued.parent is not None and await queued.parent.abort()
        assert await signed.client.purge("numbers") == (1, 1)
        # The aborted step's record was waiting for its entry to be dropped: now it expires.
        broker = signed.client.broker
        assert await broker.client.pttl(broker.keys("numbers").task(queued.parent.id)) > 0
        async with running_worker(signed, queues=QUEUES):
            await ends_with(queued, "ended aborted")
            await ends_with(later, "ended aborted", "purged")
        assert runs == {}
    finally:
        await signed.close()


async def test_a_step_aborted_while_read_ahead_ends_its_chain(app: aqueue.App) -> None:
    """A step the worker fetched and held, aborted before its turn, hands on
    its outcome like a step that ran: the chain's last step fails."""
    release = asyncio.Event()

    @app.task(queue="numbers")
    async def block() -> int:
        await release.wait()
        return 1

    @app.task(queue="numbers")
    async def add(x: int, y: int) -> int:
        return x + y

    async with running_worker(app, queues=["numbers"], concurrency=1, prefetch=1) as worker:
        blocker = await block.enqueue()
        await wait_until(lambda: len(worker._inflight) == 1)
        last = await chain(add.s(1, 2), add.s(3), add.s(4)).enqueue()
        first = last.parent.parent if last.parent is not None else None
        assert first is not None
        inflight = worker._inflight
        await wait_until(lambda: inflight.entry_of(first.id) is not None)
        aborting = asyncio.create_task(first.abort())
        entry = inflight.entry_of(first.id)
        assert entry is not None

        def cancelled() -> bool:
            held = inflight.get(entry)
            return held is not None and held.cancel_reason == "abort"

        await wait_until(cancelled)
        release.set()
        assert await blocker.get(timeout=10) == 1
        assert await aborting
        assert await first.status() is TaskStatus.ABORTED
        await ends_with(last, "ended aborted")


async def test_a_chord_member_abandoned_after_its_abort_fails_the_chord(
    app: aqueue.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that ignores its abort is recorded aborted after the grace, and
    its chord counts it: the callback fails instead of waiting for ever."""
    from aqueue.runtime import running

    monkeypatch.setattr(running, "ABORT_GRACE", 0.2)
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task(queue="numbers")
    async def stubborn(n: int) -> int:
        if n == 2:
            started.set()
            with contextlib.suppress(asyncio.CancelledError):  # swallows the abort
                await asyncio.sleep(30)
            await release.wait()
        return n

    @app.task(queue="totals")
    async def total(values: list[int]) -> int:
        return sum(values)

    async with running_worker(app, queues=["numbers", "totals"]):
        c = chord(group([stubborn.s(1), stubborn.s(2), stubborn.s(3)]), total)
        callback = await c.enqueue()
        assert c.members is not None
        await asyncio.wait_for(started.wait(), 10)
        assert await c.members.results[1].abort()  # recorded aborted after the grace
        failed = await ends_with(callback, "1 of 3 chord members failed", "#1", "aborted")
        assert failed.exc_type == "TaskAborted"
        release.set()


async def test_ending_plain_tasks_unrun_writes_nothing_for_the_forwarder(app: aqueue.App) -> None:
    # Only workflow steps hand anything on: aborting or purging plain tasks (all
    # sixteen envelope fields written, `then` and `member` nil) adds no outbox entry.
    runs: collections.Counter[str] = collections.Counter()
    add, *_ = make_tasks(app, runs)
    handles = [await add.enqueue(i, i) for i in range(5)]
    later = await add.options(delay=60).enqueue(9, 9)
    assert await handles[0].abort() and await later.abort()
    await app.client.purge("numbers")  # the four left (and the aborted one's entry)
    outbox = app.client.broker.keys("numbers").outbox
    assert await outbox_is_empty(app, outbox)
    # A chain step aborted the same way still ends its chain.
    last = await chain(add.s(1, 2), add.s(3)).enqueue()
    assert last.parent is not None and await last.parent.abort()
    async with running_worker(app, queues=QUEUES):
        await ends_with(last, "ended aborted")
    assert runs == {}
