"""The test kit's virtual clock, against a real redis-server.

Delays, ETAs, expiry, retry backoff, unique windows and periodic ticks (cron
in a time zone) follow the clock, in Python and in the Lua scripts; an App
with no clock, and the production scripts, keep reading real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import aqueue
from aqueue._redis.scripts import SCRIPT_NAMES, clocked_source, script_source
from aqueue.testing import ClockError, TestClock, TestWorker

#: A Monday, 08:00 in Paris (07:00 UTC): far from the real time of any test run.
START = datetime(2031, 3, 3, 7, 0, tzinfo=UTC)


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


async def record(app: aqueue.App, queue: str, task_id: str) -> dict[bytes, bytes]:
    return await app.client.broker.record(queue, task_id)


@pytest.fixture
def clock(app: aqueue.App) -> Iterator[TestClock]:
    with TestClock(app, TestWorker(app), start=START) as clock:
        yield clock


async def test_a_delay_runs_when_the_clock_reaches_it(app: aqueue.App, clock: TestClock) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    r = await add.options(delay=300).enqueue(1, 2)
    rec = await record(app, "default", r.id)
    # The script stamped virtual time, not Redis' TIME.
    assert int(rec[b"enq"]) == ms(START)
    assert int(rec[b"eta"]) == ms(START) + 300_000
    assert await clock.advance(seconds=299) == []
    assert await r.status() is aqueue.TaskStatus.SCHEDULED
    (ran,) = await clock.advance(timedelta(seconds=1))
    assert ran.value == 3 and await r == 3
    assert clock.now() == START + timedelta(seconds=300)


async def test_an_eta_days_ahead(app: aqueue.App, clock: TestClock) -> None:
    @app.task
    async def remind(who: str) -> str:
        return who

    r = await remind.options(eta=START + timedelta(days=3, hours=2)).enqueue("ann")
    assert await clock.advance(days=3) == []
    ran = await clock.advance(hours=2)
    assert [f.value for f in ran] == ["ann"]
    assert await r == "ann"


async def test_retry_backoff_follows_the_clock(app: aqueue.App, clock: TestClock) -> None:
    attempts: list[tuple[int, float]] = []

    @app.task(retries=3, retry_delay=60, retry_backoff=True, retry_jitter=False)
    async def flaky(ctx: aqueue.Context) -> str:
        attempts.append((ctx.attempt, clock() - START.timestamp()))
        if ctx.attempt < 4:
            raise ConnectionError("busy")
        return "ok"

    r = await flaky.enqueue()
    await clock.run_due()
    assert attempts == [(1, 0.0)]
    # Backoff 60 s, then 120 s, then 240 s: each attempt runs at its own moment.
    ran = await clock.advance(minutes=10)
    assert attempts == [(1, 0.0), (2, 60.0), (3, 180.0), (4, 420.0)]
    assert [f.status for f in ran][-1] is aqueue.TaskStatus.SUCCEEDED
    assert await r == "ok"


async def test_expiry_is_judged_by_the_clock(app: aqueue.App, clock: TestClock) -> None:
    ran_bodies: list[int] = []

    @app.task
    async def late(n: int) -> None:
        ran_bodies.append(n)

    # Due in an hour, but only good for ten minutes: it expires unrun.
    r = await late.options(delay=3600, expires=600).enqueue(1)
    ok = await late.options(delay=60, expires=600).enqueue(2)
    ran = await clock.advance(hours=2)
    assert ran_bodies == [2]
    assert {f.id: f.status for f in ran} == {
        ok.id: aqueue.TaskStatus.SUCCEEDED,
        r.id: aqueue.TaskStatus.EXPIRED,
    }


async def test_a_weekly_cron_in_a_time_zone(app: aqueue.App, clock: TestClock) -> None:
    runs: list[datetime] = []

    @app.periodic(cron="0 9 * * MON", tz="Europe/Paris")
    async def weekly_report() -> None:
        runs.append(datetime.fromtimestamp(clock(), ZoneInfo("Europe/Paris")))

    # Three weeks and a day, across the switch to summer time (30 March 2031).
    await clock.advance(weeks=3, days=1)
    assert [r.isoformat() for r in runs] == [
        "2031-03-03T09:00:00+01:00",
        "2031-03-10T09:00:00+01:00",
        "2031-03-17T09:00:00+01:00",
        "2031-03-24T09:00:00+01:00",
    ]
    assert [t.outcome for t in clock.ticks] == ["enqueued"] * 4
    await clock.advance(weeks=1)
    assert runs[-1].isoformat() == "2031-03-31T09:00:00+02:00"


async def test_a_unique_window_ends_in_virtual_time(app: aqueue.App, clock: TestClock) -> None:
    @app.task(unique=True, unique_for=600)
    async def rebuild(shop: int) -> int:
        return shop

    first = await rebuild.options(delay=3600).enqueue(1)
    again = await rebuild.options(delay=3600).enqueue(1)
    assert again.id == first.id
    ran = await clock.advance(hours=1)
    assert [f.id for f in ran] == [first.id]
    later = await rebuild.enqueue(1)
    assert later.id != first.id


async def test_unique_key_ttl_shrinks_with_the_clock(app: aqueue.App, clock: TestClock) -> None:
    @app.task(unique=True, unique_for=600)
    async def rebuild(shop: int) -> int:
        return shop

    await rebuild.options(delay=3600).enqueue(1)
    client = app.client.broker.client
    (ukey,) = [k async for k in client.scan_iter(match=f"{app.settings.prefix}:*:unique:*")]
    before = await client.pttl(ukey)
    assert 4_100_000 < before <= 4_200_000  # the ETA's hour plus unique_for
    await clock.advance(minutes=30)
    assert 2_300_000 < await client.pttl(ukey) <= 2_400_000


async def test_time_moves_forward_only(clock: TestClock) -> None:
    with pytest.raises(ClockError, match="forward only"):
        await clock.advance(seconds=-1)
    with pytest.raises(ClockError, match="in the past"):
        await clock.advance_to(START - timedelta(days=1))
    with pytest.raises(ClockError, match="aware datetime"):
        TestClock(clock.app, start=datetime(2031, 1, 1))
    assert isinstance(ClockError("x"), aqueue.AqueueError)


async def test_production_never_reads_a_test_clock(
    app: aqueue.App, clock: TestClock, redis_url: str, prefix: str
) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    # A second App on the same keys, as a production process would be: the
    # clock installed on the first one is not its business.
    other = aqueue.App(redis_url=redis_url, prefix=prefix)
    other.task(add.fn, name=add.name)
    try:
        assert other.client.test_clock is None
        real_before = datetime.now(UTC)
        r = await other.tasks[add.name].options(delay=60).enqueue(1, 2)
        rec = await record(other, "default", r.id)
        real_after = datetime.now(UTC)
        # Stamped by Redis' TIME (the server's real clock), not by 2031.
        assert ms(real_before) - 1000 <= int(rec[b"enq"]) <= ms(real_after) + 1000
        # The clocked App stamps 2031 on the very same server.
        mine = await add.enqueue(3, 4)
        assert int((await record(app, "default", mine.id))[b"enq"]) == ms(START)
    finally:
        await other.close()
    # The scripts production loads have no clock argument to read at all.
    for name in SCRIPT_NAMES:
        assert "CLOCK_MS" not in script_source(name)
        assert "CLOCK_MS" in clocked_source(name)
    # Giving the clock back restores real time everywhere.
    clock.uninstall()
    assert app.client.test_clock is None and app.client.broker.test_clock is None
    r2 = await add.enqueue(5, 6)
    assert abs(int((await record(app, "default", r2.id))[b"enq"]) - ms(datetime.now(UTC))) < 5000


async def test_delay_from_synchronous_code_reads_the_clock_too(
    app: aqueue.App, clock: TestClock
) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    try:
        # A Django view's delay(), on the App's private loop thread.
        handle = await asyncio.to_thread(lambda: add.options(delay=60).delay(1, 2))
        rec = await record(app, "default", handle.id)
        assert (int(rec[b"enq"]), int(rec[b"eta"])) == (ms(START), ms(START) + 60_000)
        (ran,) = await clock.advance(minutes=1)
        assert ran.id == handle.id and ran.value == 3
    finally:
        app.close_sync()
