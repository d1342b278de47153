"""The real ``aqueue worker`` CLI in a subprocess."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import aqueue

from .conftest import ROOT, start_cli_worker, wait_until


def _tasks(redis_url: str, prefix: str) -> aqueue.App:
    sys.path.insert(0, str(ROOT / "tests" / "apps"))
    import basic

    app = aqueue.App(redis_url, prefix=prefix)
    for task in basic.app.tasks.values():
        app.task(name=task.name, queue=task.config.queue)(task.fn)
    return app


def _output(proc: subprocess.Popen[bytes]) -> str:
    out, _ = proc.communicate(timeout=30)
    return out.decode()


async def test_cli_worker_runs_tasks_and_logs_them(redis_url: str, prefix: str) -> None:
    app = _tasks(redis_url, prefix)
    proc = start_cli_worker(redis_url, prefix, "basic:app", "--concurrency", "10")
    try:
        results = [await app.tasks["basic.add"].enqueue(i, i) for i in range(5)]
        assert await asyncio.wait_for(asyncio.gather(*results), 20) == [0, 2, 4, 6, 8]
        thread_result = await app.tasks["basic.blocking_sleep"].enqueue(0.01)
        assert await thread_result.get(timeout=20) == 0.01
    finally:
        proc.send_signal(signal.SIGTERM)
        output = _output(proc)
        await app.close()
    assert proc.returncode == 0, output
    assert "concurrency: 10" in output  # the banner
    assert "basic.add, basic.blocking_sleep" in output
    assert output.count("succeeded in") >= 6  # one line per task
    assert "worker stopped" in output


async def test_sigterm_lets_running_tasks_finish(redis_url: str, prefix: str) -> None:
    app = _tasks(redis_url, prefix)
    proc = start_cli_worker(
        redis_url, prefix, "basic:app", "--concurrency", "20", "--grace-period", "20"
    )
    try:
        sleeper = app.tasks["basic.sleep_then"]
        results = [await sleeper.enqueue(1.5, f"v{i}") for i in range(10)]

        async def all_running() -> bool:
            states = [await r.status() for r in results]
            return all(s is aqueue.TaskStatus.RUNNING for s in states)

        await wait_until(all_running, timeout=20)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        values = await asyncio.wait_for(asyncio.gather(*results), 20)
        output = _output(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        await app.close()
    assert values == [f"v{i}" for i in range(10)]
    assert proc.returncode == 0, output
    assert "waiting up to 20s for 10 running task(s)" in output
    assert time.monotonic() - started < 20


async def test_worker_reports_a_missing_app_clearly(redis_url: str, prefix: str) -> None:
    proc = start_cli_worker(redis_url, prefix, "no_such_module:app")
    output = _output(proc)
    assert proc.returncode != 0
    assert "can't import 'no_such_module'" in output


def test_help_explains_every_flag() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aqueue", "worker", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for flag in (
        "--concurrency",
        "--queues",
        "--url",
        "--grace-period",
        "--log-level",
        "--visibility-timeout",
        "--threads",
        "--burst",
    ):
        assert flag in proc.stdout
