"""The test kit's assertion helpers fail with a readable diff (real redis-server)."""

from __future__ import annotations

import msgspec
import pytest

import aqueue
from aqueue.testing import TestWorker


class Order(msgspec.Struct):
    id: int
    items: list[str]
    total: float


def make_tasks(app: aqueue.App) -> tuple[aqueue.Task, aqueue.Task]:  # type: ignore[type-arg]
    @app.task(name="shop.add")
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="shop.place", retries=0)
    async def place(order: Order) -> str:
        if order.total < 0:
            raise ValueError("negative total")
        return f"order {order.id}"

    return add, place


async def test_assert_enqueued_shows_the_closest_call_as_a_diff(app: aqueue.App) -> None:
    add, place = make_tasks(app)
    worker = TestWorker(app)
    await add.enqueue(1, 2)
    await add.enqueue(10, 20)
    await place.enqueue(Order(7, ["tea", "cake"], 9.5))
    assert (await worker.assert_enqueued(add, 10, 20)).args == (10, 20)
    assert (await worker.assert_enqueued(add, x=10, y=20)).args == (10, 20)
    with pytest.raises(AssertionError) as failed:
        await worker.assert_enqueued(add, 1, 3)
    message = str(failed.value)
    print(message)
    assert "expected shop.add(1, 3) in queue 'default'" in message
    assert "  - shop.add(1, 3)" in message and "  + shop.add(1, 2)" in message
    assert "?" in message  # the marker line under the differing character
    with pytest.raises(AssertionError) as failed:
        await worker.assert_enqueued(place, Order(7, ["tea", "scone"], 9.5))
    message = str(failed.value)
    print(message)
    assert "- shop.place(Order(id=7, items=['tea', 'scone'], total=9.5))" in message
    assert "+ shop.place(Order(id=7, items=['tea', 'cake'], total=9.5))" in message


async def test_assert_enqueued_calls_gives_a_line_diff(app: aqueue.App) -> None:
    add, _ = make_tasks(app)
    worker = TestWorker(app)
    for x in (1, 2, 3):
        await add.enqueue(x, x)
    await worker.assert_enqueued_calls(add, [(1, 1), (2, 2), (3, 3)])
    with pytest.raises(AssertionError) as failed:
        await worker.assert_enqueued_calls(add, [(1, 1), (2, 5), (3, 3)])
    message = str(failed.value)
    print(message)
    assert "-shop.add(2, 5)" in message and "+shop.add(2, 2)" in message
    assert " shop.add(1, 1)" in message  # context lines kept


async def test_assert_ran_and_assert_values(app: aqueue.App) -> None:
    add, place = make_tasks(app)
    worker = TestWorker(app)
    await add.enqueue(1, 2)
    await place.enqueue(Order(1, [], -1.0))
    await worker.run_until_idle()
    assert worker.assert_ran(add, 1, 2).value == 3
    worker.assert_values(add, [3])
    with pytest.raises(AssertionError) as failed:
        worker.assert_ran(place, Order(1, [], -1.0))
    message = str(failed.value)
    print(message)
    assert "failed (ValueError: negative total)" in message
    assert "- shop.place(Order(id=1, items=[], total=-1.0)) -> succeeded" in message
    assert "+ shop.place(Order(id=1, items=[], total=-1.0)) -> failed" in message
    with pytest.raises(AssertionError) as failed:
        worker.assert_values(add, [4])
    message = str(failed.value)
    print(message)
    assert "-4" in message and "+3" in message
    with pytest.raises(AssertionError, match=r"\(no run of it\)"):
        TestWorker(app).assert_ran(add, 5, 5)
    # Arguments compare however they were passed.
    assert worker.assert_ran(add, 1, y=2).value == 3
