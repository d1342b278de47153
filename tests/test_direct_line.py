"""The direct line's reply reads: bounded by the socket timeout, cancellable, in sync.

Replies are read without a timeout context per read: one timer cancels the
reads that are overdue. A reply that never comes must still end the call
(TimeoutError, the connection dropped), a caller's own cancellation must stay a
cancellation, and the line must keep working afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from aqueue._redis.connection import READ_WATCH_INTERVAL, DirectLine


async def test_a_reply_that_never_comes_times_out_and_the_line_recovers(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=0.3)
    line = DirectLine(client)
    try:
        assert line.enabled
        assert await line.call("PING") in (b"PONG", "PONG", True)
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            # Blocks in Redis for ever: no reply comes on this connection.
            await line.call("BLPOP", f"nothing-{uuid.uuid4().hex}", 0)
        took = time.monotonic() - started
        # Once the idle connection is retried on a fresh one (as redis-py's own retry
        # would), each try times out between the socket timeout and one watch later.
        assert 0.3 <= took <= 2 * (0.3 + READ_WATCH_INTERVAL) + 1.0, took
        assert line.opened == 0  # the connection that missed its reply is gone
        assert await line.call("SET", "direct-line-after", "ok") in (b"OK", "OK", True)
        assert await line.call("GET", "direct-line-after") == b"ok"
        assert line.opened == 1
    finally:
        await line.close()
        await client.aclose()


async def test_a_cancelled_read_stays_a_cancellation(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    line = DirectLine(client)
    try:
        call = asyncio.ensure_future(line.call("BLPOP", f"nothing-{uuid.uuid4().hex}", 0))
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert line.opened == 0  # its reply was still on its way: never reused
        # An error reply leaves the connection in sync and is raised as itself.
        await line.call("SET", "direct-line-text", "x")
        with pytest.raises(redis.exceptions.ResponseError):
            await line.call("INCR", "direct-line-text")
        assert await line.call("ECHO", "still in sync") == b"still in sync"
        assert line.opened == 1
    finally:
        await line.close()
        await client.aclose()


async def test_concurrent_reads_each_get_their_own_reply(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    line = DirectLine(client)
    try:
        replies = await asyncio.gather(*(line.call("ECHO", str(i)) for i in range(200)))
        assert replies == [str(i).encode() for i in range(200)]
    finally:
        await line.close()
        await client.aclose()


async def test_a_push_message_before_a_reply_is_passed_over(redis_url: str) -> None:
    """RESP3: an invalidation push (client tracking) arrives on the line's connection
    between two commands; the next command still gets its own reply."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    other = aioredis.Redis.from_url(redis_url)
    line = DirectLine(client)
    key = f"tracked-{uuid.uuid4().hex}"
    try:
        if await line.call("HELLO", 3) is None:  # pragma: no cover - always answers
            pytest.skip("no RESP3")
        await line.call("CLIENT", "TRACKING", "ON")
        await line.call("SET", key, "1")
        assert await line.call("GET", key) == b"1"  # now tracked
        await other.set(key, "2")  # Redis pushes an invalidation to the line's connection
        await asyncio.sleep(0.05)
        assert await line.call("ECHO", "mine") == b"mine"
        assert await line.call("GET", key) == b"2"
        assert line.opened == 1
    finally:
        await line.close()
        await client.aclose()
        await other.aclose()


def test_the_read_deadline_holds_on_the_next_event_loop(redis_url: str) -> None:
    """A loop that ends with a read in flight leaves its watch behind, never to fire;
    the next loop's reads get a watch of their own."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=0.3)
    line = DirectLine(client)

    async def ended_mid_read() -> None:
        call = asyncio.ensure_future(line.call("BLPOP", f"nothing-{uuid.uuid4().hex}", 0))
        await asyncio.sleep(0.05)
        assert not call.done()  # asyncio.run cancels it as it ends

    async def next_loop() -> None:
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                await asyncio.wait_for(line.call("BLPOP", f"nothing-{uuid.uuid4().hex}", 0), 10)
        finally:
            await line.close()
            await client.aclose()

    asyncio.run(ended_mid_read())
    asyncio.run(next_loop())
