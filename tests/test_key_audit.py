"""Every key aqueue writes has a TTL or a bound (issue 11, attack item 12).

A mixed workload runs on a private Redis: success, failure, retry, abort
(queued and running), a dead letter, a unique task, a periodic task, a
streaming task, a chain, a chord and a delayed task. Then every key in the
server is audited: each one either expires, or is one of the keys whose size
is bounded by what is still to do (docs/reliability.md lists them), and the
bound is checked here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis

import aqueue
from aqueue import TaskStatus
from aqueue.canvas import chain
from aqueue.core.keys import QueueKeys, queue_registry_key
from aqueue.core.protocol import WIRE_VERSION, Envelope, encode_envelope
from aqueue.groups import chord, group

from .conftest import redis_server, running_worker, wait_until

DEAD_MAXLEN = 50


@pytest.fixture
async def private() -> AsyncIterator[tuple[aqueue.App, redis.Redis]]:
    with redis_server() as srv:
        app = aqueue.App(
            srv.url,
            prefix="audit",
            dead_letter_maxlen=DEAD_MAXLEN,
            heartbeat_interval=0.5,
            dead_worker_after=1.0,
        )
        client = redis.Redis(port=srv.port)
        try:
            yield app, client
        finally:
            await app.close()
            client.close()


async def test_every_key_has_a_ttl_or_a_bound(private: tuple[aqueue.App, redis.Redis]) -> None:
    app, client = private
    ticks: list[int] = []

    @app.task
    async def ok(x: int) -> int:
        return x * 2

    @app.task
    async def boom() -> None:
        raise ValueError("no")

    attempts: dict[str, int] = {}

    @app.task(retries=2, retry_delay=0.05)
    async def flaky(key: str) -> str:
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] < 2:
            raise aqueue.Retry(delay=0.05)
        return key

    @app.task
    async def slow(seconds: float) -> None:
        await asyncio.sleep(seconds)

    @app.task
    async def typed(n: int) -> int:
        return n

    @app.task(unique=True)
    async def once(x: int) -> int:
        return x

    @app.task
    async def words(n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield f"w{i}"

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def total(values: list[int]) -> int:
        return sum(values)

    @app.periodic(every=1)
    async def tick() -> None:
        ticks.append(1)

    async with running_worker(app, concurrency=20):
        assert await (await ok.enqueue(2)).get(timeout=10) == 4
        with pytest.raises(aqueue.TaskFailed):
            await (await boom.enqueue()).get(timeout=10)
        assert await (await flaky.enqueue("r")).get(timeout=10) == "r"
        running = await slow.enqueue(30)
        await wait_until(_status_is(running, TaskStatus.RUNNING), 10)
        assert await running.abort()
        queued = await slow.options(delay=60).enqueue(1)
        assert await queued.abort()
        # Dead letters: a message the worker can't decode, and a message filed
        # under another task's id (it must leave no record of that id behind).
        stream = QueueKeys("audit", "default").stream
        client.xadd(stream, {"id": "bad-1", "m": b"\xc1garbage"})
        client.xadd(stream, {"id": "ghost", "m": _envelope("real-id", ok.name, [1])})
        u1 = await once.enqueue(7)
        assert await u1.get(timeout=10) == 7
        streamed = await words.enqueue(5)
        assert [w async for w in streamed.stream()] == [f"w{i}" for i in range(5)]
        assert await (await chain(add.s(1, 2), add.s(10)).enqueue()).get(timeout=10) == 13
        c = chord(group(add.s(i, i) for i in range(5)), total)
        assert await (await c.enqueue()).get(timeout=15) == 20
        later = await ok.options(delay=0.3).enqueue(5)
        assert await later.get(timeout=10) == 10
        await wait_until(lambda: len(ticks) >= 1, 10)
        with pytest.raises(aqueue.TaskFailed):
            await running.get(timeout=10)
        await wait_until(lambda: client.xlen(QueueKeys("audit", "default").dead) >= 2, 10)
        await wait_until(lambda: client.xlen(QueueKeys("audit", "default").outbox) == 0, 10)
        assert typed  # registered only: a task known to the worker

    # The worker has left. Every key now either expires or is bounded.
    keys = QueueKeys("audit", "default")
    unbounded: list[str] = []
    bounded: dict[str, str] = {}
    for raw in client.scan_iter(match="*", count=1000):
        key = raw.decode()
        if client.pttl(key) > 0:
            continue
        bound = _bound(client, keys, key)
        if bound is None:
            unbounded.append(f"{key} ({client.type(key).decode()})")
        else:
            bounded[key] = bound
    assert unbounded == []
    assert not client.exists(keys.task("ghost"))
    # What stays without a TTL, and why (checked by _bound):
    assert set(bounded) <= {
        keys.stream,
        keys.delayed,
        keys.delayed_payloads,
        keys.dead,
        keys.outbox,
        keys.workers,
        queue_registry_key("audit"),
    } | {k for k in bounded if k.startswith((keys.task_prefix, f"{keys.base}:periodic:"))}
    assert any(k.startswith(f"{keys.base}:periodic:") for k in bounded)
    print("\nKEY-AUDIT", {k: v for k, v in sorted(bounded.items())})


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


def _status_is(handle: aqueue.AsyncResult[Any], state: TaskStatus) -> Any:
    async def check() -> bool:
        return await handle.status() is state

    return check


def _bound(client: redis.Redis, keys: QueueKeys, key: str) -> str | None:
    """Why ``key`` may live without a TTL (its bound, checked), or None."""
    if key == keys.stream:
        # Acknowledged entries are trimmed: only what waits or runs remains.
        group = {g["name"].decode(): g for g in client.xinfo_groups(key)}["aqueue"]
        assert group["pending"] == 0
        assert group["lag"] == 0
        assert client.xlen(key) <= 1
        return "stream: waiting + running entries (acknowledged ones trimmed)"
    if key == keys.delayed:
        assert client.zcard(key) == 0
        return "delayed: scheduled tasks only"
    if key == keys.delayed_payloads:
        assert client.hlen(key) == 0
        return "delayed payloads: one per scheduled task"
    if key == keys.dead:
        assert 2 <= client.xlen(key) <= DEAD_MAXLEN
        return "dead letters: capped at dead_letter_maxlen"
    if key == keys.outbox:
        assert client.xlen(key) == 0
        return "outbox: hand-offs not yet forwarded"
    if key == keys.workers:
        assert client.zcard(key) == 0
        return "workers: one member per live worker"
    if key == queue_registry_key("audit"):
        assert client.smembers(key) == {b"default"}
        return "queue registry: one member per queue name in use"
    if key.startswith(f"{keys.base}:periodic:"):
        assert client.type(key) == b"string"
        return "periodic: one tick number per schedule"
    if key.startswith(keys.task_prefix):
        state = client.hget(key, "state")
        # The worker has left: nothing runs, so no record may say RUNNING.
        assert state in (b"queued", b"scheduled", b"retrying"), (key, state)
        return "task record of a task still to run"
    return None
