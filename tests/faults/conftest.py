"""Helpers for fault tests: real worker processes, exact execution counts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import aqueue
from aqueue.core.keys import QueueKeys

from ..conftest import ROOT, worker_env


class CliWorker:
    """``aqueue worker faults:app`` in a subprocess, its output kept in a file."""

    def __init__(self, redis_url: str, prefix: str, *args: str, **env: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            prefix="aqueue-worker-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log.name)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aqueue", "worker", "faults:app", *args],
            env=worker_env(redis_url, prefix, **env),
            cwd=str(ROOT / "tests" / "apps"),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: close() takes a supervisor's children with it.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        # The whole group: a --processes supervisor's children (and task
        # processes) must not outlive the test, whatever state it left them in.
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        self.proc.wait(10)
        self._log.close()
        self.log_path.unlink(missing_ok=True)


class Workers:
    """Starts CLI workers for one test and cleans every one of them up."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.started: list[CliWorker] = []

    def start(self, *args: str, url: str | None = None, **env: str) -> CliWorker:
        worker = CliWorker(url or self.redis_url, self.prefix, *args, **env)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for i, worker in enumerate(self.started):
            # Shown by pytest only when the test failed.
            print(f"--- worker {i} (pid {worker.pid}) output ---\n{worker.output()[-6000:]}")
            worker.close()


@pytest.fixture
def workers(redis_url: str, prefix: str) -> Iterator[Workers]:
    pool = Workers(redis_url, prefix)
    try:
        yield pool
    finally:
        pool.close()


class Counts:
    """How many runs of each task started and finished (tests/apps/faults.py keeps them)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def _get(self, what: str, keys: list[str]) -> list[int]:
        with self.client.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.scard(f"{self.prefix}:{what}:{k}")
            return [int(n) for n in pipe.execute()]

    def started(self, keys: list[str]) -> list[int]:
        return self._get("started", keys)

    def done(self, keys: list[str]) -> list[int]:
        return self._get("done", keys)

    def workers_alive(self, queue: str = "default") -> int:
        return int(self.client.zcard(QueueKeys(self.prefix, queue).workers))

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def counts(redis_url: str, prefix: str) -> Iterator[Counts]:
    c = Counts(redis_url, prefix)
    try:
        yield c
    finally:
        c.close()


def report(scenario: str, **figures: object) -> None:
    """Print one line of figures that the reliability report collects (pytest -s)."""
    text = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\nFAULT-FIGURES {scenario}: {text}", flush=True)


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 2)


def producer(url: str, prefix: str, **settings: object) -> aqueue.App:
    """An App that enqueues the tasks of tests/apps/faults.py by name, without importing it."""
    app = aqueue.App(url, prefix=prefix, **settings)

    @app.task(name="faults.mark")
    async def mark(key: str, seconds: float = 0.0) -> int:
        raise NotImplementedError

    @app.task(name="faults.attempt_of")
    async def attempt_of(key: str, first: float, later: float) -> int:
        raise NotImplementedError

    @app.task(name="faults.kill_own_worker")
    async def kill_own_worker(key: str) -> None:
        raise NotImplementedError

    @app.task(name="faults.collect")
    async def collect(values: list[int], key: str) -> int:
        raise NotImplementedError

    @app.task(name="faults.takes_int")
    async def takes_int(x: int) -> int:
        raise NotImplementedError

    @app.task(name="faults.needs_flag")
    async def needs_flag(key: str) -> str:
        raise NotImplementedError

    @app.task(name="faults.raise_base")
    async def raise_base(kind: str) -> None:
        raise NotImplementedError

    @app.task(name="faults.break_heartbeat")
    async def break_heartbeat() -> None:
        raise NotImplementedError

    # Timeout and retries travel in the message: the producer declares them.
    @app.task(
        name="faults.sync_over_timeout",
        timeout=1.0,
        retries=1,
        retry_delay=0.0,
        retry_on=(TimeoutError,),
    )
    def sync_over_timeout(key: str, seconds: float) -> str:
        raise NotImplementedError

    @app.task(name="faults.sync_mark")
    def sync_mark(key: str, seconds: float) -> str:
        raise NotImplementedError

    @app.task(name="faults.block_loop")
    async def block_loop(key: str, seconds: float) -> str:
        raise NotImplementedError

    return app


async def run_cli(redis_url: str, prefix: str, *args: str) -> tuple[int, str]:
    """Run ``aqueue ARGS`` against faults:app; returns (exit status, stdout + stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aqueue",
        *args,
        env=worker_env(redis_url, prefix),
        cwd=str(ROOT / "tests" / "apps"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()
