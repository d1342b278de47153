"""Tasks the dashboard's browser tests watch a real ``aqueue worker`` run.

URL and key prefix come from AQUEUE_REDIS_URL / AQUEUE_PREFIX, set by the
test (AQUEUE_DEAD_LETTER_ON_FAILURE=1 too, where a failure must land in the
dead-letter stream).
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis

import aqueue

app = aqueue.App()


@app.task
async def work(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@app.task
async def parse_invoice(text: str) -> int:
    return int(text.split(":")[1])  # "invoice:12" -> 12; anything else fails


@app.task
async def fails_once(key: str) -> str:
    """Fails on its first run, succeeds when run again (a replayed dead letter)."""
    client = aioredis.Redis.from_url(os.environ["AQUEUE_REDIS_URL"])
    try:
        runs = int(await client.incr(f"{app.settings.prefix}:runs:{key}"))
    finally:
        await client.aclose()
    if runs == 1:
        raise ConnectionError("the mail server at smtp.invalid did not answer")
    return f"sent on run {runs}"


@app.task
async def long_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"
