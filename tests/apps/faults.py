"""Tasks for fault tests: they count their own executions in Redis.

Every task records ``<prefix>:started:<key>`` when its body begins and
``<prefix>:done:<key>`` when it returns, so a test can assert exact numbers
of executions and completions per task, whatever happened to the workers.
URL and key prefix come from AQUEUE_REDIS_URL / AQUEUE_PREFIX.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import redis.exceptions

import aqueue

app = aqueue.App()


@app.lifespan
@asynccontextmanager
async def resources(application: aqueue.App) -> AsyncIterator[dict[str, object]]:
    client = aioredis.Redis.from_url(application.settings.redis_url, socket_connect_timeout=2)
    try:
        yield {"redis": client}
    finally:
        await client.aclose()


async def _incr(ctx: aqueue.Context, what: str, key: str) -> int:
    """INCR a counter, riding out a Redis restart (the count must not be lost)."""
    client: aioredis.Redis = ctx.state["redis"]
    deadline = time.monotonic() + 60
    while True:
        try:
            return int(await client.incr(f"{app.settings.prefix}:{what}:{key}"))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@app.task
async def mark(key: str, seconds: float = 0.0, *, ctx: aqueue.Context) -> int:
    """Count a start, sleep, count a completion; returns the attempt."""
    await _incr(ctx, "started", key)
    if seconds:
        await asyncio.sleep(seconds)
    await _incr(ctx, "done", key)
    return ctx.attempt


@app.task
async def attempt_of(key: str, first: float, later: float, *, ctx: aqueue.Context) -> int:
    """Sleep ``first`` seconds on attempt 1 and ``later`` on any other; return the attempt."""
    await _incr(ctx, "started", key)
    await asyncio.sleep(first if ctx.attempt == 1 else later)
    await _incr(ctx, "done", key)
    return ctx.attempt


@app.task
async def kill_own_worker(key: str, *, ctx: aqueue.Context) -> None:
    """Crash the whole worker process, every time it runs."""
    await _incr(ctx, "started", key)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
async def takes_int(x: int) -> int:
    return x * 2
