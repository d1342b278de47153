"""The operator commands against a real Redis and real worker processes:
inspect, check, result, enqueue, purge and the --processes supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
import redis

import aqueue
from aqueue.core.keys import worker_info_key

from .conftest import free_port, start_cli_worker
from .ops_support import basic_producer, cli, inspect_json, pid_running, spawn, stop, wait_for


@pytest.fixture
def basic_app(redis_url: str, prefix: str) -> aqueue.App:
    return basic_producer(redis_url, prefix)


async def test_inspect_json_matches_reality(
    redis_url: str, prefix: str, basic_app: aqueue.App
) -> None:
    add, sleep_then = basic_app.tasks["basic.add"], basic_app.tasks["basic.sleep_then"]
    worker = start_cli_worker(redis_url, prefix, "basic:app", "-c", "5", "--grace-period", "1")
    try:
        assert await (await add.enqueue(1, 2)).get(timeout=20) == 3
        long = [await sleep_then.enqueue(30, "x") for _ in range(2)]
        later = await add.options(delay=600).enqueue(5, 5)
        for handle in long:
            for _ in range(400):
                if await handle.status() is aqueue.TaskStatus.RUNNING:
                    break
                await asyncio.sleep(0.05)
        data = wait_for(
            lambda: (
                (d := inspect_json(redis_url, prefix))["workers"]
                and d["workers"][0]["running_count"] == 2
                and d
            )
        )
        (w,) = data["workers"]
        assert w["pid"] == worker.pid
        assert w["concurrency"] == 5
        assert w["queues"] == ["default"]
        assert w["stats"]["succeeded"] == 1 and w["stats"]["processed"] == 1
        assert {r["id"] for r in w["running"]} == {h.id for h in long}
        assert {r["id"] for r in data["running"]} == {h.id for h in long}
        assert all(r["name"] == "basic.sleep_then" for r in data["running"])
        assert w["uptime"] >= 0 and w["heartbeat_age"] < 10
        (q,) = data["queues"]
        assert q["queue"] == "default"
        assert (q["pending"], q["waiting"], q["delayed"], q["dead"]) == (2, 0, 1, 0)
        assert {t["name"] for t in data["tasks"]} >= {"basic.add", "basic.sleep_then"}
        human = cli(redis_url, prefix, "inspect", "basic:app")
        assert human.returncode == 0
        assert "WORKERS (1 alive)" in human.stdout and long[0].id in human.stdout
        assert later.id  # the delayed one is counted above
    finally:
        assert stop(worker) == 0
    # A stopped worker removes its entry at once (no waiting for the TTL).
    data = inspect_json(redis_url, prefix)
    assert data["workers"] == [] and data["running"] == []
    client = redis.Redis.from_url(redis_url)
    assert client.keys(worker_info_key(prefix, "*")) == []
    client.close()


def test_check_exit_codes(redis_url: str, prefix: str) -> None:
    nobody = cli(redis_url, prefix, "check", "basic:app")
    assert nobody.returncode == 1
    assert "no live worker for queue(s) default" in nobody.stderr
    unreachable = cli(
        redis_url, prefix, "check", "basic:app", "--url", f"redis://127.0.0.1:{free_port()}/0"
    )
    assert unreachable.returncode == 2
    assert "Redis unreachable" in unreachable.stderr
    worker = start_cli_worker(redis_url, prefix, "basic:app")
    try:
        ok = wait_for(
            lambda: (p := cli(redis_url, prefix, "check", "basic:app")).returncode == 0 and p
        )
        assert "1 worker(s) alive" in ok.stdout
        other = cli(redis_url, prefix, "check", "basic:app", "--queues", "default,reports")
        assert other.returncode == 1 and "reports" in other.stderr
    finally:
        stop(worker)
    assert cli(redis_url, prefix, "check", "basic:app").returncode == 1


async def test_enqueue_and_result_commands(
    redis_url: str, prefix: str, basic_app: aqueue.App
) -> None:
    worker = start_cli_worker(redis_url, prefix, "basic:app")
    try:
        sent = cli(
            redis_url,
            prefix,
            "enqueue",
            "basic:app",
            "basic.add",
            "--args",
            "[2, 3]",
            "--wait",
            "20",
        )
        assert sent.returncode == 0, sent.stderr
        task_id, value = sent.stdout.split()
        assert value == "5"
        assert await basic_app.result(task_id).get(timeout=5) == 5
        got = cli(redis_url, prefix, "result", "basic:app", task_id)
        assert (got.returncode, got.stdout.strip()) == (0, "5")
        by_kwargs = cli(
            redis_url, prefix, "enqueue", "basic:app", "basic.sleep_then",
            "--kwargs", '{"seconds": 0, "value": "hi"}', "--wait", "20",
        )  # fmt: skip
        assert by_kwargs.stdout.split()[1] == '"hi"'
        # Arguments that don't fit the signature: refused at the door, nothing enqueued.
        bad = cli(redis_url, prefix, "enqueue", "basic:app", "basic.add", "--args", "[1]")
        assert bad.returncode == 1 and "basic.add" in bad.stderr
        wrong_type = cli(
            redis_url, prefix, "enqueue", "basic:app", "basic.add", "--args", '["a", 1]',
            "--wait", "20",
        )  # fmt: skip
        assert wrong_type.returncode == 1
        assert "argument 'x': expected `int`, got `str`" in wrong_type.stderr
        assert "Traceback" not in wrong_type.stderr
    finally:
        stop(worker)
    typo = cli(redis_url, prefix, "enqueue", "basic:app", "basic.ad", "--args", "[1, 2]")
    assert typo.returncode == 1 and "did you mean 'basic.add'" in typo.stderr
    unknown = cli(redis_url, prefix, "result", "basic:app", "no-such-task")
    assert unknown.returncode == 2 and "unknown" in unknown.stderr
    queued = await basic_app.tasks["basic.add"].enqueue(1, 1)
    waited = cli(redis_url, prefix, "result", "basic:app", queued.id, "--wait", "0.2")
    assert waited.returncode == 2 and "queued" in waited.stderr


async def test_purge_removes_waiting_and_delayed_but_not_running(
    redis_url: str, prefix: str, basic_app: aqueue.App
) -> None:
    add, sleep_then = basic_app.tasks["basic.add"], basic_app.tasks["basic.sleep_then"]
    worker = start_cli_worker(redis_url, prefix, "basic:app", "-c", "1")
    try:
        running = await sleep_then.enqueue(6, "kept")
        wait_for(lambda: inspect_json(redis_url, prefix)["running"], timeout=20)
        waiting = [await add.enqueue(i, i) for i in range(5)]
        delayed = [await add.options(delay=600).enqueue(i, 0) for i in range(2)]
        refused = cli(redis_url, prefix, "purge", "basic:app", "default", stdin="n\n")
        assert refused.returncode == 1 and "nothing purged" in refused.stdout
        assert "5 waiting and 2 delayed" in refused.stdout
        done = cli(redis_url, prefix, "purge", "basic:app", "default", "--yes")
        assert done.returncode == 0, done.stderr
        assert "purged 7 task(s) from 'default' (5 waiting, 2 delayed)" in done.stdout
        assert "1 running" in done.stdout
        # The running task finishes normally; purged ones are aborted and wake waiters.
        assert await running.get(timeout=20) == "kept"
        for handle in waiting + delayed:
            with pytest.raises(aqueue.TaskAborted, match="purged"):
                await handle.get(timeout=5)
        q = inspect_json(redis_url, prefix)["queues"][0]
        assert (q["waiting"], q["delayed"], q["pending"]) == (0, 0, 0)
        # The queue still works after a purge.
        assert await (await add.enqueue(20, 22)).get(timeout=20) == 42
    finally:
        stop(worker)


def test_worker_processes_supervisor_restarts_and_drains(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "sup.pid"
    sup = spawn(
        redis_url, prefix, "worker", "basic:app", "--processes", "2", "--node", "n1",
        "--pidfile", str(tmp_path / "%n.pid"), "--logfile", str(tmp_path / "%n-%i.log"),
        "--grace-period", "2",
    )  # fmt: skip
    pidfile = tmp_path / "n1.pid"
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(sup.pid))
        workers = wait_for(
            lambda: len(w := inspect_json(redis_url, prefix)["workers"]) == 2 and w, timeout=30
        )
        assert {w["node"] for w in workers} == {"n1"}
        victim = workers[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        restarted = wait_for(
            lambda: (
                len(
                    w := [
                        x for x in inspect_json(redis_url, prefix)["workers"] if x["pid"] != victim
                    ]
                )
                == 2
                and w
            ),
            timeout=30,
        )
        assert victim not in {w["pid"] for w in restarted}
        assert sup.poll() is None
    finally:
        code = stop(sup, timeout=40)
    assert code == 0
    assert not pidfile.exists()
    assert all(not pid_running(w["pid"]) for w in restarted)
    logs = {p.name for p in tmp_path.glob("*.log")}
    assert {"n1-0.log", "n1-1.log", "n1-2.log"} <= logs
    assert "restarting" in (tmp_path / "n1-0.log").read_text()
    # The stopped ones removed their entries; the SIGKILLed one's expires with its TTL.
    wait_for(lambda: inspect_json(redis_url, prefix)["workers"] == [], timeout=20)


def test_supervisor_gives_up_when_children_keep_dying(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    proc = cli(
        redis_url, prefix, "worker", "no_such_module:app", "--processes", "1",
        "--logfile", str(tmp_path / "sup-%i.log"), timeout=90,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "giving up" in (tmp_path / "sup-0.log").read_text()


def test_pidfile_refuses_a_second_worker(redis_url: str, prefix: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "w.pid"
    first = spawn(redis_url, prefix, "worker", "basic:app", "--pidfile", str(pidfile))
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(first.pid))
        second = cli(redis_url, prefix, "worker", "basic:app", "--pidfile", str(pidfile))
        assert second.returncode != 0
        assert f"pid {first.pid} is running" in second.stderr
    finally:
        stop(first)
    assert not pidfile.exists()
    # A stale pidfile (its process is gone) does not stop a new worker.
    pidfile.write_text("999999\n")
    again = spawn(redis_url, prefix, "worker", "basic:app", "--pidfile", str(pidfile))
    try:
        wait_for(lambda: pidfile.read_text().strip() == str(again.pid))
    finally:
        stop(again)
    assert (
        json.loads(cli(redis_url, prefix, "inspect", "basic:app", "--json").stdout)["workers"] == []
    )


async def test_supervisor_ctrl_c_drains_once_and_orphans_stop(
    redis_url: str, prefix: str, basic_app: aqueue.App
) -> None:
    import subprocess
    import sys

    from .conftest import worker_env

    sleep_then = basic_app.tasks["basic.sleep_then"]

    def supervisor() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "aqueue", "worker", "basic:app", "--processes", "2"],
            env=worker_env(redis_url, prefix),
            cwd=str(Path(__file__).parent / "apps"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group, like a shell job
        )

    sup = supervisor()
    try:
        wait_for(lambda: len(inspect_json(redis_url, prefix)["workers"]) == 2, timeout=30)
        handle = await sleep_then.enqueue(2.0, "finished")
        wait_for(lambda: inspect_json(redis_url, prefix)["running"], timeout=20)
        # Ctrl-C in a terminal signals the whole foreground group: only the
        # supervisor is in it, and it forwards one SIGINT, so the task drains.
        os.killpg(sup.pid, signal.SIGINT)
        assert await handle.get(timeout=30) == "finished"
        assert (await handle.info()).attempt == 1
        assert sup.wait(30) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
    # A supervisor killed outright: its children notice and stop gracefully.
    sup = supervisor()
    try:
        children = wait_for(
            lambda: len(w := inspect_json(redis_url, prefix)["workers"]) == 2 and w, timeout=30
        )
        sup.kill()
        sup.wait(10)
        wait_for(lambda: not any(pid_running(w["pid"]) for w in children), timeout=20)
        assert inspect_json(redis_url, prefix)["workers"] == []
    finally:
        if sup.poll() is None:
            sup.kill()
