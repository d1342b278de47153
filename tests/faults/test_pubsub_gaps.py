"""Result waiters across pub/sub reconnects: a push lost in a gap is not waited out.

redis-py makes a dropped pub/sub connection again and subscribes again by
itself, silently, and whatever completion was published in between is lost.
Without noticing the gap a waiter falls back to the slow poll (seconds);
aqueue re-reads every waiter of the queue as soon as its channel is
subscribed again.
"""

from __future__ import annotations

import asyncio
import random
import time

import redis.asyncio as aioredis

import aqueue

from ..conftest import redis_server, running_worker
from .conftest import report

WAITERS = 10_000
#: Reported: waiters that learnt of their task's end more than this late.
LATE = 1.0
#: Asserted: none later than one check interval (the poll's, the default 5 s).
CHECK_INTERVAL = 5.0


async def test_pubsub_killed_every_50ms_while_ten_thousand_wait(prefix: str) -> None:
    with redis_server("--appendonly", "no") as server:  # CLIENT KILL only on our own server
        app = aqueue.App(server.url, prefix=prefix, result_poll_interval=CHECK_INTERVAL)

        @app.task(queue="gaps")
        async def nap(seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

        admin = aioredis.Redis(port=server.port)
        returned: dict[str, float] = {}

        async def wait(r: aqueue.AsyncResult[float]) -> None:
            await r.get(timeout=120)
            returned[r.id] = time.time()

        kills = 0
        try:
            rng = random.Random(7)
            handles = await nap.enqueue_many([(rng.uniform(0, 0.5),) for _ in range(WAITERS)])
            waiting = [asyncio.create_task(wait(r)) for r in handles]
            started = time.monotonic()
            async with running_worker(app, queues=["gaps"], concurrency=500):
                while not all(w.done() for w in waiting) and time.monotonic() - started < 120:
                    await asyncio.sleep(0.05)
                    kills += int(await admin.client_kill_filter(_type="pubsub"))
                await asyncio.gather(*waiting)
            elapsed = time.monotonic() - started
            lateness = []
            for r in handles:
                info = await r.info()
                assert info.finished_at is not None
                lateness.append(returned[r.id] - info.finished_at)
        finally:
            await admin.aclose()
            await app.close()
    late = sum(1 for x in lateness if x > LATE)
    lateness.sort()
    report(
        "pubsub_killed_every_50ms_10k_waiters",
        waiters=WAITERS,
        pubsub_kills=kills,
        lost=WAITERS - len(returned),
        late_over_1s=late,
        late_p50_ms=round(lateness[len(lateness) // 2] * 1000),
        late_p99_ms=round(lateness[int(len(lateness) * 0.99)] * 1000),
        late_max_ms=round(lateness[-1] * 1000),
        all_done_s=round(elapsed, 1),
    )
    assert kills > 20  # the connection really was cut, again and again
    assert len(returned) == WAITERS  # none lost
    # Without re-checks after a gap, waiters whose push was lost wait for the
    # poll: thousands were over 1 s late and some over 5 s (up to 10 s).
    assert max(lateness) < CHECK_INTERVAL


async def test_a_reconnect_is_reported_as_a_gap_and_nothing_else_is(prefix: str) -> None:
    with redis_server("--appendonly", "no") as server:
        app = aqueue.App(server.url, prefix=prefix)
        admin = aioredis.Redis(port=server.port)
        subscription = app.client.broker.subscription()
        try:
            await subscription.subscribe("one")
            await subscription.subscribe("two")  # a second subscribe is no reconnect
            seen = []
            while (msg := await subscription.next(timeout=0.3)) is not None:
                seen.append(msg.kind)
            assert seen == ["subscribe", "subscribe"]
            assert await admin.client_kill_filter(_type="pubsub") == 1
            seen = []
            while (msg := await subscription.next(timeout=1.0)) is not None:
                seen.append((msg.kind, msg.channel))
            # redis-py reconnected and subscribed again by itself; the gap is told.
            assert seen == [("gap", b""), ("subscribe", b"one"), ("subscribe", b"two")]
            await admin.publish("two", "hello")
            msg = await subscription.next(timeout=5.0)
            assert msg is not None and (msg.kind, msg.data) == ("message", b"hello")
        finally:
            await subscription.close()
            await admin.aclose()
            await app.close()
