"""Delays, ETAs, expiry and unique tasks against a real Redis and real workers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

import aqueue
from aqueue import TaskStatus

from .conftest import running_worker


async def test_delay_waits_scheduled_then_runs(app: aqueue.App) -> None:
    ran: list[float] = []

    @app.task
    async def stamp() -> float:
        ran.append(time.time())
        return time.time()

    async with running_worker(app):
        enqueued = time.time()
        r = await stamp.options(delay=timedelta(seconds=1)).enqueue()
        info = await r.info()
        assert info.status is TaskStatus.SCHEDULED
        assert info.eta is not None and info.eta >= enqueued + 0.9
        finished_at = await r.get(timeout=10)
    assert finished_at >= enqueued + 1.0 - 0.05  # never early (5 ms Redis/local clock slack)
    assert len(ran) == 1


async def test_delay_lateness_on_an_idle_worker(app: aqueue.App) -> None:
    @app.task
    async def now() -> float:
        return time.time()

    lateness = []
    async with running_worker(app):
        await (await now.enqueue()).get(timeout=10)  # worker is up and idle
        for _ in range(3):
            enqueued = time.time()
            r = await now.options(delay=0.5).enqueue()
            started = await r.get(timeout=10)
            lateness.append(started - (enqueued + 0.5))
    print(f"\n0.5 s delay, lateness per run (ms): {[round(x * 1000, 1) for x in lateness]}")
    assert all(-0.05 < x < 2.0 for x in lateness)  # sanity bound only


async def test_eta_three_days_ahead_is_never_delivered_early(redis_url: str, prefix: str) -> None:
    app = aqueue.App(redis_url, prefix=prefix, visibility_timeout=2.0, heartbeat_interval=0.2)
    calls: list[int] = []

    @app.task
    async def weekly_report() -> None:
        calls.append(1)

    try:
        eta = datetime.now(UTC) + timedelta(days=3)
        r = await weekly_report.options(eta=eta).enqueue()
        async with running_worker(app, concurrency=4):
            # Several visibility timeouts, reclaim and promote rounds.
            await asyncio.sleep(5)
            assert await r.status() is TaskStatus.SCHEDULED
        info = await r.info()
        assert info.status is TaskStatus.SCHEDULED
        assert info.eta is not None and abs(info.eta - eta.timestamp()) < 1.0
        assert calls == []
        keys = app.broker.keys(app.settings.default_queue)
        assert await app.broker.client.xlen(keys.stream) == 0
        assert await app.broker.client.zcard(keys.delayed) == 1
    finally:
        await app.close()


async def test_eta_must_be_aware_and_delay_non_negative(app: aqueue.App) -> None:
    @app.task
    async def noop() -> None:
        pass

    with pytest.raises(aqueue.EnqueueError, match="timezone-aware"):
        await noop.options(eta=datetime(2030, 1, 1)).enqueue()
    with pytest.raises(aqueue.ConfigError):
        noop.options(delay=-1)


async def test_eta_in_the_past_runs_now(app: aqueue.App) -> None:
    @app.task
    async def one() -> int:
        return 1

    async with running_worker(app):
        r = await one.options(eta=datetime.now(UTC) - timedelta(hours=1)).enqueue()
        assert await r.get(timeout=10) == 1


async def test_expired_task_is_not_run(app: aqueue.App) -> None:
    ran: list[int] = []

    @app.task
    async def stale() -> None:
        ran.append(1)

    # Expires before the (delayed) start: enqueued, never run, EXPIRED.
    r1 = await stale.options(delay=0.6, expires=0.3).enqueue()
    # Absolute expiry in the past, queued immediately with no worker running.
    r2 = await stale.options(expires=datetime.now(UTC) + timedelta(milliseconds=100)).enqueue()
    await asyncio.sleep(0.7)
    async with running_worker(app):
        with pytest.raises(aqueue.TaskExpired) as err:
            await r1.get(timeout=10)
        assert isinstance(err.value, aqueue.TaskFailed)
        assert err.value.exc_type == "TaskExpired"
        with pytest.raises(aqueue.TaskExpired):
            await r2
    assert await r1.status() is TaskStatus.EXPIRED
    assert await r2.status() is TaskStatus.EXPIRED
    assert ran == []


async def test_expires_decorator_default_and_override(app: aqueue.App) -> None:
    @app.task(expires=0.2)
    async def fresh_only() -> str:
        return "ran"

    r_default = await fresh_only.enqueue()
    r_override = await fresh_only.options(expires=timedelta(minutes=5)).enqueue()
    await asyncio.sleep(0.4)
    async with running_worker(app):
        with pytest.raises(aqueue.TaskExpired):
            await r_default.get(timeout=10)
        assert await r_override.get(timeout=10) == "ran"


async def test_decorator_expiry_counts_from_the_eta(app: aqueue.App) -> None:
    @app.task(expires=5.0)
    async def later() -> str:
        return "ran"

    async with running_worker(app):
        # The default expiry is relative to when the task is due, not to enqueue.
        r = await later.options(delay=0.5).enqueue()
        assert await r.get(timeout=10) == "ran"


async def test_shadow_name_in_logs(app: aqueue.App, caplog: pytest.LogCaptureFixture) -> None:
    @app.task
    async def crawl(url: str) -> str:
        return url

    caplog.set_level("INFO", logger="aqueue.worker")
    async with running_worker(app):
        r = await crawl.options(shadow="crawl:example.com").enqueue("https://example.com")
        assert await r == "https://example.com"
    assert any("crawl:example.com" in rec.getMessage() for rec in caplog.records)


async def test_unique_fifty_concurrent_enqueues_one_id_one_run(app: aqueue.App) -> None:
    runs: list[int] = []

    @app.task
    async def report(n: int) -> int:
        runs.append(n)
        await asyncio.sleep(0.3)
        return n

    bound = report.options(unique_key="report:42", unique_for=timedelta(hours=1))
    handles = await asyncio.gather(*(bound.enqueue(42) for _ in range(50)))
    assert len({h.id for h in handles}) == 1
    # A second App (another process) sees the same live task.
    other = aqueue.App(app.settings.redis_url, prefix=app.settings.prefix)
    try:
        other_task = other.task(name=report.name)(report.fn)
        again = await other_task.options(unique_key="report:42").enqueue(42)
        assert again.id == handles[0].id
    finally:
        await other.close()
    async with running_worker(app):
        assert await handles[0].get(timeout=10) == 42
        # While running it still holds the key ...
        # ... and once finished the key is free: a new enqueue is a new task.
        fresh = await bound.enqueue(42)
        assert fresh.id != handles[0].id
        assert await fresh.get(timeout=10) == 42
    assert runs == [42, 42]


async def test_unique_returns_running_task(app: aqueue.App) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task(unique=True)
    async def rebuild(index: str) -> str:
        started.set()
        await release.wait()
        return index

    async with running_worker(app):
        first = await rebuild.enqueue("users")
        await asyncio.wait_for(started.wait(), 10)
        assert await first.status() is TaskStatus.RUNNING
        second = await rebuild.enqueue("users")
        assert second.id == first.id
        other_args = await rebuild.enqueue("orders")  # different arguments: another task
        assert other_args.id != first.id
        release.set()
        assert await first.get(timeout=10) == "users"
        assert await other_args.get(timeout=10) == "orders"


async def test_unique_key_released_on_failure_and_abort(app: aqueue.App) -> None:
    @app.task
    async def flaky() -> None:
        raise RuntimeError("boom")

    bound = flaky.options(unique_key="flaky")
    async with running_worker(app):
        r1 = await bound.enqueue()
        with pytest.raises(aqueue.TaskFailed):
            await r1.get(timeout=10)
    r2 = await bound.enqueue()
    assert r2.id != r1.id
    assert await r2.abort() is True
    r3 = await bound.enqueue()
    assert r3.id != r2.id
    keys = app.broker.keys(app.settings.default_queue)
    assert await app.broker.client.get(keys.unique("flaky")) == r3.id.encode()


async def test_unique_key_released_when_dead_lettered_by_reclaim(
    redis_url: str, prefix: str
) -> None:
    """A message that keeps crashing workers is dead-lettered by reclaim, and its
    unique key must go with it (not linger for ``unique_for``)."""
    app = aqueue.App(
        redis_url,
        prefix=prefix,
        max_deliveries=1,
    )

    @app.task
    async def crashy() -> None:
        pass

    try:
        r = await crashy.options(unique_key="crashy", unique_for=3600).enqueue()
        broker = app.broker
        queue = app.settings.default_queue
        keys = broker.keys(queue)
        await broker.ensure_group(queue)
        # A "worker" reads the message and dies (it never heartbeats); the next
        # delivery would be over max_deliveries, so reclaim dead-letters it.
        got = await broker.read(queue, "ghost-1", 1, 100)
        assert [d.task_id for d in got] == [r.id]
        assert await broker.reclaim(queue, "ghost-2", 10) == []
        assert await r.status() is TaskStatus.DEAD
        assert await broker.client.get(keys.unique("crashy")) is None
        fresh = await crashy.options(unique_key="crashy").enqueue()
        assert fresh.id != r.id
    finally:
        await app.close()


async def test_delayed_unique_task_holds_its_key(app: aqueue.App) -> None:
    @app.task
    async def nightly() -> None:
        pass

    bound = nightly.options(unique_key="nightly", delay=timedelta(hours=6))
    first = await bound.enqueue()
    second = await bound.enqueue()
    assert first.id == second.id
    assert await first.status() is TaskStatus.SCHEDULED


async def test_unique_lock_covers_the_delay(app: aqueue.App) -> None:
    @app.task
    async def digest() -> None:
        pass

    r = await digest.options(unique_key="digest", unique_for=2, delay=timedelta(hours=1)).enqueue()
    keys = app.broker.keys(app.settings.default_queue)
    ttl_ms = await app.broker.client.pttl(keys.unique("digest"))
    assert 3600_000 < ttl_ms <= 3602_000
    assert await r.status() is TaskStatus.SCHEDULED


async def test_unique_key_held_while_a_long_task_runs(redis_url: str, prefix: str) -> None:
    app = aqueue.App(redis_url, prefix=prefix, visibility_timeout=1.0, heartbeat_interval=0.1)
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task
    async def rebuild() -> str:
        started.set()
        await release.wait()
        return "done"

    bound = rebuild.options(unique_key="rebuild", unique_for=0.5)
    try:
        async with running_worker(app):
            first = await bound.enqueue()
            await asyncio.wait_for(started.wait(), 10)
            await asyncio.sleep(1.5)  # three times unique_for, several lease renewals
            assert await first.status() is TaskStatus.RUNNING
            again = await bound.enqueue()
            assert again.id == first.id
            release.set()
            assert await first.get(timeout=10) == "done"
        keys = app.broker.keys(app.settings.default_queue)
        assert await app.broker.client.exists(keys.unique("rebuild")) == 0
    finally:
        await app.close()


async def test_due_tasks_are_promoted_once_with_many_workers(app: aqueue.App) -> None:
    from collections import Counter

    runs: Counter[int] = Counter()

    @app.task
    async def job(n: int) -> int:
        runs[n] += 1
        return n

    async with running_worker(app), running_worker(app), running_worker(app):
        handles = await job.options(delay=0.3).enqueue_many([(n,) for n in range(300)])
        assert {await h.status() for h in handles[:5]} == {TaskStatus.SCHEDULED}
        values = await asyncio.gather(*(h.get(timeout=20) for h in handles))
    assert values == list(range(300))
    assert runs == Counter(range(300))  # every one exactly once
