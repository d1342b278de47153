"""Tasks the dashboard's tasks-page browser tests watch a real ``aqueue worker`` run.

URL and key prefix come from AQUEUE_REDIS_URL / AQUEUE_PREFIX, set by the test.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

import aqueue

app = aqueue.App()


@app.task
async def refund(order: int) -> str:
    """Fails on its first run, succeeds when run again from the dashboard."""
    client = aioredis.Redis.from_url(os.environ["AQUEUE_REDIS_URL"])
    try:
        runs = int(await client.incr(f"{app.settings.prefix}:runs:refund:{order}"))
    finally:
        await client.aclose()
    if runs == 1:
        raise ConnectionError(f"the bank refused refund {order} (run {runs})")
    return f"refund {order} done on run {runs}"


@app.task
async def import_rows(ctx: aqueue.Context, rows: int) -> AsyncIterator[str]:
    """Streams one chunk per row and reports progress; waits half-way for a while."""
    for row in range(rows):
        await ctx.progress((row + 1) / rows, f"row {row + 1} of {rows}")
        yield f"row {row + 1} imported"
        if row + 1 == rows // 2:
            await asyncio.sleep(float(os.environ.get("IMPORT_PAUSE", "30")))


@app.task(redact=True)
async def store_card(number: str) -> str:
    return f"stored {number}"
