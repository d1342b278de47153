"""Helpers for the operations and integration tests: run the real CLI, find workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aqueue

from .conftest import ROOT, worker_env

APPS = ROOT / "tests" / "apps"
EXAMPLES = ROOT / "examples"


def cli(
    redis_url: str,
    prefix: str,
    *args: str,
    stdin: str | None = None,
    timeout: float = 60,
    cwd: Path = APPS,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m aqueue ARGS`` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "aqueue", *args],
        env={**worker_env(redis_url, prefix), **env},
        cwd=str(cwd),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(
    redis_url: str, prefix: str, *args: str, cwd: Path = APPS, **env: str
) -> subprocess.Popen[bytes]:
    """Start ``python -m aqueue ARGS`` in the background (output discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "aqueue", *args],
        env={**worker_env(redis_url, prefix), **env},
        cwd=str(cwd),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def inspect_json(redis_url: str, prefix: str, app: str = "basic:app") -> dict[str, Any]:
    proc = cli(redis_url, prefix, "inspect", app, "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll a sync predicate until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def stop(proc: subprocess.Popen[Any], timeout: float = 30) -> int:
    """SIGTERM a process we started and wait for it (SIGKILL if it hangs)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        return "State:\tZ" not in status.read_text()
    return True


def basic_producer(redis_url: str, prefix: str) -> aqueue.App:
    """The tasks of tests/apps/basic.py on this test's prefix, for enqueueing here."""
    app = aqueue.App(redis_url, prefix=prefix)

    @app.task(name="basic.add")
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="basic.sleep_then")
    async def sleep_then(seconds: float, value: str) -> str:
        return value

    return app
