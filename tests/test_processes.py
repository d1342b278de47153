"""executor="process": CPU-bound def tasks in task processes that timeouts and aborts kill."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

import aqueue
from aqueue import TaskAborted, TaskFailed
from aqueue.core.errors import ConfigError

from .conftest import start_cli_worker, wait_until


@dataclass
class Point:
    x: int
    y: int


def _centroid(points: list[Point], when: datetime) -> tuple[Point, datetime, int]:
    raise AssertionError("runs on the worker")  # ops_app.centroid's signature


def _spin(key: str) -> int:
    raise AssertionError("runs on the worker")


def _picky(n: int) -> int:
    raise AssertionError("runs on the worker")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().split(") ")[1].split()[1])


async def _pids(redis_url: str, prefix: str, key: str) -> list[int]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [int(v) for v in await client.lrange(f"{prefix}:ran:{key}", 0, -1)]
    finally:
        await client.aclose()


@pytest.fixture
async def producer(redis_url: str, prefix: str) -> aqueue.App:
    app = aqueue.App(redis_url, prefix=prefix)
    app.task(name="ops_app.centroid", executor="process")(_centroid)
    app.task(name="ops_app.spin", executor="process", timeout=1.0)(_spin)
    app.task(name="ops_app.picky", executor="process")(_picky)
    yield app  # type: ignore[misc]
    await app.close()


async def test_process_task_round_trips_typed_values_and_kills_on_timeout_and_abort(
    redis_url: str, prefix: str, producer: aqueue.App
) -> None:
    centroid = producer.tasks["ops_app.centroid"]
    spin = producer.tasks["ops_app.spin"]
    worker = start_cli_worker(redis_url, prefix, "ops_app:app", "-c", "4", "--task-processes", "1")
    try:
        when = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
        r = await centroid.enqueue([Point(1, 2), Point(3, 4)], when)
        middle, stamp, pid = await r.get(timeout=60)
        # Typed on the way in (the task process decoded dataclasses and a datetime
        # from the wire bytes) and on the way out.
        assert middle == Point(2, 3) and isinstance(middle, Point)
        assert stamp == when
        # It ran in a task process of the worker, not in the worker itself.
        assert pid != worker.pid and _parent(pid) == worker.pid

        # A CPU loop with timeout=1: the process is killed, the task fails as timed out.
        looping = await spin.enqueue("timeout")
        with pytest.raises(TaskFailed) as failed:
            await looping.get(timeout=60)
        assert failed.value.exc_type == "TimeoutError"
        assert "its process was killed" in failed.value.message
        [spun] = await _pids(redis_url, prefix, "timeout")
        assert spun == pid  # one task process, reused until it had to be killed
        await wait_until(lambda: not _alive(spun), timeout=10)

        # An abort kills the process too.
        aborted = await spin.options(timeout=120).enqueue("abort")
        await wait_until(lambda: _pids(redis_url, prefix, "abort"), timeout=60)
        [victim] = await _pids(redis_url, prefix, "abort")
        assert _alive(victim)
        assert await aborted.abort()
        with pytest.raises(TaskAborted):
            await aborted.get(timeout=30)
        await wait_until(lambda: not _alive(victim), timeout=10)

        # A fresh process replaces a killed one: the pool still runs tasks.
        again = await centroid.enqueue([Point(0, 0), Point(2, 2)], when)
        middle, _, fresh = await again.get(timeout=60)
        assert middle == Point(1, 1)
        assert fresh not in (spun, victim) and _parent(fresh) == worker.pid
    finally:
        worker.terminate()
        out = await asyncio.to_thread(worker.communicate, timeout=60)
    assert worker.returncode == 0, out[0].decode()[-3000:]


async def test_process_task_failures_and_retries(
    redis_url: str, prefix: str, producer: aqueue.App
) -> None:
    picky = producer.tasks["ops_app.picky"]
    worker = start_cli_worker(redis_url, prefix, "ops_app:app")
    try:
        assert await (await picky.enqueue(21)).get(timeout=60) == 42
        # ValueError is in retry_on: one retry, then the failure, with its type and traceback.
        negative = await picky.enqueue(-1)
        with pytest.raises(TaskFailed) as failed:
            await negative.get(timeout=60)
        assert failed.value.exc_type == "ValueError"
        assert "negative: -1" in failed.value.message
        assert "raise ValueError" in failed.value.traceback
        assert (await negative.info()).attempt == 2
        # KeyError is not: it fails at once.
        zero = await picky.enqueue(0)
        with pytest.raises(TaskFailed) as failed:
            await zero.get(timeout=60)
        assert failed.value.exc_type == "KeyError"
        assert (await zero.info()).attempt == 1
    finally:
        worker.terminate()
        out = await asyncio.to_thread(worker.communicate, timeout=60)
    assert worker.returncode == 0, out[0].decode()[-3000:]


def test_process_executor_refuses_what_it_cannot_run(app: aqueue.App) -> None:
    async def coroutine() -> None:
        return None

    with pytest.raises(ConfigError, match="plain def"):
        app.task(name="a", executor="process")(coroutine)

    def local(n: int) -> int:
        return n

    with pytest.raises(ConfigError, match="top level"):
        app.task(name="b", executor="process")(local)
    with pytest.raises(ConfigError, match="executor must be"):
        app.task(name="c", executor="fork")(_picky)  # type: ignore[arg-type]
    # The registry is unchanged by refused declarations.
    assert "a" not in app.tasks and "b" not in app.tasks and "c" not in app.tasks


async def test_task_process_ends_with_a_sigkilled_worker(
    redis_url: str, prefix: str, producer: aqueue.App
) -> None:
    spin = producer.tasks["ops_app.spin"]
    worker = start_cli_worker(redis_url, prefix, "ops_app:app")
    try:
        await spin.options(timeout=600).enqueue("orphan")
        await wait_until(lambda: _pids(redis_url, prefix, "orphan"), timeout=60)
        [busy] = await _pids(redis_url, prefix, "orphan")
        assert _alive(busy)
    finally:
        worker.kill()
        await asyncio.to_thread(worker.communicate, timeout=60)
    # Busy in a CPU loop it never reads its pipe, yet it leaves with its worker.
    await wait_until(lambda: not _alive(busy), timeout=15)


async def test_sigterm_hands_a_process_task_back_and_kills_its_process(
    redis_url: str, prefix: str, producer: aqueue.App
) -> None:
    spin = producer.tasks["ops_app.spin"]
    worker = start_cli_worker(redis_url, prefix, "ops_app:app", "--grace-period", "1")
    try:
        looping = await spin.options(timeout=600).enqueue("sigterm")
        await wait_until(lambda: _pids(redis_url, prefix, "sigterm"), timeout=60)
        [busy] = await _pids(redis_url, prefix, "sigterm")
        worker.terminate()
        out = await asyncio.to_thread(worker.communicate, timeout=60)
        assert worker.returncode == 0, out[0].decode()[-3000:]
        # Unlike a thread, the process was stopped: the task is handed back at once.
        assert not _alive(busy)
        assert await looping.status() is aqueue.TaskStatus.QUEUED
        assert b"1 handed back" in out[0]
    finally:
        if worker.returncode is None:
            worker.kill()
            worker.wait(30)
    assert await looping.abort()
