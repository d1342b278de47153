"""``aqueue multi``: detached named workers managed by pidfiles, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aqueue

from .ops_support import cli, inspect_json, pid_running, wait_for


def _pid(path: Path) -> int:
    return int(path.read_text().strip())


async def test_multi_start_status_restart_stop(redis_url: str, prefix: str, tmp_path: Path) -> None:
    app = aqueue.App(redis_url, prefix=prefix)

    @app.task(name="basic.sleep_then")
    async def sleep_then(seconds: float, value: str) -> str:
        return value

    common = ["--app", "basic:app", "--pidfile", f"{tmp_path}/%n.pid"]
    common += ["--logfile", f"{tmp_path}/%n.log"]

    def multi(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(redis_url, prefix, "multi", *args, *common)

    started = multi("start", "w1", "w2", "-c", "3")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "w1: started" in started.stdout and "w2: started" in started.stdout
    pids = {n: _pid(tmp_path / f"{n}.pid") for n in ("w1", "w2")}
    try:
        status = multi("status", "w1", "w2")
        assert status.returncode == 0
        assert f"w1: running (pid {pids['w1']})" in status.stdout
        workers = wait_for(lambda: len(w := inspect_json(redis_url, prefix)["workers"]) == 2 and w)
        assert {(w["node"], w["pid"], w["concurrency"]) for w in workers} == {
            ("w1", pids["w1"], 3),
            ("w2", pids["w2"], 3),
        }
        again = multi("start", "w1")
        assert again.returncode == 0 and "already running" in again.stdout

        restarted = multi("restart", "w1")
        assert restarted.returncode == 0, restarted.stderr
        new_pid = _pid(tmp_path / "w1.pid")
        assert new_pid != pids["w1"] and not pid_running(pids["w1"])
        pids["w1"] = new_pid

        # stop drains: a running task finishes before the worker exits.
        handle = await sleep_then.enqueue(2.0, "drained")
        await _wait_running(handle)
        too_short = multi("stop", "w1", "w2", "--timeout", "0.3")
        assert too_short.returncode == 1
        assert "still running after 0s" in too_short.stderr
        # (Stopping again would mean "now": running tasks would be handed back.)
        assert await handle.get(timeout=20) == "drained"
        wait_for(lambda: multi("status", "w1", "w2").stdout.count("stopped") == 2)
        stopped = multi("stop", "w1", "w2")
        assert stopped.returncode == 0 and "w1: not running" in stopped.stdout
        assert not (tmp_path / "w1.pid").exists() and not (tmp_path / "w2.pid").exists()
        assert all(not pid_running(p) for p in pids.values())

        after = multi("status", "w1", "w2")
        assert after.returncode == 1 and "w1: stopped" in after.stdout
        assert "aqueue" in (tmp_path / "w1.log").read_text()

        # A stale pidfile (the process is gone) is reported and replaced on start.
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        (tmp_path / "w1.pid").write_text(dead.stdout)
        stale = multi("status", "w1")
        assert stale.returncode == 1 and "stale pidfile" in stale.stdout
        revived = multi("start", "w1")
        assert revived.returncode == 0
        assert "stale pidfile" in revived.stdout and "w1: started" in revived.stdout
        pids["w1"] = _pid(tmp_path / "w1.pid")
    finally:
        final = multi("stop", "w1", "w2", "--timeout", "30", "--kill")
        assert final.returncode == 0
    assert all(not pid_running(p) for p in pids.values())
    await app.close()


async def _wait_running(handle: aqueue.AsyncResult[str]) -> None:
    import asyncio

    for _ in range(400):
        if await handle.status() is aqueue.TaskStatus.RUNNING:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("task never started")
