"""Argument types are checked at the door: ``enqueue()``, ``delay()`` and ``aqueue enqueue``
refuse what the worker would refuse, name the parameter, and enqueue nothing."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

import aqueue

from .conftest import running_worker


@dataclasses.dataclass
class Point:
    x: int
    y: int


async def _stream_length(app: aqueue.App, queue: str) -> int:
    return int(await app.broker.client.xlen(app.broker.keys(queue).stream))


async def test_enqueue_refuses_a_wrong_type_naming_the_parameter(app: aqueue.App) -> None:
    @app.task
    async def slow_add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def place(p: Point, when: datetime.datetime, *, tags: list[str] | None = None) -> int:
        return p.x

    before = await _stream_length(app, "default")
    with pytest.raises(aqueue.EnqueueError, match=r"argument 'x': expected `int`, got `str`"):
        await slow_add.enqueue("a", 2)  # type: ignore[arg-type]
    with pytest.raises(aqueue.EnqueueError, match=r"argument 'y': expected `int`, got `str`"):
        await slow_add.enqueue(1, y="b")  # type: ignore[arg-type]
    with pytest.raises(aqueue.EnqueueError, match=r"argument 'p' \(at p.x\)"):
        await place.enqueue({"x": "no", "y": 1}, datetime.datetime.now())  # type: ignore[arg-type]
    with pytest.raises(aqueue.EnqueueError, match=r"argument 'tags' \(at tags\[0\]\)"):
        await place.enqueue(Point(1, 2), datetime.datetime.now(), tags=[1])  # type: ignore[list-item]
    assert await _stream_length(app, "default") == before

    # What the worker accepts passes, and runs.
    ok = await place.enqueue({"x": 3, "y": 4}, "2026-01-01T00:00:00Z")  # type: ignore[arg-type]
    async with running_worker(app, concurrency=2):
        assert await ok.get(timeout=10) == 3


async def test_delay_refuses_a_wrong_type(app: aqueue.App) -> None:
    @app.task
    async def slow_add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(aqueue.EnqueueError, match=r"argument 'x'"):
        slow_add.delay("x", 1)  # type: ignore[arg-type]
    assert await _stream_length(app, "default") == 0


async def test_the_check_can_be_turned_off_per_task(app: aqueue.App) -> None:
    @app.task(check_arguments=False)
    async def hot(x: int) -> int:
        return x

    await hot.enqueue("not checked here")  # type: ignore[arg-type]
    assert await _stream_length(app, "default") == 1
