"""Schedules kept in Redis, picked up by real worker processes; catch-up of missed ticks."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

import aqueue
from aqueue.core.errors import ConfigError
from aqueue.periodic import Scheduler

from .conftest import ROOT, start_cli_worker, worker_env


def _runs(client: redis.Redis, prefix: str, key: str) -> list[str]:
    return [v.decode() for v in client.lrange(f"{prefix}:ran:{key}", 0, -1)]


def _wait(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def _cli(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aqueue", "schedule", *args],
        env=worker_env(redis_url, prefix),
        cwd=str(ROOT / "tests" / "apps"),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settled(client: redis.Redis, prefix: str, key: str) -> list[str]:
    """The runs once no new one came for 2.5 s (a tick claimed before a change may
    still be running, and a busy worker takes a moment to see the change)."""
    seen = _runs(client, prefix, key)
    for _ in range(10):
        time.sleep(2.5)
        now = _runs(client, prefix, key)
        if now == seen:
            return now
        seen = now
    raise AssertionError(f"runs of {key} never stopped")


def _ticks(ids: list[str]) -> list[int]:
    return [int(i.rsplit(":", 1)[1]) for i in ids]


async def test_added_at_run_time_two_workers_each_tick_once(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    app = aqueue.App(redis_url, prefix=prefix)
    stamp = app.task(name="ops_app.stamp")(_stamp)
    workers = [start_cli_worker(redis_url, prefix, "ops_app:app") for _ in range(2)]
    try:
        _wait(lambda: len(client.keys(f"{prefix}:worker:*")) == 2)
        added_at = time.time()
        await app.schedules.add("pulse", stamp, every=1, args=("pulse",))
        _wait(lambda: len(_runs(client, prefix, "pulse")) >= 1)
        first_run = time.time()
        _wait(lambda: len(_runs(client, prefix, "pulse")) >= 5)
        await app.schedules.pause("pulse")
        paused = _settled(client, prefix, "pulse")
        time.sleep(2.5)
        assert _runs(client, prefix, "pulse") == paused  # nothing while paused
        listed = {i.name: i for i in await app.schedules.list()}
        assert listed["pulse"].paused and listed["pulse"].source == "redis"
        await app.schedules.resume("pulse")
        _wait(lambda: len(_runs(client, prefix, "pulse")) >= len(paused) + 3)
        assert await app.schedules.remove("pulse")
        done = _settled(client, prefix, "pulse")
        time.sleep(2.5)
        assert _runs(client, prefix, "pulse") == done  # removed: no more runs
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            assert w.wait(30) == 0
        await app.close()
    ids = _runs(client, prefix, "pulse")
    ticks = _ticks(ids)
    # Two schedulers, yet each tick ran exactly once, and every tick before the
    # pause and after the resume ran (no gap but the paused one).
    assert len(ticks) == len(set(ticks)) == len(ids)
    before = [t for t in ticks if t <= _ticks(paused)[-1]]
    after = [t for t in ticks if t > _ticks(paused)[-1]]
    assert before == list(range(before[0], before[-1] + 1, 1000))
    assert after == list(range(after[0], after[-1] + 1, 1000))
    assert after[0] - before[-1] > 2000  # the ticks while paused never ran
    assert ticks[0] / 1000 > added_at - 1  # no tick from before the add
    print(f"\npicked up: first run {first_run - added_at:.2f}s after add")


async def _stamp(ctx: aqueue.Context, key: str) -> None:  # ops_app.stamp's signature
    del ctx, key


def test_cli_add_list_pause_resume_remove(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    added = _cli(
        redis_url,
        prefix,
        "add",
        "hourly",
        "ops_app.note",
        "--cron",
        "0 * * * *",
        "--tz",
        "Europe/Paris",
        "--args",
        '["hourly", 3]',
    )
    assert added.returncode == 0, added.stderr
    assert "added hourly: cron '0 * * * *' (Europe/Paris) -> ops_app.note" in added.stdout
    # With the App, the arguments are checked against the signature at once.
    bad = _cli(
        redis_url,
        prefix,
        "-A",
        "ops_app:app",
        "add",
        "bad",
        "ops_app.note",
        "--every",
        "5",
        "--args",
        '["x", "not a number"]',
    )
    assert bad.returncode == 1 and "error: schedule 'bad'" in bad.stderr
    neither = _cli(redis_url, prefix, "add", "x", "ops_app.note")
    assert neither.returncode == 1 and "exactly one of cron= or every=" in neither.stderr
    not_json = _cli(redis_url, prefix, "add", "x", "ops_app.note", "--every", "5", "--args", "[1,")
    assert not_json.returncode == 1 and "--args must be a JSON array" in not_json.stderr

    listed = _cli(redis_url, prefix, "list", "-n", "2")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == (
        "hourly: cron '0 * * * *' (Europe/Paris) task=ops_app.note queue=default (kept in Redis)"
    )
    assert lines[1] == "  args: ['hourly', 3] kwargs: {}"
    assert lines[2].startswith("  last tick claimed: ")  # the add marks the past as done
    assert [line.split(":")[0] for line in lines[3:]] == ["  next", "  next"]
    with_app = _cli(redis_url, prefix, "-A", "ops_app:app", "list")
    assert "hourly: cron" in with_app.stdout and "the app has no periodic tasks" in with_app.stdout

    assert _cli(redis_url, prefix, "pause", "hourly").returncode == 0
    assert "(kept in Redis) paused" in _cli(redis_url, prefix, "list").stdout
    assert _cli(redis_url, prefix, "resume", "hourly").returncode == 0
    assert "paused" not in _cli(redis_url, prefix, "list").stdout
    removed = _cli(redis_url, prefix, "remove", "hourly")
    assert removed.returncode == 0 and "removed hourly" in removed.stdout
    assert client.hlen(f"{prefix}:{{schedules}}:all") == 0
    again = _cli(redis_url, prefix, "remove", "hourly")
    assert again.returncode == 1 and "no schedule named 'hourly'" in again.stderr
    missing = _cli(redis_url, prefix, "pause", "nope")
    assert missing.returncode == 1 and "no schedule named 'nope'" in missing.stderr


@pytest.mark.parametrize(("policy", "expected"), [("latest", 1), ("all", 3)])
async def test_catch_up_policy_for_missed_ticks(
    app: aqueue.App, policy: str, expected: int
) -> None:
    @app.periodic(every=10, name=f"catch.{policy}", catch_up=policy)  # type: ignore[arg-type]
    async def job() -> None:
        return None

    scheduler = Scheduler(app)
    start = 1_800_000_000.0  # a multiple of 10
    first = await scheduler.run_due(now=start + 1)
    assert [o.outcome for o in first] == ["new"]  # the first tick is recorded, not run
    # Then no scheduler ran for 35 s: the ticks at +10, +20 and +30 were missed.
    later = await Scheduler(app).run_due(now=start + 35)
    enqueued = [o.tick - start for o in later if o.outcome == "enqueued"]
    assert len(enqueued) == expected
    assert enqueued[-1] == 30
    if policy == "all":
        assert enqueued == [10, 20, 30]
    # Another scheduler at the same moment claims nothing again.
    again = await Scheduler(app).run_due(now=start + 35)
    assert [o.outcome for o in again if o.outcome == "enqueued"] == []


async def test_bad_schedules_are_clear_errors(app: aqueue.App) -> None:
    @app.task
    async def work(n: int) -> int:
        return n

    @app.periodic(every=60, name="declared")
    async def declared() -> None:
        return None

    with pytest.raises(ConfigError, match="declared in code"):
        await app.schedules.add("declared", work, every=5, args=(1,))
    with pytest.raises(ConfigError, match="schedule 'w'"):
        await app.schedules.add("w", work, every=5, args=("one",))
    with pytest.raises(ConfigError, match="catch_up"):
        await app.schedules.add("w", work, every=5, args=(1,), catch_up="some")
    with pytest.raises(ConfigError, match="unknown time zone"):
        await app.schedules.add("w", work, cron="0 3 * * *", tz="Mars/Olympus", args=(1,))
    with pytest.raises(ConfigError, match="no schedule named"):
        await app.schedules.resume("w")
    assert [i.name for i in await app.schedules.list()] == ["declared"]
