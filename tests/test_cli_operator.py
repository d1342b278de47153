"""Operator commands with only ``--url``/``--prefix`` (queues found in Redis), and the
``-A/--app MODULE:APP`` and ``AQUEUE_APP`` forms, run as real CLI processes against
the session's private Redis and real workers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

import aqueue

from .conftest import free_port, wait_until, worker_env
from .ops_support import APPS, basic_producer, spawn, stop, wait_for


@pytest.fixture
async def producer(redis_url: str, prefix: str) -> AsyncIterator[aqueue.App]:
    """The tasks of tests/apps/basic.py on this test's prefix, for enqueueing here."""
    app = basic_producer(redis_url, prefix)
    try:
        yield app
    finally:
        await app.close()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def bare(
    redis_url: str, prefix: str, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """``aqueue ARGS`` with only AQUEUE_REDIS_URL/AQUEUE_PREFIX set (no App anywhere),
    plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "aqueue", *args],
        env={**worker_env(redis_url, prefix), "AQUEUE_APP": "", **env},
        cwd=str(APPS),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def bare_json(redis_url: str, prefix: str, *args: str, **env: str) -> Any:
    proc = bare(redis_url, prefix, *args, "--json", **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def figures(data: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """(waiting, running, delayed) of each queue in an ``inspect --json`` document."""
    return {q["queue"]: (q["waiting"], q["pending"], q["delayed"]) for q in data["queues"]}


def state(redis_url: str, prefix: str, task_id: str, *args: str, **env: str) -> str:
    """The state ``aqueue status ID`` prints (without an App unless ``args`` give one)."""
    proc = bare(redis_url, prefix, "status", *args, task_id, **env)
    first = (proc.stdout.splitlines() or [""])[0]
    assert first.startswith(f"{task_id}: "), proc.stdout + proc.stderr
    return first.split(": ", 1)[1]


async def test_purge_needs_only_the_url(redis_url: str, prefix: str, producer: aqueue.App) -> None:
    add = producer.tasks["basic.add"]
    waiting = [await add.enqueue(i, i) for i in range(4)]
    delayed = [await add.options(delay=600).enqueue(i, 0) for i in range(2)]
    other = await add.options(queue="emails").enqueue(1, 1)
    refused = bare(redis_url, prefix, "purge", "default", stdin="n\n")
    assert refused.returncode == 1 and "nothing purged" in refused.stdout
    assert "Remove 4 waiting and 2 delayed task(s)" in refused.stdout
    assert figures(bare_json(redis_url, prefix, "inspect"))["default"] == (4, 0, 2)

    done = bare(redis_url, prefix, "purge", "default", "--yes")
    assert done.returncode == 0, done.stderr
    assert "purged 6 task(s) from 'default' (4 waiting, 2 delayed)" in done.stdout
    assert figures(bare_json(redis_url, prefix, "inspect")) == {
        "default": (0, 0, 0),
        "emails": (1, 0, 0),
    }
    for handle in waiting + delayed:
        assert state(redis_url, prefix, handle.id) == "aborted"
        with pytest.raises(aqueue.TaskAborted, match="purged"):
            await handle.get(timeout=5)
    shown = bare(redis_url, prefix, "status", waiting[0].id)
    assert "error: TaskAborted: purged from the queue" in shown.stdout
    # The other queue was left alone.
    assert state(redis_url, prefix, other.id) == "queued"
    assert await other.status() is aqueue.TaskStatus.QUEUED


async def test_inspect_json_finds_queues_and_workers_in_redis(
    redis_url: str, prefix: str, producer: aqueue.App
) -> None:
    add = producer.tasks["basic.add"]
    empty = bare_json(redis_url, prefix, "inspect")
    assert [q["queue"] for q in empty["queues"]] == ["default"]
    assert (empty["workers"], empty["tasks"], empty["prefix"]) == ([], [], prefix)

    worker = spawn(redis_url, prefix, "worker", "-A", "basic:app", "-c", "3")
    try:
        later = await add.options(delay=600).enqueue(1, 1)
        for i in range(3):
            await add.options(queue="emails").enqueue(i, i)
        data = wait_for(lambda: (d := bare_json(redis_url, prefix, "inspect"))["workers"] and d)
        (w,) = data["workers"]
        assert (w["pid"], w["queues"], w["concurrency"]) == (worker.pid, ["default"], 3)
        assert figures(data) == {"default": (0, 0, 1), "emails": (3, 0, 0)}
        assert data["tasks"] == []  # no App: nothing registered to show
        assert await later.status() is aqueue.TaskStatus.SCHEDULED
        only = bare_json(redis_url, prefix, "inspect", "--queues", "emails")
        assert figures(only) == {"emails": (3, 0, 0)}
        assert only["workers"] == []  # nobody serves emails
        human = bare(redis_url, prefix, "inspect")
        assert human.returncode == 0
        assert "WORKERS (1 alive)" in human.stdout and str(worker.pid) in human.stdout
        assert "emails" in human.stdout
    finally:
        assert stop(worker) == 0
    assert bare_json(redis_url, prefix, "inspect")["workers"] == []


async def test_check_without_an_app(redis_url: str, prefix: str, producer: aqueue.App) -> None:
    nobody = bare(redis_url, prefix, "check")
    assert nobody.returncode == 1
    assert "no live worker for queue(s) default" in nobody.stderr
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    unreachable = bare(redis_url, prefix, "check", "--url", nowhere)
    assert unreachable.returncode == 2 and "Redis unreachable" in unreachable.stderr
    by_env = bare(redis_url, prefix, "check", AQUEUE_REDIS_URL=nowhere)
    assert by_env.returncode == 2 and "Redis unreachable" in by_env.stderr

    worker = spawn(redis_url, prefix, "worker", "basic:app")
    try:
        ok = wait_for(lambda: (p := bare(redis_url, prefix, "check")).returncode == 0 and p)
        assert "ok: 1 worker(s) alive for default" in ok.stdout
        # A queue found in Redis that no worker reads makes the check fail ...
        await producer.tasks["basic.add"].options(queue="emails").enqueue(1, 2)
        missing = bare(redis_url, prefix, "check")
        assert missing.returncode == 1
        assert missing.stderr.strip() == "unhealthy: no live worker for queue(s) emails"
        # ... unless the check is narrowed to the served queue, or to the App's queues.
        assert bare(redis_url, prefix, "check", "--queues", "default").returncode == 0
        assert bare(redis_url, prefix, "check", "-A", "basic:app").returncode == 0
        assert bare(redis_url, prefix, "check", AQUEUE_APP="basic:app").returncode == 0
    finally:
        assert stop(worker) == 0
    after = bare(redis_url, prefix, "check", "--queues", "default")
    assert after.returncode == 1 and "default" in after.stderr


async def test_status_result_abort_without_an_app(
    redis_url: str, prefix: str, producer: aqueue.App
) -> None:
    add, sleep_then = producer.tasks["basic.add"], producer.tasks["basic.sleep_then"]
    elsewhere = await add.options(queue="emails").enqueue(7, 8)
    worker = spawn(redis_url, prefix, "worker", "basic:app", "--grace-period", "1")
    try:
        done = await add.enqueue(2, 3)
        assert await done.get(timeout=20) == 5
        got = bare(redis_url, prefix, "result", done.id)
        assert (got.returncode, got.stdout.strip()) == (0, "5")
        shown = bare(redis_url, prefix, "status", done.id)
        assert shown.returncode == 0
        lines = shown.stdout.splitlines()
        assert lines[0] == f"{done.id}: succeeded"
        assert {"  task: basic.add", "  queue: default", "  attempt: 1"} <= set(lines)

        # A task in a queue only Redis knows of is found there.
        shown = bare(redis_url, prefix, "status", elsewhere.id)
        assert shown.stdout.splitlines()[:3] == [
            f"{elsewhere.id}: queued",
            "  task: basic.add",
            "  queue: emails",
        ]
        pending = bare(redis_url, prefix, "result", elsewhere.id)
        assert pending.returncode == 2 and "queued (not finished)" in pending.stderr
        aborted = bare(redis_url, prefix, "abort", elsewhere.id)
        assert aborted.returncode == 0, aborted.stderr
        assert f"{elsewhere.id}: abort requested (was queued)" in aborted.stdout
        assert state(redis_url, prefix, elsewhere.id) == "aborted"
        failed = bare(redis_url, prefix, "result", elsewhere.id)
        assert failed.returncode == 1 and "aborted on request" in failed.stderr
        again = bare(redis_url, prefix, "abort", elsewhere.id)
        assert again.returncode == 1 and "nothing to abort (status aborted)" in again.stdout
        with pytest.raises(aqueue.TaskAborted):
            await elsewhere.get(timeout=5)

        # A running task is cancelled in its worker.
        running = await sleep_then.enqueue(60, "never")

        async def is_running() -> bool:
            return await running.status() is aqueue.TaskStatus.RUNNING

        await wait_until(is_running, timeout=20)
        stopped = bare(redis_url, prefix, "abort", running.id)
        assert stopped.returncode == 0, stopped.stderr
        assert "abort requested (was running)" in stopped.stdout
        with pytest.raises(aqueue.TaskAborted):
            await running.get(timeout=20)
        assert state(redis_url, prefix, running.id) == "aborted"
        # The worker carries on.
        assert await (await add.enqueue(20, 22)).get(timeout=20) == 42
    finally:
        assert stop(worker) == 0
    unknown = bare(redis_url, prefix, "status", "no-such-task")
    assert unknown.returncode == 1 and "no-such-task: unknown" in unknown.stdout
    assert bare(redis_url, prefix, "result", "no-such-task").returncode == 2
    assert bare(redis_url, prefix, "abort", "no-such-task").returncode == 1


async def test_app_option_env_and_positional_forms(
    redis_url: str, prefix: str, producer: aqueue.App
) -> None:
    add = producer.tasks["basic.add"]
    registered = {"basic.add", "basic.sleep_then", "basic.blocking_sleep", "basic.count"}
    for form in (
        bare_json(redis_url, prefix, "inspect", "-A", "basic:app"),
        bare_json(redis_url, prefix, "inspect", "--app", "basic:app"),
        bare_json(redis_url, prefix, "inspect", AQUEUE_APP="basic:app"),
        bare_json(redis_url, prefix, "inspect", "basic:app"),
    ):
        assert {t["name"] for t in form["tasks"]} == registered
        assert [q["queue"] for q in form["queues"]] == ["default"]

    # enqueue needs the App: a usage error without one, every form with one.
    refused = bare(redis_url, prefix, "enqueue", "basic.add", "--args", "[1, 2]")
    assert refused.returncode != 0 and "needs the App" in refused.stderr
    ids = [
        bare(redis_url, prefix, "enqueue", "-A", "basic:app", "basic.add", "--args", "[1, 2]"),
        bare(redis_url, prefix, "enqueue", "basic.add", "--args", "[1, 2]", AQUEUE_APP="basic:app"),
        bare(redis_url, prefix, "enqueue", "basic:app", "basic.add", "--args", "[1, 2]"),
    ]
    assert [p.returncode for p in ids] == [0, 0, 0], [p.stderr for p in ids]
    task_ids = [p.stdout.strip() for p in ids]
    for task_id in task_ids:
        assert state(redis_url, prefix, task_id, "-A", "basic:app") == "queued"
        assert state(redis_url, prefix, task_id, AQUEUE_APP="basic:app") == "queued"
        assert state(redis_url, prefix, task_id, "basic:app") == "queued"

    # purge QUEUE with each form of naming the App (the three above go first).
    waiting = len(task_ids)
    for form, env in (
        (["-A", "basic:app", "default"], {}),
        (["default"], {"AQUEUE_APP": "basic:app"}),
        (["basic:app", "default"], {}),
    ):
        handles = [await add.enqueue(i, 1) for i in range(2)]
        purged = bare(redis_url, prefix, "purge", *form, "--yes", **env)
        assert purged.returncode == 0, purged.stderr
        waiting += len(handles)
        assert f"purged {waiting} task(s) from 'default' ({waiting} waiting" in purged.stdout
        assert {await h.status() for h in handles} == {aqueue.TaskStatus.ABORTED}
        waiting = 0
    assert [state(redis_url, prefix, i) for i in task_ids] == ["aborted"] * 3
    assert figures(bare_json(redis_url, prefix, "inspect")) == {"default": (0, 0, 0)}

    # With the App, a task sent to a queue none of its tasks uses is still found.
    sent = bare(
        redis_url, prefix, "enqueue", "-A", "basic:app", "basic.add", "--args", "[3, 4]",
        "--queue", "emails",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    shown = bare(redis_url, prefix, "status", "-A", "basic:app", task_id)
    assert shown.stdout.splitlines()[:3] == [
        f"{task_id}: queued",
        "  task: basic.add",
        "  queue: emails",
    ]
    aborted = bare(redis_url, prefix, "abort", "-A", "basic:app", task_id)
    assert aborted.returncode == 0 and "abort requested (was queued)" in aborted.stdout
    assert state(redis_url, prefix, task_id, "basic:app") == "aborted"


async def test_worker_with_app_option_runs_tasks(
    redis_url: str, prefix: str, producer: aqueue.App
) -> None:
    add = producer.tasks["basic.add"]
    first = [await add.enqueue(i, 10) for i in range(5)]
    emails = [await add.options(queue="emails").enqueue(i, 100) for i in range(3)]

    nameless = bare(redis_url, prefix, "worker", "--burst")
    assert nameless.returncode != 0 and "needs the App" in nameless.stderr
    assert {await h.status() for h in first} == {aqueue.TaskStatus.QUEUED}

    burst = bare(redis_url, prefix, "worker", "-A", "basic:app", "--burst")
    assert burst.returncode == 0, burst.stderr
    assert "worker stopped: 5 succeeded, 0 failed" in burst.stderr
    assert [await h.get(timeout=5) for h in first] == [10, 11, 12, 13, 14]
    assert {await h.status() for h in emails} == {aqueue.TaskStatus.QUEUED}

    by_env = bare(redis_url, prefix, "worker", "--burst", "-q", "emails", AQUEUE_APP="basic:app")
    assert by_env.returncode == 0, by_env.stderr
    assert [await h.get(timeout=5) for h in emails] == [100, 101, 102]

    # Under a supervisor: its children are started with the same --app.
    more = [await add.enqueue(i, 1000) for i in range(6)]
    supervised = bare(redis_url, prefix, "worker", "-A", "basic:app", "--processes", "2", "--burst")
    assert supervised.returncode == 0, supervised.stderr
    assert "all worker processes stopped" in supervised.stderr
    assert [await h.get(timeout=5) for h in more] == list(range(1000, 1006))


async def test_dead_list_and_replay_without_an_app(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    dead_on_failure = {"AQUEUE_DEAD_LETTER_ON_FAILURE": "1"}
    ids = []
    for key in ("d0", "d1"):
        sent = bare(
            redis_url, prefix, "enqueue", "-A", "faults:app", "faults.needs_flag",
            "--args", json.dumps([key]),
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        ids.append(sent.stdout.strip())
    ran = bare(redis_url, prefix, "worker", "-A", "faults:app", "--burst", **dead_on_failure)
    assert ran.returncode == 0, ran.stderr
    assert [state(redis_url, prefix, i) for i in ids] == ["dead", "dead"]

    listed = bare_json(redis_url, prefix, "dead", "list")
    assert {d["task_id"] for d in listed} == set(ids)
    for d in listed:
        assert (d["queue"], d["task_name"], d["reason"]) == (
            "default",
            "faults.needs_flag",
            "failed",
        )
        assert "RuntimeError: flag d" in d["error"]
    human = bare(redis_url, prefix, "dead", "list")
    assert human.returncode == 0 and "2 message(s)" in human.stdout

    entry = {d["task_id"]: d["entry_id"] for d in listed}
    rclient.set(f"{prefix}:flag:d0", 1)
    replayed = bare(redis_url, prefix, "dead", "replay", entry[ids[0]])
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {entry[ids[0]]} (default)" in replayed.stdout
    assert "1 message(s) back in their queue" in replayed.stdout
    missing = bare(redis_url, prefix, "dead", "replay", "1-1")
    assert missing.returncode == 1 and "not found: 1-1" in missing.stderr
    assert figures(bare_json(redis_url, prefix, "inspect"))["default"][0] == 1

    rerun = bare(redis_url, prefix, "worker", "--burst", AQUEUE_APP="faults:app", **dead_on_failure)
    assert rerun.returncode == 0, rerun.stderr
    got = bare(redis_url, prefix, "result", ids[0])
    assert (got.returncode, got.stdout.strip()) == (0, '"d0"')
    assert [d["task_id"] for d in bare_json(redis_url, prefix, "dead", "list")] == [ids[1]]
    purged = bare(redis_url, prefix, "dead", "purge", "--yes")
    assert purged.returncode == 0 and "deleted 1 dead-lettered" in purged.stdout
    assert bare_json(redis_url, prefix, "dead", "list") == []


def test_schedule_without_an_app(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    nothing = bare(redis_url, prefix, "schedule")
    assert nothing.returncode == 0 and "no periodic schedule has claimed a tick" in nothing.stdout
    key = f"{prefix}:{{default}}:periodic:tick.every_second"
    beat = spawn(redis_url, prefix, "beat", "-A", "periodic_app:app")
    try:
        wait_for(lambda: rclient.exists(key), timeout=30)
    finally:
        assert stop(beat) == 0
    claimed = datetime.fromtimestamp(int(rclient.get(key) or 0) / 1000, UTC)

    listed = bare(redis_url, prefix, "schedule")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "report.weekly: queue=default"
    assert lines[2] == "tick.every_second: queue=default"
    assert len(lines) == 4
    assert datetime.fromisoformat(lines[3].split("last tick claimed: ")[1]) == claimed
    weekly = datetime.fromisoformat(lines[1].split("last tick claimed: ")[1])
    assert weekly.astimezone(UTC).weekday() == 6  # Monday 03:00 in Seoul is Sunday in UTC

    # With the App: its declared schedules, the same claimed tick, the next ones.
    declared = bare(redis_url, prefix, "schedule", "-A", "periodic_app:app", "-n", "1")
    assert declared.returncode == 0, declared.stderr
    out = declared.stdout
    every = out[out.index("tick.every_second: every 0:00:01") : out.index("report.weekly")]
    seen = every.split("last tick claimed: ")[1].splitlines()[0]
    assert datetime.fromisoformat(seen) == claimed
    assert "next: " in every


async def test_prefix_and_url_on_the_command_line(
    redis_url: str, prefix: str, producer: aqueue.App
) -> None:
    add = producer.tasks["basic.add"]
    handles = [await add.enqueue(i, i) for i in range(3)]
    decoy = {"AQUEUE_PREFIX": f"{prefix}-other"}
    elsewhere = bare_json(redis_url, prefix, "inspect", **decoy)
    assert elsewhere["prefix"] == f"{prefix}-other"
    assert figures(elsewhere) == {"default": (0, 0, 0)}

    here = bare_json(redis_url, prefix, "inspect", "--prefix", prefix, **decoy)
    assert here["prefix"] == prefix and figures(here) == {"default": (3, 0, 0)}
    # The URL on the command line wins over an unreachable one in the environment.
    nowhere = {"AQUEUE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", **decoy}
    flags = ("--url", redis_url, "--prefix", prefix)
    assert figures(bare_json(redis_url, prefix, "inspect", *flags, **nowhere)) == {
        "default": (3, 0, 0)
    }
    assert state(redis_url, prefix, handles[0].id, *flags, **nowhere) == "queued"
    checked = bare(redis_url, prefix, "check", *flags, **nowhere)
    assert checked.returncode == 1 and "no live worker for queue(s) default" in checked.stderr

    purged = bare(redis_url, prefix, "purge", "default", "--yes", *flags, **nowhere)
    assert purged.returncode == 0, purged.stderr
    assert "purged 3 task(s) from 'default' (3 waiting, 0 delayed)" in purged.stdout
    for handle in handles:
        assert await handle.status() is aqueue.TaskStatus.ABORTED
    assert state(redis_url, prefix, handles[1].id, "--prefix", prefix, **decoy) == "aborted"
    # The same id under the other prefix is unknown there.
    assert state(redis_url, prefix, handles[1].id, **decoy) == "unknown"
