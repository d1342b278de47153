"""Deployment-wide rate and concurrency limits, enforced in Redis.

Several real worker processes (``aqueue worker flow_app:app``) run the tasks
of tests/apps/flow_app.py, which count how many run at once per key in Redis
(exactly, with one atomic script) and when each rate-limited run started.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

import aqueue
from aqueue.core.errors import ConfigError, EnqueueError
from aqueue.core.keys import QueueKeys

from ..conftest import running_worker, wait_until
from .conftest import FlowWorkers


def producer(url: str, prefix: str) -> aqueue.App:
    """An App that declares flow_app's tasks (limits travel in each message)."""
    app = aqueue.App(url, prefix=prefix)

    @app.task(name="flow_app.per_tenant", concurrency=(2, "tenant:{tenant_id}"))
    async def per_tenant(tenant_id: str, n: int, seconds: float) -> int:
        raise NotImplementedError

    @app.task(name="flow_app.global_limited", concurrency=3)
    async def global_limited(n: int, seconds: float) -> int:
        raise NotImplementedError

    @app.task(name="flow_app.rated", rate_limit="50/s")
    async def rated(n: int) -> None:
        raise NotImplementedError

    @app.task(name="flow_app.rated_per_tenant", rate_limit=("20/s", "tenant:{tenant_id}"))
    async def rated_per_tenant(tenant_id: str, n: int) -> None:
        raise NotImplementedError

    @app.task(name="flow_app.hold")
    async def hold(key: str, n: int, seconds: float) -> int:
        raise NotImplementedError

    @app.task(name="flow_app.record")
    async def record(kind: str) -> None:
        raise NotImplementedError

    return app


def figures(scenario: str, **values: object) -> None:
    text = " ".join(f"{k}={v}" for k, v in values.items())
    print(f"\nFLOW-FIGURES {scenario}: {text}", flush=True)


class Counters:
    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def _int(self, what: str, key: str) -> int:
        return int(self.client.get(f"{self.prefix}:{what}:{key}") or 0)

    def inflight(self, key: str) -> int:
        return self._int("inflight", key)

    def max(self, key: str) -> int:
        return self._int("max", key)

    def runs(self, key: str) -> int:
        return self._int("runs", key)

    def done(self, key: str) -> int:
        return int(self.client.scard(f"{self.prefix}:done:{key}"))

    def starts(self, key: str) -> list[float]:
        return [float(x) for x in self.client.lrange(f"{self.prefix}:starts:{key}", 0, -1)]


@pytest.fixture
def counters(redis_url: str, prefix: str) -> Counters:
    return Counters(redis_url, prefix)


async def _sample_inflight(counters: Counters, keys: list[str], stop: asyncio.Event) -> int:
    """The most in flight per key seen by sampling every 10 ms (besides the exact max)."""
    seen = 0
    while not stop.is_set():
        seen = max([seen, *(counters.inflight(k) for k in keys)])
        await asyncio.sleep(0.01)
    return seen


async def test_concurrency_limits_hold_across_three_worker_processes(
    redis_url: str, prefix: str, flow_workers: FlowWorkers, counters: Counters
) -> None:
    for _ in range(3):
        flow_workers.start("-c", "20")
    tenants = ["a", "b", "c"]
    app = producer(redis_url, prefix)
    try:
        per_tenant = app.tasks["flow_app.per_tenant"]
        global_limited = app.tasks["flow_app.global_limited"]
        handles = await per_tenant.enqueue_many([(t, n, 0.05) for t in tenants for n in range(30)])
        handles += await global_limited.enqueue_many([(n, 0.05) for n in range(40)])
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_inflight(counters, [*tenants, "global"], stop))
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in handles)), 120)
        stop.set()
        sampled = await sampler
    finally:
        await app.close()
    figures(
        "concurrency",
        workers=3,
        max_in_flight_per_tenant=[counters.max(t) for t in tenants],
        tenant_limit=2,
        max_in_flight_global=counters.max("global"),
        global_limit=3,
        max_sampled=sampled,
    )
    assert [counters.max(t) for t in tenants] == [2, 2, 2]  # never above, and reached
    assert counters.max("global") == 3
    assert [counters.done(t) for t in tenants] == [30, 30, 30]
    assert [counters.runs(t) for t in tenants] == [30, 30, 30]  # each exactly once
    assert counters.done("global") == counters.runs("global") == 40
    keys = QueueKeys(prefix, "default")
    client = counters.client
    # Every token came back; nothing is left waiting.
    for t in tenants:
        assert client.zcard(keys.tokens(f"tenant:{t}")) == 0
        assert client.llen(keys.waiting(f"tenant:{t}")) == 0
    assert client.zcard(keys.tokens("task:flow_app.global_limited")) == 0
    assert client.hlen(keys.held) == 0


async def test_one_tenants_backlog_does_not_block_another(
    redis_url: str, prefix: str, flow_workers: FlowWorkers, counters: Counters
) -> None:
    flow_workers.start("-c", "10")
    flow_workers.start("-c", "10")
    app = producer(redis_url, prefix)
    try:
        per_tenant = app.tasks["flow_app.per_tenant"]
        big = await per_tenant.enqueue_many([("big", n, 0.2) for n in range(100)])
        small = await per_tenant.enqueue_many([("small", n, 0.2) for n in range(4)])
        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in small)), 30)
        small_done = time.monotonic() - t0
        big_done_then = counters.done("big")
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in big)), 60)
    finally:
        await app.close()
    figures("fairness", small_done_s=round(small_done, 2), big_done_by_then=big_done_then)
    # 100 big tasks two at a time take 10 s; the small tenant's 4 don't wait for them.
    assert big_done_then < 50
    assert counters.max("big") == counters.max("small") == 2
    assert counters.runs("big") == 100


async def test_rates_hold_within_10_percent_over_10_seconds(
    redis_url: str, prefix: str, flow_workers: FlowWorkers, counters: Counters
) -> None:
    for _ in range(3):
        flow_workers.start("-c", "20")
    app = producer(redis_url, prefix)
    try:
        rated = app.tasks["flow_app.rated"]
        per_tenant = app.tasks["flow_app.rated_per_tenant"]
        handles = await rated.enqueue_many([(n,) for n in range(600)])
        for tenant in ("x", "y"):
            handles += await per_tenant.enqueue_many([(tenant, n) for n in range(240)])
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in handles)), 60)
    finally:
        await app.close()
    measured = {}
    for key, limit in (("rated", 50), ("x", 20), ("y", 20)):
        starts = sorted(counters.starts(key))
        window = [t for t in starts if t < starts[0] + 10.0]
        measured[key] = (len(window) / 10.0, limit)
    figures(
        "rates",
        **{f"{k}_per_s": f"{rate:.1f}/{limit}" for k, (rate, limit) in measured.items()},
    )
    for rate, limit in measured.values():
        assert abs(rate - limit) <= 0.1 * limit


async def test_a_sigkilled_workers_tokens_come_back(
    redis_url: str, prefix: str, flow_workers: FlowWorkers, counters: Counters
) -> None:
    fast = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5", "AQUEUE_DEAD_WORKER_AFTER": "2"}
    first = flow_workers.start("-c", "10", **fast)
    app = producer(redis_url, prefix)
    try:
        per_tenant = app.tasks["flow_app.per_tenant"]
        handles = await per_tenant.enqueue_many([("k", n, 3.0) for n in range(6)])
        await wait_until(lambda: counters.inflight("k") == 2, 30)
        flow_workers.start("-c", "10", **fast)
        first.kill()
        killed = time.monotonic()
        # The killed runs never leave their in-flight count: start counting afresh.
        counters.client.set(f"{prefix}:inflight:k", 0)
        counters.client.set(f"{prefix}:max:k", 0)
        await wait_until(lambda: counters.inflight("k") == 2, 30)
        back = time.monotonic() - killed
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in handles)), 60)
    finally:
        await app.close()
    figures("sigkill", tokens_back_after_s=round(back, 2), dead_worker_after_s=2)
    assert counters.done("k") == 6
    assert counters.max("k") == 2
    keys = QueueKeys(prefix, "default")
    assert counters.client.zcard(keys.tokens("tenant:k")) == 0
    # Back within one lease: the dead worker's heartbeat lapses, its tasks are
    # reclaimed with their tokens.
    assert back < 2 + 5


async def test_limit_keys_are_checked_at_registration_and_enqueue(app: aqueue.App) -> None:
    with pytest.raises(ConfigError, match=r"names \{tenant\}, which is not a parameter"):

        @app.task(concurrency=(5, "tenant:{tenant}"))
        async def typo(tenant_id: str) -> None: ...

    with pytest.raises(ConfigError, match="rate_limit must look like"):

        @app.task(rate_limit="100 per second")
        async def bad_rate() -> None: ...

    with pytest.raises(ConfigError, match="concurrency must be a positive integer"):

        @app.task(concurrency=0)
        async def no_room() -> None: ...

    @app.task(rate_limit=("5/m", "user:{user.name}"))
    async def by_user(user: dict[str, str]) -> None: ...

    with pytest.raises(EnqueueError, match="limit key could not be formatted"):
        await by_user.enqueue({"id": "1"})


async def test_tasks_waiting_for_a_token_can_be_aborted_and_purged(app: aqueue.App) -> None:
    gate = asyncio.Event()
    ran: list[int] = []

    @app.task(concurrency=(1, "k:{key}"))
    async def one_at_a_time(key: str, n: int) -> int:
        ran.append(n)
        await gate.wait()
        return n

    queue = one_at_a_time.config.queue
    keys = app.broker.keys(queue)
    async with running_worker(app, concurrency=10):
        first, second, third, fourth = await one_at_a_time.enqueue_many(
            [("x", n) for n in range(4)]
        )
        await wait_until(lambda: ran == [0], 10)
        await wait_until(
            lambda: _waiting(app, keys.waiting("k:x"), 3), 10
        )  # three wait in Redis, holding no slot
        assert await second.status() == aqueue.TaskStatus.QUEUED
        figures = await app.broker.views.queue_figures(queue)
        assert figures["over_limit"] == 3
        await second.abort()
        gate.set()
        assert await first.get(timeout=10) == 0
        with pytest.raises(aqueue.TaskAborted):
            await second.get(timeout=10)
        assert await third.get(timeout=10) == 2
        assert await fourth.get(timeout=10) == 3
    assert ran == [0, 2, 3]

    gate.clear()
    async with running_worker(app, concurrency=10):
        handles = await one_at_a_time.enqueue_many([("y", n) for n in range(3)])
        await wait_until(lambda: _waiting(app, keys.waiting("k:y"), 2), 10)
        removed, _ = await app.broker.purge(queue, b"purged")
        assert removed == 2
        gate.set()
        assert await handles[0].get(timeout=10) == 0
        for h in handles[1:]:
            assert await h.status() == aqueue.TaskStatus.ABORTED
    assert await app.broker.client.hlen(keys.held) == 0


async def _waiting(app: aqueue.App, key: str, n: int) -> bool:
    return int(await app.broker.client.llen(key)) == n


async def test_urgent_tasks_overtake_a_backlog_across_three_worker_processes(
    redis_url: str, prefix: str, flow_workers: FlowWorkers, counters: Counters
) -> None:
    for _ in range(3):
        flow_workers.start("-c", "10")  # prefetch 5 each: 15 read at most per worker
    order_key = f"{prefix}:order"
    app = producer(redis_url, prefix)
    try:
        record = app.tasks["flow_app.record"]
        await record.enqueue_many([("low",)] * 10_000)
        await wait_until(lambda: counters.client.llen(order_key) >= 500, 60)
        high = await record.options(priority=9).enqueue_many([("high",)] * 100)
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in high)), 60)
        # When the 100 were in Redis, by Redis' clock (this host's clock too).
        enqueued = (await high[0].info()).enqueued_at
        assert enqueued is not None
    finally:
        await app.close()
    runs = [x.decode().split() for x in counters.client.lrange(order_key, 0, -1)]
    last_high = max(float(t) for kind, t in runs if kind == "high")
    # Low tasks that began after the urgent ones were enqueued, before the last of them.
    inversion = sum(1 for kind, t in runs if kind == "low" and enqueued <= float(t) <= last_high)
    figures("priority_processes", workers=3, inversion=inversion, bound=3 * 15)
    assert sum(1 for kind, _ in runs if kind == "high") == 100
    # Only what the three workers had already read before the 100 arrived.
    assert inversion <= 3 * 15


async def test_urgent_tasks_of_a_sigkilled_worker_are_reclaimed_and_run_once(
    redis_url: str, prefix: str, flow_workers: FlowWorkers, counters: Counters
) -> None:
    fast = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5", "AQUEUE_DEAD_WORKER_AFTER": "2"}
    first = flow_workers.start("-c", "10", **fast)
    app = producer(redis_url, prefix)
    try:
        hold = app.tasks["flow_app.hold"]
        handles = await hold.options(priority=8).enqueue_many([("u", n, 2.0) for n in range(4)])
        await wait_until(lambda: counters.inflight("u") == 4, 30)
        flow_workers.start("-c", "10", **fast)
        first.kill()
        assert await asyncio.wait_for(asyncio.gather(*(h.get() for h in handles)), 60) == [
            0,
            1,
            2,
            3,
        ]
        infos = [await h.info() for h in handles]
    finally:
        await app.close()
    assert counters.runs("u") == 4  # each finished exactly once
    assert [info.attempt for info in infos] == [2, 2, 2, 2]  # after one interrupted run
    keys = QueueKeys(prefix, "default")
    pending = counters.client.xpending(keys.urgent_stream, "aqueue")
    assert pending["pending"] == 0
