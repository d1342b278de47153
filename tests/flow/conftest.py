"""Real worker processes running tests/apps/flow_app.py, cleaned up after each test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import ROOT, worker_env


class FlowWorker:
    """``aqueue worker flow_app:app`` in a subprocess, its output kept in a file."""

    def __init__(self, redis_url: str, prefix: str, *args: str, **env: str) -> None:
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            prefix="aqueue-flow-worker-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log.name)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aqueue", "worker", "flow_app:app", *args],
            env=worker_env(redis_url, prefix, **env),
            cwd=str(ROOT / "tests" / "apps"),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        print(f"--- worker {self.proc.pid} ---\n{self.log_path.read_text()[-4000:]}")
        self.log_path.unlink(missing_ok=True)


class FlowWorkers:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.started: list[FlowWorker] = []

    def start(self, *args: str, **env: str) -> FlowWorker:
        worker = FlowWorker(self.redis_url, self.prefix, *args, **env)
        self.started.append(worker)
        return worker


@pytest.fixture
def flow_workers(redis_url: str, prefix: str) -> Iterator[FlowWorkers]:
    pool = FlowWorkers(redis_url, prefix)
    try:
        yield pool
    finally:
        for worker in pool.started:
            worker.close()
