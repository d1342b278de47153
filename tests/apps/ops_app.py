"""Tasks for the flow-control tests (debounce, schedules, recycling, processes).

URL and key prefix come from AQUEUE_REDIS_URL / AQUEUE_PREFIX, set by the test.
Every task records what it ran in Redis, so tests count executions exactly.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis

import aqueue

app = aqueue.App()


async def _push(key: str, value: str) -> None:
    client = aioredis.Redis.from_url(os.environ["AQUEUE_REDIS_URL"])
    try:
        await client.rpush(f"{app.settings.prefix}:ran:{key}", value)
    finally:
        await client.aclose()


@app.task(unique_mode="debounce", unique_for=1.0)
async def settle(key: str, value: int) -> int:
    """Debounced by the task's name: runs once, 1 s after the last enqueue."""
    await _push(key, str(value))
    return value


@app.task
async def note(key: str, value: int) -> int:
    await _push(key, str(value))
    return value


@app.task
async def stamp(ctx: aqueue.Context, key: str) -> None:
    """Record each run's task id (``periodic:<schedule>:<tick ms>`` for a schedule's run)."""
    await _push(key, ctx.id)


_kept: list[bytearray] = []


@app.task
async def where(ctx: aqueue.Context, key: str, leak_mb: int = 0, seconds: float = 0.0) -> int:
    """Record which process ran this task; optionally keep ``leak_mb`` MiB for ever."""
    if leak_mb:
        _kept.append(bytearray(b"x" * (leak_mb * 2**20)))
    if seconds:
        await asyncio.sleep(seconds)
    await _push(key, f"{os.getpid()} {ctx.id}")
    return os.getpid()


@dataclass
class Point:
    x: int
    y: int


@app.task(executor="process")
def centroid(points: list[Point], when: datetime) -> tuple[Point, datetime, int]:
    """A CPU task in a task process: typed arguments in, a typed value out, and its pid."""
    n = len(points)
    middle = Point(sum(p.x for p in points) // n, sum(p.y for p in points) // n)
    return middle, when, os.getpid()


@app.task(executor="process", timeout=1.0)
def spin(key: str) -> int:
    """Burn CPU for ever; records its pid first so the test can look for the process."""
    import redis

    client = redis.Redis.from_url(os.environ["AQUEUE_REDIS_URL"])
    client.rpush(f"{app.settings.prefix}:ran:{key}", str(os.getpid()))
    client.close()
    n = 0
    while True:
        n += 1


@app.task(executor="process", retries=1, retry_delay=0.1, retry_on=(ValueError,))
def picky(n: int) -> int:
    if n < 0:
        raise ValueError(f"negative: {n}")
    if n == 0:
        raise KeyError("zero")
    return n * 2
