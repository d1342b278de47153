"""Tasks for fault tests: they count their own executions in Redis.

Every task adds a token of its run to the set ``<prefix>:started:<key>``
when its body begins and to ``<prefix>:done:<key>`` when it returns, so a
test can assert exact numbers of executions and completions per task,
whatever happened to the workers.
URL and key prefix come from AQUEUE_REDIS_URL / AQUEUE_PREFIX; the counts
go to FAULTS_COUNTS_URL when it is set.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio as aioredis
import redis.exceptions

import aqueue

app = aqueue.App()


def counts_url(application: aqueue.App) -> str:
    """Where runs are counted: FAULTS_COUNTS_URL (a plain Redis that no failover
    touches, for tests on Sentinel and Cluster), else the App's own Redis."""
    return os.environ.get("FAULTS_COUNTS_URL") or application.settings.redis_url


@app.lifespan
@asynccontextmanager
async def resources(application: aqueue.App) -> AsyncIterator[dict[str, object]]:
    client = aioredis.Redis.from_url(counts_url(application), socket_connect_timeout=2)
    try:
        yield {"redis": client}
    finally:
        await client.aclose()


async def _record(ctx: aqueue.Context, what: str, key: str, run: str) -> None:
    """Add this run's token to a set, riding out Redis restarts.

    A set of per-run tokens instead of a counter: re-sending the command after
    a dropped connection can't count one run twice.
    """
    client: aioredis.Redis = ctx.state["redis"]
    deadline = time.monotonic() + 60
    while True:
        try:
            await client.sadd(f"{app.settings.prefix}:{what}:{key}", run)
            return
        # RuntimeError: uvloop refusing a write on a connection the server just closed.
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            OSError,
            RuntimeError,
        ):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@app.task
async def mark(key: str, seconds: float = 0.0, *, ctx: aqueue.Context) -> int:
    """Count a start, sleep, count a completion; returns the attempt."""
    run = uuid.uuid4().hex
    await _record(ctx, "started", key, run)
    if seconds:
        await asyncio.sleep(seconds)
    await _record(ctx, "done", key, run)
    return ctx.attempt


@app.task
async def attempt_of(key: str, first: float, later: float, *, ctx: aqueue.Context) -> int:
    """Sleep ``first`` seconds on attempt 1 and ``later`` on any other; return the attempt."""
    run = uuid.uuid4().hex
    await _record(ctx, "started", key, run)
    await asyncio.sleep(first if ctx.attempt == 1 else later)
    await _record(ctx, "done", key, run)
    return ctx.attempt


@app.task
async def kill_own_worker(key: str, *, ctx: aqueue.Context) -> None:
    """Crash the whole worker process, every time it runs."""
    await _record(ctx, "started", key, uuid.uuid4().hex)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
async def collect(values: list[int], key: str, *, ctx: aqueue.Context) -> int:
    """A chord's callback: count its runs; returns the sum of the members' values."""
    run = uuid.uuid4().hex
    await _record(ctx, "started", key, run)
    await _record(ctx, "done", key, run)
    return sum(values)


@app.task
async def takes_int(x: int) -> int:
    return x * 2


@app.task
async def needs_flag(key: str, *, ctx: aqueue.Context) -> str:
    """Fail until ``<prefix>:flag:<key>`` is set (a cause that can be fixed, then replayed)."""
    client: aioredis.Redis = ctx.state["redis"]
    if not await client.exists(f"{app.settings.prefix}:flag:{key}"):
        raise RuntimeError(f"flag {key} is not set")
    await _record(ctx, "done", key, uuid.uuid4().hex)
    return key


@app.task
def sync_mark(key: str, seconds: float) -> str:
    """A plain def task (it runs in a worker thread): count a start, block, count a completion."""
    client = redis.Redis.from_url(counts_url(app))
    run = uuid.uuid4().hex
    try:
        client.sadd(f"{app.settings.prefix}:started:{key}", run)
        time.sleep(seconds)
        client.sadd(f"{app.settings.prefix}:done:{key}", run)
    finally:
        client.close()
    return key


@app.task
async def break_heartbeat() -> None:
    """Inject an internal error: this process's heartbeat loop crashes on its next beat."""
    from aqueue.runtime.maintenance import Maintenance

    async def broken(self: Maintenance) -> None:
        raise RuntimeError("injected internal error in the heartbeat loop")

    Maintenance.heartbeat = broken  # type: ignore[method-assign]


@app.task(timeout=1.0, retries=1, retry_delay=0.0, retry_on=(TimeoutError,))
def sync_over_timeout(key: str, seconds: float) -> str:
    """A plain def task that runs past its 1 s timeout; a timeout is retried once."""
    return sync_mark.fn(key, seconds)


class Bail(BaseException):
    """Not an Exception: task code that raises it must not take the worker down."""


@app.task
async def raise_base(kind: str) -> None:
    if kind == "exit":
        raise SystemExit(3)
    if kind == "keyboard":
        raise KeyboardInterrupt
    if kind == "cancel":
        raise asyncio.CancelledError  # from task code, not from the worker
    raise Bail(kind)


@app.task
async def big_value(key: str, size: int, *, ctx: aqueue.Context) -> str:
    """Count a start, then return a value of ``size`` characters."""
    await _record(ctx, "started", key, uuid.uuid4().hex)
    return "x" * size


@app.task
async def block_loop(key: str, seconds: float, *, ctx: aqueue.Context) -> str:
    """An async task that blocks the worker's event loop (a mistake users make)."""
    run = uuid.uuid4().hex
    await _record(ctx, "started", key, run)
    time.sleep(seconds)  # blocks the loop on purpose: the point of the test
    await _record(ctx, "done", key, run)
    return key
