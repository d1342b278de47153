"""Periodic tasks for tests that run the real CLI (``aqueue beat``, ``schedule``, workers).

URL and key prefix come from AQUEUE_REDIS_URL / AQUEUE_PREFIX, set by the test.
"""

from __future__ import annotations

import os
from datetime import timedelta

import redis.asyncio as aioredis

import aqueue

app = aqueue.App()


@app.periodic(every=timedelta(seconds=1), name="tick.every_second")
async def every_second(ctx: aqueue.Context) -> None:
    """Record each run's task id, so tests can count runs per tick exactly."""
    client = aioredis.Redis.from_url(os.environ["AQUEUE_REDIS_URL"])
    try:
        await client.rpush(f"{app.settings.prefix}:runs", ctx.id)
    finally:
        await client.aclose()


@app.periodic(cron="0 3 * * MON", tz="Asia/Seoul", args=("weekly",), name="report.weekly")
def weekly_report(kind: str) -> str:
    return kind
