"""Every delivery passes one door before it runs (issue 11, attack items 1, 2, 12).

A copy of a signed message XADDed under its own id or another task's id, a
task id that is not text, an entry that keeps being handed back: each ends in
the dead-letter stream with its reason, runs nothing, marks no other task, and
the worker stays up. Real worker processes, exact counts.
"""

from __future__ import annotations

import asyncio
import signal

import redis

from aqueue import TaskStatus
from aqueue.core.keys import QueueKeys

from ..conftest import wait_until
from .conftest import Counts, Workers, producer, report

KEY = "door-signing-key"
ENV = {
    "AQUEUE_SIGNING_KEY": KEY,
    "AQUEUE_HEARTBEAT_INTERVAL": "0.5",
    "AQUEUE_DEAD_WORKER_AFTER": "1",
    "AQUEUE_MAX_DELIVERIES": "2",
}


def _dead(client: redis.Redis, prefix: str) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in client.xrange(f"{prefix}:{{default}}:dead")]


async def test_replayed_signed_messages_never_run_again(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    client = redis.Redis.from_url(redis_url)
    stream = f"{prefix}:{{default}}:stream"
    async with producer(redis_url, prefix, signing_key=KEY) as app:
        mark = app.tasks["faults.mark"]
        # Enqueued before any worker runs: the attacker's copy of the signed entry.
        first = await mark.enqueue("a")
        other = await mark.enqueue("b")
        copied = {
            fields[b"id"].decode(): fields[b"m"] for _id, fields in client.xrange(stream, "-", "+")
        }
        assert set(copied) == {first.id, other.id}
        worker = workers.start("-c", "4", **ENV)
        assert await asyncio.wait_for(first.get(), 20) == 1
        assert await asyncio.wait_for(other.get(), 20) == 1

        # 1. Five replays under the task's own id.
        for _ in range(5):
            client.xadd(stream, {"id": first.id, "m": copied[first.id]})
        # 2. The same signed message filed under another (finished) task's id.
        client.xadd(stream, {"id": other.id, "m": copied[first.id]})
        # 3. ... and under another task's id, pending for a consumer that is gone,
        # so the worker's own recovery of unacknowledged entries claims it.
        client.xadd(stream, {"id": other.id, "m": copied[first.id]})
        client.xreadgroup("aqueue", "ghost-consumer", {stream: ">"}, count=1)
        await wait_until(lambda: len(_dead(client, prefix)) == 7, 30)

        reasons = sorted(f[b"reason"].decode() for f in _dead(client, prefix))
        assert reasons == ["id_mismatch"] * 2 + ["replayed"] * 5
        assert counts.started(["a", "b"]) == [1, 1]
        # The other task is still SUCCEEDED, with its TTL: never RUNNING again.
        assert await other.status() is TaskStatus.SUCCEEDED
        assert client.ttl(QueueKeys(prefix, "default").task(other.id)) > 0
        assert client.hget(QueueKeys(prefix, "default").task(other.id), "attempt") == b"1"
        assert await first.status() is TaskStatus.SUCCEEDED
        # Nothing is left pending to be re-claimed for ever.
        assert client.xpending(stream, "aqueue")["pending"] == 0
        # A legitimate new run of a finished id goes through enqueue and runs.
        again = await mark.options(task_id=first.id).enqueue("a")
        assert await asyncio.wait_for(again.get(), 20) == 1
        assert counts.started(["a"]) == [2]
        assert worker.alive
        out = worker.output()
        assert out.count("dead-lettered as it was delivered: replayed") == 5
        assert out.count("dead-lettered as it was delivered: id_mismatch") == 2
        report("replayed signed messages", replays=7, ran=0, dead_lettered=7, worker_exits=0)


async def test_a_task_id_that_is_not_text_is_dead_lettered_alone(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    client = redis.Redis.from_url(redis_url)
    stream = f"{prefix}:{{default}}:stream"
    async with producer(redis_url, prefix, signing_key=KEY) as app:
        mark = app.tasks["faults.mark"]
        model = await mark.enqueue("x")
        payload = client.xrange(stream, "-", "+")[0][1][b"m"]
        client.xadd(stream, {"id": b"\xff\xfe-not-text", "m": payload})
        client.xadd(stream, {"id": b"\xc3", "m": b"\x93\x01\xa1z"})
        after = [await mark.enqueue(f"after{i}") for i in range(10)]
        worker = workers.start("-c", "4", **ENV)
        for handle in [model, *after]:
            assert await asyncio.wait_for(handle.get(), 20) == 1
        await wait_until(lambda: len(_dead(client, prefix)) == 2, 20)
        assert {f[b"reason"] for f in _dead(client, prefix)} == {b"bad_task_id"}
        assert counts.started(["x", *(f"after{i}" for i in range(10))]) == [1] * 11
        await asyncio.sleep(1)
        assert worker.alive
        assert "Traceback" not in worker.output()
        assert worker.output().count("dead-lettered as it was delivered: bad_task_id") == 2
        report("non-UTF-8 task id", entries=2, dead_lettered=2, worker_exits=0, others_done=11)


async def test_a_hand_back_keeps_the_delivery_count(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    """A message handed back by every worker that runs it (here: each stopped
    while it runs) ends dead-lettered after max_deliveries, not cycled for ever."""
    client = redis.Redis.from_url(redis_url)
    async with producer(redis_url, prefix, signing_key=KEY) as app:
        handle = await app.tasks["faults.mark"].enqueue("long", 60.0)
        exits = []
        for run in range(1, 3):
            worker = workers.start("-c", "2", "--grace-period", "0.5", **ENV)
            await wait_until(lambda run=run: counts.started(["long"]) == [run], 30)
            worker.signal(signal.SIGTERM)
            exits.append(worker.wait(30))
            assert "1 handed back" in worker.output()
        # The third delivery is over max_deliveries=2: dead-lettered, not run.
        worker = workers.start("-c", "2", **ENV)
        await wait_until(lambda: len(_dead(client, prefix)) == 1, 30)
        assert _dead(client, prefix)[0][b"reason"] == b"max_deliveries"
        assert await handle.status() is TaskStatus.DEAD
        await asyncio.sleep(1)
        assert counts.started(["long"]) == [2]
        assert exits == [0, 0]
        assert worker.alive
        report("hand-back counted", deliveries=3, ran=2, dead_lettered=1, worker_exits=0)
