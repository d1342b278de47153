"""Bad input never kills a worker and is never silently dropped."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
import redis

import aqueue
from aqueue import TaskStatus
from aqueue.core.protocol import WIRE_VERSION, Envelope, OutgoingMessage, encode_envelope

from ..conftest import wait_until
from .conftest import Counts, Workers, elapsed_since, producer, report

ENV = {
    "AQUEUE_HEARTBEAT_INTERVAL": "0.5",
    "AQUEUE_DEAD_WORKER_AFTER": "1",
    "AQUEUE_MAX_DELIVERIES": "2",
}


def _envelope(task_id: str, task: str, args: list[object]) -> bytes:
    return encode_envelope(
        Envelope(
            v=WIRE_VERSION,
            id=task_id,
            task=task,
            args=msgspec.Raw(msgspec.msgpack.encode(args)),
            kwargs=msgspec.Raw(msgspec.msgpack.encode({})),
            queue="default",
            enqueued_at=time.time(),
        )
    )


async def _dead_reasons(app: aqueue.App) -> dict[str, str]:
    return {d.task_id: d.reason for d in await app.dead_letters()}


async def test_poison_messages_are_dead_lettered_and_the_worker_keeps_going(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    worker = workers.start("-c", "10", **ENV)
    client = redis.Redis.from_url(redis_url)
    stream = f"{prefix}:{{default}}:stream"
    async with producer(redis_url, prefix) as app, producer(redis_url, prefix) as other:

        @other.task(name="faults.not_on_the_worker")
        async def not_on_the_worker() -> None: ...

        mark = app.tasks["faults.mark"]
        before = [await mark.enqueue(f"good{i}") for i in range(5)]

        # Garbage bytes straight into the stream.
        client.xadd(stream, {"id": "garbage-1", "m": b"\xc1\xff\x00 not msgpack"})
        # An entry without aqueue's fields at all.
        fieldless = client.xadd(stream, {"junk": "1"}).decode()
        # A task the worker doesn't have.
        unknown = await not_on_the_worker.enqueue()
        # Arguments that don't fit the signature ("abc" for an int).
        await app.broker.enqueue(
            "default",
            OutgoingMessage(
                "badargs-1", "faults.takes_int", _envelope("badargs-1", "faults.takes_int", ["abc"])
            ),
        )
        # Over the size limit: refused at enqueue, nothing reaches Redis.
        small = producer(redis_url, prefix, max_payload_bytes=1000)
        length = client.xlen(stream)
        with pytest.raises(aqueue.PayloadTooLarge):
            await small.tasks["faults.mark"].options(task_id="big-1").enqueue("x" * 5000)
        await small.close()
        assert client.xlen(stream) == length
        assert not client.exists(f"{prefix}:{{default}}:task:big-1")

        after = [await mark.enqueue(f"good{i}") for i in range(5, 10)]
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in before + after)), 30)
        await wait_until(lambda: client.xlen(f"{prefix}:{{default}}:dead") >= 4, 30)

        reasons = await _dead_reasons(app)
        assert reasons == {
            "garbage-1": "undecodable",
            unknown.id: "unknown_task",
            "badargs-1": "bad_arguments",
            fieldless: "undecodable",  # no task id: the entry id stands in
        }
        for task_id in ("garbage-1", unknown.id, "badargs-1"):
            assert await app.result(task_id).status() is TaskStatus.DEAD
        with pytest.raises(aqueue.TaskDead):
            await asyncio.wait_for(unknown.get(), 10)
        assert worker.alive
        assert counts.done([f"good{i}" for i in range(10)]) == [1] * 10
        report("poison_input", poison=5, good=10, lost=0, worker_alive=worker.alive)


async def test_task_that_kills_its_worker_ends_in_the_dead_stream(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    async with producer(redis_url, prefix) as app:
        handle = await app.tasks["faults.kill_own_worker"].enqueue("boom")
        began = time.monotonic()
        deaths = 0
        deadline = time.monotonic() + 60
        while await handle.status() is not TaskStatus.DEAD:
            assert time.monotonic() < deadline, "never dead-lettered"
            if not any(w.alive for w in workers.started):
                if workers.started:
                    deaths += 1
                workers.start("-c", "4", **ENV)
            await asyncio.sleep(0.1)
        dead_after = elapsed_since(began)
        [letter] = await app.dead_letters()
        assert letter.task_id == handle.id and letter.reason == "max_deliveries"
        assert letter.task_name == "faults.kill_own_worker"
        # Every delivery up to the limit ran (and crashed its worker); no more.
        assert counts.started(["boom"]) == [2]
        assert deaths == 2
        # The worker that dead-lettered it is alive and still works.
        survivor = workers.started[-1]
        good = await app.tasks["faults.mark"].enqueue("after")
        assert await asyncio.wait_for(good.get(), 20) == 1
        assert survivor.alive
        report(
            "poison_kills_worker",
            tasks=1,
            workers_killed=deaths,
            executions=counts.started(["boom"])[0],
            dead_lettered_after_s=dead_after,
        )


async def test_base_exceptions_from_task_code_fail_the_task_not_the_worker(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    worker = workers.start("-c", "1", **ENV)  # one slot: a leaked one would stop everything
    async with producer(redis_url, prefix) as app:
        raise_base = app.tasks["faults.raise_base"]
        for kind, type_name in (
            ("custom", "faults.Bail"),
            ("keyboard", "KeyboardInterrupt"),
            ("exit", "SystemExit"),
            ("cancel", "asyncio.exceptions.CancelledError"),
        ):
            handle = await raise_base.enqueue(kind)
            with pytest.raises(aqueue.TaskFailed) as caught:
                await asyncio.wait_for(handle.get(), 20)
            assert caught.value.exc_type == type_name
            assert await handle.status() is TaskStatus.FAILED
        after = await app.tasks["faults.mark"].enqueue("after")
        assert await asyncio.wait_for(after.get(), 20) == 1
        assert worker.alive
