"""``app.events()`` on a Redis Cluster blocks on each queue's stream instead of polling.

Each queue's events live in their own stream, in the queue's slot, so one read
can't wait on all of them: the reader keeps one blocking ``XREAD`` in flight
per stream. These tests watch the session cluster's masters from outside
(``INFO commandstats`` and ``INFO clients``) while a reader sits idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis

import aqueue
from aqueue.core.events import Event
from aqueue.core.keys import events_key

from ..conftest import running_worker
from ..topologies import ClusterTopology, wait_for

QUEUES = ["alpha", "beta", "gamma"]
IDLE = 3.0


def _masters(cluster: ClusterTopology) -> list[redis.Redis]:
    clients = [cluster.client(s) for s in cluster.servers if s.proc is not None]
    return [c for c in clients if c.info("replication")["role"] == "master"]


def _xreads(masters: list[redis.Redis]) -> int:
    return sum(
        int(m.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)) for m in masters
    )


def _blocked(masters: list[redis.Redis]) -> int:
    return sum(int(m.info("clients")["blocked_clients"]) for m in masters)


async def test_an_idle_reader_blocks_on_every_queue_stream(
    cluster: ClusterTopology, prefix: str
) -> None:
    cluster.wait_healthy()
    app = aqueue.App(cluster.url, prefix=prefix, events=True)
    tasks = {queue: app.task(name=f"{queue}.echo", queue=queue)(_echo) for queue in QUEUES}
    masters = _masters(cluster)
    streams = {events_key(prefix, q) for q in QUEUES}
    # The three streams are in three slots (nothing here relies on their nodes).
    with cluster.client(cluster.servers[0]) as probe:
        slots = {int(probe.execute_command("CLUSTER", "KEYSLOT", s)) for s in streams}
    assert len(slots) == len(QUEUES)
    seen: list[Event] = []

    async def follow() -> None:
        async for event in app.events(queues=QUEUES):
            seen.append(event)

    reader = asyncio.create_task(follow())
    try:
        # Idle: one blocking read per stream, each waiting up to a second.
        await asyncio.to_thread(
            wait_for, lambda: _blocked(masters) >= len(QUEUES), "the reader's blocking reads"
        )
        before, started = _xreads(masters), time.monotonic()
        await asyncio.sleep(IDLE)
        calls, took = _xreads(masters) - before, time.monotonic() - started
        # A read per stream per second (and one more each at the edges); a
        # 0.2 s poll would have made about 5 per stream per second.
        assert calls <= len(QUEUES) * (took + 2), calls
        # Still blocked on every stream (a 1 s read may be between two calls
        # at the moment of one look, so look for a few seconds).
        await asyncio.to_thread(
            wait_for, lambda: _blocked(masters) >= len(QUEUES), "the blocking reads", 5.0
        )
        # Events of every queue arrive, each queue's in order.
        async with running_worker(app, queues=QUEUES, concurrency=4):
            handles = [await tasks[q].enqueue(n) for n in range(3) for q in QUEUES]
            for handle in handles:
                await handle.get(timeout=30)
            await asyncio.to_thread(
                wait_for,
                lambda: sum(e.state == "succeeded" for e in seen) == len(handles),
                "every task's succeeded event",
            )
        for queue in QUEUES:
            mine = [e for e in seen if e.queue == queue and e.task_id]
            assert [e.id for e in mine] == sorted(e.id for e in mine)  # one stream: its order
            for handle in (h for h in handles if h.queue == queue):
                states = [e.state for e in mine if e.task_id == handle.id]
                assert states == ["queued", "started", "succeeded"]
        # since= an event's id goes on after it, in that event's stream only.
        cut = next(e for e in seen if e.queue == "beta" and e.state == "started")
        after = [e async for e in app.events(queues=["beta"], since=cut.id, follow=False)]
        expected = [e.id for e in seen if e.queue == "beta"]
        assert [e.id for e in after] == expected[expected.index(cut.id) + 1 :]
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await app.close()
        for client in masters:
            client.close()
    # The reader's reads went away with it.
    wait_for(lambda: _blocked(_masters(cluster)) == 0, "the blocking reads to end")


async def _echo(n: int) -> int:
    return n
