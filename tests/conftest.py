"""Test fixtures: a private redis-server per test session, a fresh App per test.

Tests never touch a Redis they did not start: the server below runs on a
free port with persistence off and is stopped at the end of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

import aqueue

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """A redis-server process this test session owns."""

    port: int
    workdir: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.exit("redis-server is not installed: apt-get install -y redis-server", 2)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.workdir,
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)
        client.close()

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def redis_server(*args: str) -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="aqueue-test-redis-") as workdir:
        server = RedisServer(free_port(), workdir, ["--save", "", *args])
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    with redis_server("--appendonly", "no") as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_srv: RedisServer) -> str:
    return redis_srv.url


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def app(
    redis_url: str, prefix: str, request: pytest.FixtureRequest
) -> AsyncIterator[aqueue.App]:
    application = aqueue.App(redis_url, prefix=prefix)
    watchdog = _dump_tasks_before_timeout(request)
    try:
        yield application
    finally:
        watchdog.cancel()
        await application.close()


def _dump_tasks_before_timeout(request: pytest.FixtureRequest) -> asyncio.TimerHandle:
    """Shortly before pytest-timeout ends a stuck test, print where each asyncio
    task of its loop waits (the timeout's own traceback shows only the loop's
    select), so a hang in CI names its await."""
    timeout = float(request.config.getini("timeout") or 180)
    loop = asyncio.get_running_loop()

    def dump() -> None:
        print(f"--- asyncio tasks after {timeout - 10:.0f} s ---", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.stderr)

    return loop.call_later(max(timeout - 10, 1), dump)


@contextlib.asynccontextmanager
async def running_worker(app: aqueue.App, **options: Any) -> AsyncIterator[aqueue.Worker]:
    """An in-process worker for the duration of the block."""
    worker = aqueue.Worker(app, **options)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


def worker_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AQUEUE_REDIS_URL=redis_url,
        AQUEUE_PREFIX=prefix,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests" / "apps")]),
        **extra,
    )
    return env


def start_cli_worker(
    redis_url: str, prefix: str, app_spec: str = "basic:app", *args: str, **env: str
) -> subprocess.Popen[bytes]:
    """Start ``aqueue worker`` as a real subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "aqueue", "worker", app_spec, *args],
        env=worker_env(redis_url, prefix, **env),
        cwd=str(ROOT / "tests" / "apps"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def outbox_is_empty(app: aqueue.App, outbox: str) -> bool:
    """A workflow outbox's hand-offs were all forwarded and dropped."""
    return await app.client.broker.client.xlen(outbox) == 0


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll an (async or sync) predicate until true or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
