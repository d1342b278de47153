"""A lone enqueue(): a plain message with no other enqueue() of its queue under way.

After the queue's first message, such a message goes straight to
``enqueue_lone.lua`` as a command packed once per queue; what goes wrong on
that short path is handled as on the long one: a lost reply is sent again
under the same id, lost scripts are loaded, anything else is said plainly.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

import aqueue

from .conftest import redis_server


async def test_a_lone_enqueue_whose_reply_was_lost_is_sent_again_under_the_same_id(
    app: aqueue.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task
    async def noop(n: int) -> int:
        return n

    await noop.enqueue(0)  # the queue's first: the short path is open from now on
    broker = app.client.broker
    call_packed = broker.direct.call_packed
    lost: list[bytes] = []

    async def replies_lost_twice(packed: bytes) -> object:
        reply = await call_packed(packed)  # it reached Redis...
        if len(lost) < 2:
            lost.append(packed)  # ...and its reply did not come back
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return reply

    monkeypatch.setattr(broker.direct, "call_packed", replies_lost_twice)
    handle = await noop.enqueue(1)
    assert len(lost) == 2
    assert handle.id.encode() in lost[0]
    assert lost[0] == lost[1]  # the same command: the same id, the same message
    assert await broker.client.xlen(broker.keys("default").stream) == 2
    assert await handle.status() == aqueue.TaskStatus.QUEUED


async def test_a_lone_enqueue_that_keeps_losing_its_connection_says_so(
    app: aqueue.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task
    async def noop() -> None:
        return None

    await noop.enqueue()
    broker = app.client.broker
    tries = 0

    async def lost(packed: bytes) -> object:
        nonlocal tries
        tries += 1
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(broker.direct, "call_packed", lost)
    with pytest.raises(aqueue.ConnectionFailed, match="Nothing was acknowledged"):
        await noop.enqueue()
    assert tries == 4  # the first send and ENQUEUE_RESENDS' three


async def test_a_lone_enqueue_after_redis_lost_its_scripts() -> None:
    with redis_server() as server:
        async with aqueue.App(server.url, prefix="lone") as app:

            @app.task
            async def add(x: int, y: int) -> int:
                return x + y

            first = await add.enqueue(1, 1)
            admin = redis.Redis.from_url(server.url)
            try:
                admin.script_flush()
                second = await add.enqueue(2, 2)
                assert first.id != second.id
                assert admin.xlen(app.broker.keys(add.config.queue).stream) == 2
            finally:
                admin.close()


async def test_concurrent_enqueues_still_share_round_trips(app: aqueue.App) -> None:
    """The short path is for a caller alone: callers that arrive while it is in
    flight go out together in one script call after it."""

    @app.task
    async def noop(n: int) -> int:
        return n

    await noop.enqueue(0)
    broker = app.client.broker

    async def script_calls() -> int:
        stats = await broker.client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    before = await script_calls()
    handles = await asyncio.gather(*(noop.enqueue(i) for i in range(1, 51)))
    sent = await script_calls() - before
    assert len({h.id for h in handles}) == 50
    # One lone call for the first caller, then the 49 that queued up behind it
    # in one batch (two, should the first return while they are still arriving).
    assert 2 <= sent <= 3, f"50 concurrent enqueues took {sent} script calls"
    assert await broker.client.xlen(broker.keys("default").stream) == 51


async def test_the_packed_command_is_what_hiredis_would_pack(app: aqueue.App) -> None:
    from hiredis import pack_command

    @app.task
    async def echo(text: str) -> str:
        return text

    await echo.enqueue("first")  # the queue's first: its command head is packed
    broker = app.client.broker
    target = broker._enqueue_target("default")
    _, message = echo.build_message(("é\r\n" * 40,), {}, echo.options(task_id="fixé")._opts)
    sha = broker._scripts["enqueue_lone"].sha
    keys = broker.keys("default")
    for fresh in (True, False):
        message.fresh = fresh
        assert target.lone_command(message) == pack_command(
            (
                "EVALSHA",
                sha,
                1,
                keys.stream,
                keys.task_prefix,
                message.task_id,
                message.task_name,
                message.payload,
                "1" if fresh else "0",
            )
        )
