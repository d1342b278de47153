"""Periodic tasks: schedules, exactly-once ticks across schedulers, singleton, CLI."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

import aqueue
from aqueue import TaskStatus
from aqueue.periodic import Schedule, Scheduler, periodic_tasks

from .conftest import ROOT, running_worker, start_cli_worker, wait_until, worker_env

SEOUL = ZoneInfo("Asia/Seoul")


# -- schedules (no Redis) ----------------------------------------------------------


def test_cron_in_a_time_zone() -> None:
    weekly = Schedule(cron="0 3 * * MON", tz="Asia/Seoul")
    monday_3am = datetime(2026, 11, 23, 3, 0, tzinfo=SEOUL).timestamp()
    assert weekly.latest(monday_3am) == monday_3am  # a tick is due at its own instant
    assert weekly.latest(monday_3am - 1) == monday_3am - 7 * 86400
    assert weekly.next_after(monday_3am) == monday_3am + 7 * 86400
    assert weekly.next_after(monday_3am - 1) == monday_3am
    # Monday 03:00 in Seoul is Sunday 18:00 UTC.
    assert datetime.fromtimestamp(monday_3am, UTC) == datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
    assert "Asia/Seoul" in weekly.describe()


def test_cron_across_a_dst_change() -> None:
    daily = Schedule(cron="30 2 * * *", tz="Europe/Berlin")
    # 2026-10-25: clocks go back at 03:00 CEST; 02:30 local happens twice.
    before = datetime(2026, 10, 24, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    ticks = daily.upcoming(before, 3)
    assert ticks == sorted(ticks)
    local = [datetime.fromtimestamp(t, ZoneInfo("Europe/Berlin")).strftime("%H:%M") for t in ticks]
    assert all(x == "02:30" for x in local)


def test_every_is_aligned_to_the_epoch() -> None:
    five = Schedule(every=300)
    assert five.latest(1_000_000_123.4) == 1_000_000_200 - 300
    assert five.next_after(1_000_000_200) == 1_000_000_500
    assert five.upcoming(0.5, 2) == [300, 600]


def test_schedule_validation() -> None:
    app = aqueue.App("redis://localhost:1/0")
    with pytest.raises(aqueue.ConfigError, match="exactly one"):
        app.periodic()
    with pytest.raises(aqueue.ConfigError, match="exactly one"):
        app.periodic(cron="* * * * *", every=60)
    with pytest.raises(aqueue.ConfigError, match="cron expression"):
        app.periodic(cron="every monday")
    with pytest.raises(aqueue.ConfigError, match="time zone"):
        app.periodic(cron="* * * * *", tz="Mars/Olympus")
    with pytest.raises(aqueue.ConfigError, match="positive"):
        app.periodic(every=timedelta(0))

    with pytest.raises(aqueue.ConfigError, match="periodic task"):

        @app.periodic(every=60, args=(1, 2))
        async def one_arg(x: int) -> None: ...

    assert app.tasks == {}  # a refused periodic task is not left registered
    assert periodic_tasks(app) == {}


def test_periodic_registers_a_typed_task() -> None:
    app = aqueue.App("redis://localhost:1/0")

    @app.periodic(every=timedelta(minutes=5), kwargs={"n": 3}, queue="cron", timeout=10)
    async def crawl(n: int) -> int:
        return n

    assert isinstance(crawl, aqueue.Task)
    assert crawl.config.queue == "cron" and crawl.config.timeout == 10
    assert app.tasks[crawl.name] is crawl
    assert periodic_tasks(app)[crawl.name].schedule.every == 300


# -- exactly-once claims ---------------------------------------------------------


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_each_tick_is_enqueued_once_by_competing_schedulers(
    redis_url: str, prefix: str
) -> None:
    apps = [aqueue.App(redis_url, prefix=prefix) for _ in range(3)]
    runs: list[str] = []
    for a in apps:

        @a.periodic(cron="* * * * *", name="minutely")
        async def minutely(ctx: aqueue.Context) -> None:
            runs.append(ctx.id)

    start = datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC).timestamp()
    clock = FakeClock(start)
    schedulers = [Scheduler(a, clock=clock) for a in apps]
    try:
        first = await asyncio.gather(*(s.run_due() for s in schedulers))
        outcomes = sorted(o.outcome for batch in first for o in batch)
        assert outcomes == ["claimed", "claimed", "new"]  # first sight: recorded, not run

        enqueued: list[str] = []
        for minute in range(1, 6):
            clock.now = start + 60 * minute
            rounds = await asyncio.gather(*(s.run_due() for s in schedulers))
            got = [o for batch in rounds for o in batch]
            assert sorted(o.outcome for o in got) == ["claimed", "claimed", "enqueued"]
            enqueued += [o.task_id for o in got if o.outcome == "enqueued"]
            # Asking again for the same tick does nothing, even from a fresh scheduler.
            again = await Scheduler(apps[0], clock=clock).run_due()
            assert [o.outcome for o in again] == ["claimed"]
        tick_ms = round(datetime(2026, 11, 23, 9, 1, tzinfo=UTC).timestamp() * 1000)
        assert enqueued[0] == f"periodic:minutely:{tick_ms}"
        assert len(set(enqueued)) == 5

        async with (
            running_worker(apps[0], beat=False),
            running_worker(apps[1], beat=False),
            running_worker(apps[2], beat=False),
        ):
            await wait_until(lambda: len(runs) >= 5)
            await asyncio.sleep(0.3)
        assert sorted(runs) == sorted(enqueued)
    finally:
        for a in apps:
            await a.close()


async def test_missed_ticks_run_once_the_latest(app: aqueue.App) -> None:
    @app.periodic(cron="*/5 * * * *", name="five")
    async def five() -> None: ...

    start = datetime(2026, 11, 23, 9, 1, tzinfo=UTC).timestamp()
    clock = FakeClock(start)
    assert [o.outcome for o in await Scheduler(app, clock=clock).run_due()] == ["new"]
    # The scheduler was down for an hour: twelve ticks were missed.
    clock.now = start + 3600
    later = await Scheduler(app, clock=clock).run_due()
    assert [o.outcome for o in later] == ["enqueued"]
    assert later[0].tick == datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
    keys = app.broker.keys(app.settings.default_queue)
    assert await app.broker.client.xlen(keys.stream) == 1
    # A scheduler whose clock is behind can't enqueue an older tick.
    clock.now = start + 1800
    assert [o.outcome for o in await Scheduler(app, clock=clock).run_due()] == ["claimed"]
    assert await app.broker.client.xlen(keys.stream) == 1


async def test_singleton_skips_while_the_previous_run_is_live(app: aqueue.App) -> None:
    release = asyncio.Event()
    runs: list[str] = []

    @app.periodic(every=60, singleton=True, name="sync")
    async def sync(ctx: aqueue.Context) -> None:
        runs.append(ctx.id)
        await release.wait()

    clock = FakeClock(6000.0)
    scheduler = Scheduler(app, clock=clock)
    assert [o.outcome for o in await scheduler.run_due()] == ["new"]
    clock.now += 60
    (first,) = await scheduler.run_due()
    assert first.outcome == "enqueued"
    async with running_worker(app, beat=False):
        await wait_until(lambda: runs == [first.task_id])
        clock.now += 60
        (second,) = await scheduler.run_due()
        assert second.outcome == "skipped" and second.task_id == first.task_id
        release.set()
        await app.result(first.task_id).get(timeout=10)
        clock.now += 60
        (third,) = await scheduler.run_due()
        assert third.outcome == "enqueued"
        await app.result(third.task_id).get(timeout=10)
    assert runs == [first.task_id, third.task_id]


async def test_every_with_three_workers_runs_each_tick_once(app: aqueue.App) -> None:
    runs: list[str] = []
    late: list[float] = []

    @app.periodic(every=timedelta(seconds=1), name="heartbeat")
    async def heartbeat(ctx: aqueue.Context) -> None:
        runs.append(ctx.id)
        late.append(time.time() - int(ctx.id.rsplit(":", 1)[1]) / 1000)

    async with running_worker(app), running_worker(app), running_worker(app):
        await wait_until(lambda: len(runs) >= 3, timeout=15)
    print(f"\nperiodic run started after its tick (ms): {[round(x * 1000, 1) for x in late]}")
    assert len(runs) == len(set(runs))
    ticks = sorted(int(task_id.rsplit(":", 1)[1]) for task_id in runs)
    assert all(t % 1000 == 0 for t in ticks)
    # Each tick ran once. (A tick may be skipped only if every scheduler slept
    # through it, the missed-tick policy; on an idle machine none is.)
    assert len(set(ticks)) == len(ticks) >= 3


async def test_worker_without_beat_enqueues_nothing(app: aqueue.App) -> None:
    runs: list[str] = []

    @app.periodic(every=timedelta(seconds=0.2), name="fast")
    async def fast(ctx: aqueue.Context) -> None:
        runs.append(ctx.id)

    async with running_worker(app, beat=False):
        await asyncio.sleep(1.0)
    assert runs == []
    assert await app.broker.client.get(app.broker.keys("default").periodic("fast")) is None
    async with running_worker(app):
        await wait_until(lambda: len(runs) >= 2)


# -- the CLI ----------------------------------------------------------------------


def test_cli_schedule_lists_next_runs(redis_url: str, prefix: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aqueue", "schedule", "periodic_app:app", "-n", "2"],
        env=worker_env(redis_url, prefix),
        cwd=str(ROOT / "tests" / "apps"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "report.weekly: cron '0 3 * * MON' (Asia/Seoul)" in out
    assert "tick.every_second: every 0:00:01" in out
    assert "last tick claimed: never" in out
    weekly = out[out.index("report.weekly") :]
    nexts = [line.split("next: ")[1] for line in weekly.splitlines() if "next: " in line][:2]
    first = datetime.fromisoformat(nexts[0])
    assert (first.weekday(), first.hour, first.minute) == (0, 3, 0)
    assert first.utcoffset() == timedelta(hours=9)
    assert datetime.fromisoformat(nexts[1]) - first == timedelta(days=7)


def test_cli_beat_and_workers_enqueue_each_tick_once(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    env = worker_env(redis_url, prefix)
    procs = [
        start_cli_worker(redis_url, prefix, "periodic_app:app", "-c", "4"),
        start_cli_worker(redis_url, prefix, "periodic_app:app", "-c", "4"),
        start_cli_worker(redis_url, prefix, "periodic_app:app", "-c", "4", "--no-beat"),
        subprocess.Popen(
            [sys.executable, "-m", "aqueue", "beat", "periodic_app:app"],
            env=env,
            cwd=str(ROOT / "tests" / "apps"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        deadline = time.monotonic() + 30
        while client.llen(f"{prefix}:runs") < 4:
            assert time.monotonic() < deadline, "periodic runs did not arrive"
            assert all(p.poll() is None for p in procs), [p.stdout.read() for p in procs]  # type: ignore[union-attr]
            time.sleep(0.05)
    finally:
        for p in procs:
            p.terminate()
        outputs = [p.communicate(timeout=30)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    runs = [x.decode() for x in client.lrange(f"{prefix}:runs", 0, -1)]
    client.close()
    assert len(runs) == len(set(runs))
    ticks = sorted(int(r.rsplit(":", 1)[1]) for r in runs)
    assert len(set(ticks)) == len(ticks) >= 4 and all(t % 1000 == 0 for t in ticks)
    assert "enqueued the" in outputs[3] or any("enqueued the" in o for o in outputs)


async def test_record_shows_periodic_run(app: aqueue.App) -> None:
    @app.periodic(every=3600, args=(5,), name="hourly")
    def hourly(n: int) -> int:
        return n * 2

    clock = FakeClock(7200.0 + 10)
    scheduler = Scheduler(app, clock=clock)
    await scheduler.run_due()
    clock.now += 3600
    (outcome,) = await scheduler.run_due()
    r = app.result(outcome.task_id)
    assert await r.status() is TaskStatus.QUEUED
    async with running_worker(app, beat=False):
        assert await r.get(timeout=10) == 10
    assert (await scheduler.last_ticks())["hourly"] == 7200.0 + 3600


async def test_scheduler_survives_a_redis_restart(prefix: str) -> None:
    from .conftest import redis_server

    with redis_server() as server:
        app = aqueue.App(server.url, prefix=prefix, connect_timeout=0.5)

        @app.periodic(every=timedelta(seconds=0.2), name="pulse")
        async def pulse() -> None: ...

        scheduler = Scheduler(app)
        runner = asyncio.create_task(scheduler.run())
        try:

            async def last_tick() -> float | None:
                try:
                    return (await scheduler.last_ticks())["pulse"]
                except aqueue.ConnectionFailed:
                    return None
                except (OSError, redis.exceptions.ConnectionError):
                    return None

            await wait_until(last_tick)
            server.stop()
            await asyncio.sleep(0.6)  # ticks come and go while Redis is down
            assert not runner.done()
            server.start()
            before = time.time()
            await wait_until(lambda: _after(last_tick, before), timeout=15)
            assert not runner.done()
            scheduler.stop()
            await asyncio.wait_for(runner, 5)  # stop() ends run() without a cancel
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            await app.close()


async def _after(read: Any, when: float) -> bool:
    tick = await read()
    return tick is not None and tick >= when - 0.2
