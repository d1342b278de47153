"""Redis goes away under a running system: restarts, killed connections, outages."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

import aqueue

from ..conftest import redis_server, wait_until
from .conftest import Counts, Workers, elapsed_since, producer, report

ENV = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5", "AQUEUE_DEAD_WORKER_AFTER": "2"}


class Flow:
    """Enqueues tasks one after another and keeps the ids Redis acknowledged."""

    def __init__(self, app: aqueue.App) -> None:
        self.mark = app.tasks["faults.mark"]
        self.acked: list[str] = []
        self.handles: list[aqueue.AsyncResult[Any]] = []
        self.refused = 0
        self.stopped = False

    async def run(self, limit: int) -> None:
        i = 0
        while not self.stopped and len(self.acked) < limit:
            key = f"f{i}"
            i += 1
            try:
                handle = await self.mark.options(task_id=key).enqueue(key, 0.05)
            except aqueue.ConnectionFailed:
                self.refused += 1  # not acknowledged: not promised either
                await asyncio.sleep(0.05)
                continue
            self.acked.append(key)
            self.handles.append(handle)
            await asyncio.sleep(0.005)

    async def results(self, timeout: float) -> list[Any]:
        """Every acknowledged task's result, through the producer's own waiter."""
        return await asyncio.wait_for(asyncio.gather(*(h.get() for h in self.handles)), timeout)


async def test_redis_restart_with_aof_loses_nothing(prefix: str, workers: Workers) -> None:
    with redis_server("--appendonly", "yes", "--appendfsync", "always") as srv:
        counts = Counts(srv.url, prefix)
        worker = workers.start("-c", "20", url=srv.url, **ENV)
        async with producer(srv.url, prefix) as app:
            flow = Flow(app)
            producing = asyncio.create_task(flow.run(400))
            await wait_until(lambda: sum(counts.done(flow.acked[:50])) >= 50, 30)

            srv.stop()
            down = time.monotonic()
            await wait_until(lambda: flow.refused >= 3, 30)
            await wait_until(lambda: "lost the connection to Redis" in worker.output(), 30)
            srv.start()  # same port, same directory: the AOF is replayed
            await asyncio.wait_for(producing, 60)
            # Well inside the 60 s visibility timeout: nothing waits for it.
            await wait_until(lambda: min(counts.done(flow.acked)) >= 1, 30)
            recovered = elapsed_since(down)

            done = counts.done(flow.acked)
            started = counts.started(flow.acked)
            assert min(done) >= 1
            assert len(await flow.results(30)) == len(flow.acked)
            states = {(await app.result(k).status()).value for k in flow.acked}
            assert states == {"succeeded"}
            assert worker.alive
            out = worker.output()
            assert "reconnected to Redis" in out, out
            outage_lines = out.count("lost the connection to Redis")
            assert outage_lines == 1, out  # one line per outage, not one per worker loop
            report(
                "redis_restart_aof",
                tasks=len(flow.acked),
                refused_at_enqueue=flow.refused,
                lost=sum(1 for d in done if d == 0),
                duplicated=sum(s - 1 for s in started if s > 1),
                all_done_after_s=recovered,
                worker_outage_log_lines=outage_lines,
            )
        counts.close()


async def test_killed_client_connections_recover(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    # The default 60 s visibility timeout: a read whose reply is lost with its
    # connection must not leave its entries waiting that long.
    worker = workers.start("-c", "20", **ENV)
    admin = redis.Redis.from_url(redis_url)
    async with producer(redis_url, prefix) as app:
        flow = Flow(app)
        producing = asyncio.create_task(flow.run(300))
        kills = 0
        started = time.monotonic()
        while not producing.done():
            await asyncio.sleep(0.3)
            # Every connection but ours: the worker's reads, pub/sub and scripts,
            # and the producer's too.
            kills += int(admin.client_kill_filter(_type="normal", skipme=True))
            kills += int(admin.client_kill_filter(_type="pubsub", skipme=True))
        await producing
        await wait_until(lambda: min(counts.done(flow.acked)) >= 1, 40)
        # Waiters recover too: their pub/sub connection was killed over and over.
        assert len(await flow.results(30)) == len(flow.acked)
        done = counts.done(flow.acked)
        started_n = counts.started(flow.acked)
        assert kills > 0
        assert flow.refused == 0  # Redis was up all along: a dropped connection is retried
        assert min(done) >= 1
        assert worker.alive
        report(
            "client_kill",
            tasks=len(flow.acked),
            connections_killed=kills,
            refused_at_enqueue=flow.refused,
            lost=sum(1 for d in done if d == 0),
            duplicated=sum(s - 1 for s in started_n if s > 1),
            all_done_after_s=elapsed_since(started),
        )
    admin.close()


async def test_enqueue_during_outage_raises_connection_failed(prefix: str) -> None:
    with redis_server() as srv:
        app = producer(srv.url, prefix, connect_timeout=1.0)
        async with app:
            await app.tasks["faults.mark"].enqueue("before", 0.0)
            srv.stop()
            began = time.monotonic()
            with pytest.raises(aqueue.ConnectionFailed):
                await asyncio.wait_for(app.tasks["faults.mark"].enqueue("during", 0.0), 10)
            report("enqueue_redis_down", raised_after_s=elapsed_since(began))
            srv.start()
            # The same App works again once Redis is back.
            result: Any = await app.tasks["faults.mark"].enqueue("after", 0.0)
            assert await result.status() is aqueue.TaskStatus.QUEUED


async def test_enqueue_to_unresponsive_redis_times_out(prefix: str) -> None:
    """A Redis that accepts connections but never answers (SIGSTOPped)."""
    import os
    import signal

    with redis_server() as srv:
        app = producer(srv.url, prefix, connect_timeout=1.0)
        async with app:
            assert srv.proc is not None
            os.kill(srv.proc.pid, signal.SIGSTOP)
            began = time.monotonic()
            try:
                with pytest.raises(aqueue.ConnectionFailed) as caught:
                    await asyncio.wait_for(app.tasks["faults.mark"].enqueue("x", 0.0), 20)
            finally:
                os.kill(srv.proc.pid, signal.SIGCONT)
            report("enqueue_unresponsive_redis", raised_after_s=elapsed_since(began))
            print(caught.value)


async def test_sigterm_while_redis_is_down(prefix: str, workers: Workers) -> None:
    """The worker can't hand its tasks back, so it exits anyway and they are reclaimed."""
    import signal

    with redis_server("--appendonly", "yes", "--appendfsync", "always") as srv:
        counts = Counts(srv.url, prefix)
        keys = [f"d{i}" for i in range(5)]
        first = workers.start("-c", "5", "--grace-period", "1", url=srv.url, **ENV)
        async with producer(srv.url, prefix) as app:
            mark = app.tasks["faults.mark"]
            handles = [await mark.enqueue(k, 10.0) for k in keys]
            await wait_until(lambda: counts.started(keys) == [1] * 5, 30)
            srv.stop()
            first.signal(signal.SIGTERM)
            assert first.wait(30) == 0
            out = first.output()
            assert "could not hand back" in out, out
            srv.start()
            began = time.monotonic()
            workers.start("-c", "5", url=srv.url, **ENV)
            await asyncio.wait_for(asyncio.gather(*(h.get() for h in handles)), 40)
            assert counts.done(keys) == [1] * 5
            report(
                "sigterm_during_outage",
                tasks=5,
                lost=0,
                reexecuted=sum(counts.started(keys)) - 5,
                all_done_after_restart_s=elapsed_since(began),
            )
        counts.close()
