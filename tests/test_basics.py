"""Round trips through a real Redis and an in-process worker."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest

import aqueue
from aqueue import TaskStatus

from .conftest import running_worker


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    amount: Decimal
    placed: datetime


async def test_int_round_trip(app: aqueue.App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    async with running_worker(app):
        result = await add.enqueue(1, 2)
        assert await result == 3
        assert await result.get(timeout=5) == 3
        assert await result.status() is TaskStatus.SUCCEEDED


async def test_typed_arguments_and_results(app: aqueue.App) -> None:
    @app.task
    async def move(p: Point, by: int, label: str) -> Point:
        assert isinstance(p, Point)
        return Point(p.x + by, p.y + by)

    @app.task
    async def later(when: datetime, order: Order) -> tuple[datetime, Order]:
        assert isinstance(when, datetime) and isinstance(order, Order)
        assert isinstance(order.id, uuid.UUID) and isinstance(order.amount, Decimal)
        return when + timedelta(days=1), order

    when = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    order = Order(uuid.uuid4(), Decimal("12.50"), when)
    async with running_worker(app):
        assert await (await move.enqueue(Point(1, 2), 3, label="a")) == Point(4, 5)
        next_day, back = await (await later.enqueue(when, order))
    assert next_day == datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert back == order


async def test_plain_def_runs_in_a_thread(app: aqueue.App) -> None:
    import threading

    main = threading.get_ident()

    @app.task
    def where(n: int) -> bool:
        return threading.get_ident() != main and n == 7

    async with running_worker(app, threads=2):
        assert await (await where.enqueue(7)) is True


async def test_failure_travels_as_data(app: aqueue.App) -> None:
    @app.task
    async def explode(text: str) -> None:
        raise ValueError(f"bad value: {text}")

    async with running_worker(app):
        result = await explode.enqueue("x")
        with pytest.raises(aqueue.TaskFailed) as info:
            await result
    err = info.value
    assert err.exc_type == "ValueError"
    assert err.message == "bad value: x"
    assert "raise ValueError" in err.traceback and "explode" in err.traceback
    assert await result.status() is TaskStatus.FAILED


async def test_custom_task_id_and_result_by_id(app: aqueue.App) -> None:
    @app.task(queue="high")
    async def add(x: int, y: int) -> int:
        return x + y

    other = aqueue.App(app.settings.redis_url, prefix=app.settings.prefix)
    other.task(name=add.name, queue="high")(add.fn)
    async with running_worker(app):
        r = await add.options(task_id="invoice-42").enqueue(2, 3)
        assert r.id == "invoice-42"
        # Another App (as in another process) finds it by id alone.
        assert await other.result("invoice-42") == 5
        assert await other.result("invoice-42").status() is TaskStatus.SUCCEEDED
    await other.close()


async def test_timeout_while_running_then_value(app: aqueue.App) -> None:
    @app.task
    async def slow() -> str:
        await asyncio.sleep(1.0)
        return "done"

    async with running_worker(app):
        result = await slow.enqueue()
        with pytest.raises(aqueue.ResultTimeout):
            await result.get(timeout=0.2)
        with pytest.raises(TimeoutError):  # it is a TimeoutError too
            await result.get(timeout=0.05)
        assert await result.status() is TaskStatus.RUNNING
        assert await result.get(timeout=5) == "done"


async def test_statuses(app: aqueue.App) -> None:
    gate = asyncio.Event()

    @app.task
    async def wait_for_gate() -> int:
        await gate.wait()
        return 1

    assert await app.result("no-such-task").status() is TaskStatus.UNKNOWN
    result = await wait_for_gate.enqueue()
    assert await result.status() is TaskStatus.QUEUED
    async with running_worker(app):

        async def running() -> bool:
            return await result.status() is TaskStatus.RUNNING

        from .conftest import wait_until

        await wait_until(running)
        gate.set()
        assert await result == 1
    assert await result.status() is TaskStatus.SUCCEEDED


async def test_unserializable_argument_enqueues_nothing(app: aqueue.App) -> None:
    @app.task
    async def takes(obj: object) -> None:
        return None

    with pytest.raises(aqueue.SerializationError, match="msgspec"):
        await takes.enqueue(object())
    with pytest.raises(aqueue.SerializationError):
        await takes.enqueue_many([(1,), (object(),)])
    stream = app.broker.keys(takes.config.queue).stream
    assert await app.broker.client.exists(stream) == 0


async def test_wrong_arity_rejected_at_enqueue(app: aqueue.App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(aqueue.EnqueueError, match="missing a required argument"):
        await add.enqueue(1)  # type: ignore[call-arg]


async def test_enqueue_many_ten_thousand(app: aqueue.App) -> None:
    @app.task
    async def square(x: int) -> int:
        return x * x

    results = await square.enqueue_many([(i,) for i in range(10_000)])
    assert len(results) == 10_000 and len({r.id for r in results}) == 10_000
    stream = app.broker.keys(square.config.queue).stream
    assert await app.broker.client.xlen(stream) == 10_000
    async with running_worker(app, concurrency=200):
        values = await asyncio.wait_for(asyncio.gather(*results), 60)
    assert values == [i * i for i in range(10_000)]
    assert await app.broker.client.xlen(stream) == 0  # acknowledged and removed


async def test_concurrent_enqueues_are_coalesced(app: aqueue.App) -> None:
    @app.task
    async def echo(x: int) -> int:
        return x

    results = await asyncio.gather(*(echo.enqueue(i) for i in range(500)))
    async with running_worker(app):
        assert await asyncio.gather(*results) == list(range(500))


async def test_task_call_in_enqueue_many(app: aqueue.App) -> None:
    @app.task
    async def greet(name: str, punctuation: str = "!") -> str:
        return f"hi {name}{punctuation}"

    results = await greet.enqueue_many([greet.call("a"), greet.call("b", punctuation="?")])
    async with running_worker(app):
        assert [await r for r in results] == ["hi a!", "hi b?"]


async def test_result_ttl(redis_url: str, prefix: str) -> None:
    app = aqueue.App(redis_url, prefix=prefix, result_ttl=1)

    @app.task
    async def one() -> int:
        return 1

    async with running_worker(app):
        result = await one.enqueue()
        assert await result == 1
    ttl = await app.broker.client.pttl(app.broker.keys("default").task(result.id))
    assert 0 < ttl <= 1000
    await asyncio.sleep(1.2)
    assert await result.status() is TaskStatus.UNKNOWN
    await app.close()


async def test_results_wake_many_waiters_on_one_subscription(app: aqueue.App) -> None:
    @app.task
    async def echo(x: int) -> int:
        await asyncio.sleep(0.05)
        return x

    results = await echo.enqueue_many([(i,) for i in range(300)])
    async with running_worker(app):
        assert await asyncio.gather(*results) == list(range(300))
    client = app.broker.client
    # One pub/sub connection per process, however many waiters there were.
    clients = await client.client_list()
    subscribers = [c for c in clients if int(c.get("sub", 0)) > 0 and "done" not in c["cmd"]]
    assert len([c for c in subscribers if c["cmd"] in ("subscribe", "ping")]) <= 3


async def test_send_task_by_name(app: aqueue.App) -> None:
    @app.task(name="reports.build")
    async def build(report: str, pages: int = 1) -> str:
        return f"{report}:{pages}"

    with pytest.raises(aqueue.UnknownTask, match=r"did you mean 'reports\.build'"):
        await app.send_task("reports.biuld", ["weekly"])
    async with running_worker(app):
        r = await app.send_task("reports.build", ["weekly"], {"pages": 3}, task_id="w-1")
        assert r.id == "w-1"
        assert await r.get(timeout=10) == "weekly:3"
