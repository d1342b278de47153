"""Batches of enqueues: chunks sent back to back, each message answered for.

``enqueue_many`` checks every message, then sends its chunks of 1,000 one after
another on one connection; the script answers only for the messages another
task represents (a live holder of their unique key), by position.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

import aqueue
from aqueue.task import EnqueueOptions

from .conftest import redis_server, running_worker


async def _stream_length(app: aqueue.App, queue: str) -> int:
    return int(await app.broker.client.xlen(app.broker.keys(queue).stream))


async def test_a_resent_batch_of_many_chunks_adds_nothing(app: aqueue.App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    messages = add.build_messages([(i, i) for i in range(2_500)], EnqueueOptions())
    queue = add.config.queue
    first = await app.broker.enqueue_many(queue, messages)
    # Sent again, as when the replies were lost with their connection.
    again = await app.broker.enqueue_many(queue, messages)
    assert first == again == [m.task_id for m in messages]
    assert len(set(first)) == 2_500
    assert await _stream_length(app, queue) == 2_500


async def test_unique_holders_represent_their_duplicates_across_chunks(app: aqueue.App) -> None:
    @app.task(unique=True)
    async def once(x: int) -> int:
        return x

    calls = [(i % 3,) for i in range(2_100)]  # positions past 1,000 and 2,000 too
    handles = await once.enqueue_many(calls)
    holders = {x: handles[x].id for x in range(3)}
    assert [h.id for h in handles] == [holders[x] for (x,) in calls]
    assert await _stream_length(app, once.config.queue) == 3
    async with running_worker(app):
        assert await asyncio.gather(*(handles[x] for x in range(3))) == [0, 1, 2]


async def test_a_represented_message_with_limits_keeps_the_next_ones_whole(
    app: aqueue.App,
) -> None:
    """A message's limits follow its payload in the batch's blob: skipping one that a
    unique holder represents must skip its limits too, or the next message's bytes
    are read from the wrong place."""

    @app.task(unique=True, rate_limit="1000/s")
    async def limited(x: str) -> str:
        return x

    handles = await limited.enqueue_many([("a",), ("a",), ("b" * 50,), ("c",)])
    assert handles[0].id == handles[1].id
    assert len({h.id for h in handles}) == 3
    async with running_worker(app):
        values = await asyncio.wait_for(asyncio.gather(*handles), 30)
    assert values == ["a", "a", "b" * 50, "c"]


async def test_a_batch_survives_lost_scripts_and_killed_connections() -> None:
    """The chunks go out back to back over the direct line: after SCRIPT FLUSH they
    are sent again once the script is loaded, and on a connection Redis dropped
    while it was idle they are sent again on a fresh one; every message once."""
    with redis_server() as server:
        async with aqueue.App(server.url, prefix="batches") as app:

            @app.task
            async def add(x: int, y: int) -> int:
                return x + y

            await add.enqueue_many([(0, 0)] * 10)  # the line now holds an idle connection
            admin = redis.Redis.from_url(server.url)
            try:
                admin.script_flush()
                first = await add.enqueue_many([(i, i) for i in range(2_500)])
                assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
                second = await add.enqueue_many([(i, i) for i in range(2_500)])
                ids = {h.id for h in first + second}
                assert len(ids) == 5_000
                stream = app.broker.keys(add.config.queue).stream
                assert admin.xlen(stream) == 5_010
            finally:
                admin.close()


async def test_an_enqueue_whose_reply_was_lost_is_sent_again_under_the_same_id(
    app: aqueue.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task
    async def noop(n: int) -> int:
        return n

    broker = app.client.broker
    send = broker._send_messages
    lost: dict[str, int] = {}

    async def replies_lost_twice(queue: str, messages: Any) -> list[str]:
        ids = await send(queue, messages)  # it reached Redis...
        if lost.setdefault(messages[0].task_id, 0) < 2:
            lost[messages[0].task_id] += 1  # ...and its reply did not come back
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return ids

    monkeypatch.setattr(broker, "_send_messages", replies_lost_twice)
    handle = await noop.enqueue(1)  # a drawn id: the resends carry it
    batch = await noop.enqueue_many([(2,), (3,)])
    assert list(lost.values()) == [2, 2]
    stream = broker.keys("default").stream
    assert await broker.client.xlen(stream) == 3
    assert await handle.status() == aqueue.TaskStatus.QUEUED
    assert len({h.id for h in [handle, *batch]}) == 3
