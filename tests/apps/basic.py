"""Tasks for tests that run the real ``aqueue worker`` CLI in a subprocess.

URL and key prefix come from AQUEUE_REDIS_URL / AQUEUE_PREFIX, set by the test.
"""

from __future__ import annotations

import asyncio
import os
import time

import redis.asyncio as aioredis

import aqueue

app = aqueue.App()


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task
async def sleep_then(seconds: float, value: str) -> str:
    await asyncio.sleep(seconds)
    return value


@app.task
def blocking_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
async def count(key: str, seconds: float = 0.0) -> int:
    """Count executions per key in Redis, so tests can assert exact numbers."""
    client = aioredis.Redis.from_url(os.environ["AQUEUE_REDIS_URL"])
    try:
        n = int(await client.incr(f"{app.settings.prefix}:count:{key}"))
    finally:
        await client.aclose()
    if seconds:
        await asyncio.sleep(seconds)
    return n
