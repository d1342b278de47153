"""The queue's keys vanish under running workers (FLUSHDB, a deleted stream):
the workers recreate the consumer group and carry on."""

from __future__ import annotations

import redis

from ..conftest import redis_server, wait_until
from .conftest import Counts, Workers, producer

ENV = {"AQUEUE_HEARTBEAT_INTERVAL": "0.3", "AQUEUE_DEAD_WORKER_AFTER": "2"}


async def test_flushdb_and_a_deleted_stream_leave_workers_running(
    prefix: str, workers: Workers
) -> None:
    with redis_server() as srv:
        counts = Counts(srv.url, prefix)
        admin = redis.Redis.from_url(srv.url)
        pool = [workers.start("-c", "4", url=srv.url, **ENV) for _ in range(2)]
        async with producer(srv.url, prefix) as app:
            mark = app.tasks["faults.mark"]
            first = [f"a{i}" for i in range(10)]
            for key in first:
                await mark.enqueue(key, 0.5)
            await wait_until(lambda: sum(counts.started(first)) >= 4, 30)
            # In flight and blocked reads alike lose their keys.
            admin.flushdb()
            second = [f"b{i}" for i in range(10)]
            handles = [await mark.enqueue(key) for key in second]
            for handle in handles:
                await handle.get(timeout=30)
            admin.delete(app.broker.keys("default").stream)
            third = [f"c{i}" for i in range(10)]
            handles = [await mark.enqueue(key) for key in third]
            for handle in handles:
                await handle.get(timeout=30)
            assert counts.done(second + third) == [1] * 20
            assert all(w.alive for w in pool)
            assert any("recreated it" in w.output() for w in pool)
            for w in pool:
                assert "Traceback" not in w.output()
        admin.close()
        counts.close()
