"""Tasks for flow-control tests: they count their own executions in Redis.

Each run adds one to ``<prefix>:inflight:<key>`` while its body runs and keeps
the highest value seen in ``<prefix>:max:<key>`` (one atomic script), so a test
knows exactly how many ran at once per key across every worker process;
rate-limited runs push their start time to ``<prefix>:starts:<key>``.
URL and key prefix come from AQUEUE_REDIS_URL / AQUEUE_PREFIX.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

import aqueue

app = aqueue.App()

_ENTER = """
local v = redis.call('INCR', KEYS[1])
if v > tonumber(redis.call('GET', KEYS[2]) or 0) then redis.call('SET', KEYS[2], v) end
return v
"""


@app.lifespan
@asynccontextmanager
async def resources(application: aqueue.App) -> AsyncIterator[dict[str, object]]:
    client = aioredis.Redis.from_url(application.settings.redis_url)
    try:
        yield {"redis": client}
    finally:
        await client.aclose()


async def _hold(ctx: aqueue.Context, key: str, n: int, seconds: float) -> int:
    client: aioredis.Redis = ctx.state["redis"]
    p = app.settings.prefix
    await client.eval(_ENTER, 2, f"{p}:inflight:{key}", f"{p}:max:{key}")  # type: ignore[misc]
    try:
        await asyncio.sleep(seconds)
    finally:
        await client.decr(f"{p}:inflight:{key}")
    await client.sadd(f"{p}:done:{key}", n)
    await client.incr(f"{p}:runs:{key}")
    return n


@app.task(concurrency=(2, "tenant:{tenant_id}"))
async def per_tenant(ctx: aqueue.Context, tenant_id: str, n: int, seconds: float) -> int:
    return await _hold(ctx, tenant_id, n, seconds)


@app.task(concurrency=3)
async def global_limited(ctx: aqueue.Context, n: int, seconds: float) -> int:
    return await _hold(ctx, "global", n, seconds)


async def _started(ctx: aqueue.Context, key: str) -> None:
    client: aioredis.Redis = ctx.state["redis"]
    await client.rpush(f"{app.settings.prefix}:starts:{key}", repr(time.time()))  # type: ignore[misc]


@app.task(rate_limit="50/s")
async def rated(ctx: aqueue.Context, n: int) -> None:
    await _started(ctx, "rated")


@app.task(rate_limit=("20/s", "tenant:{tenant_id}"))
async def rated_per_tenant(ctx: aqueue.Context, tenant_id: str, n: int) -> None:
    await _started(ctx, tenant_id)


@app.task
async def record(ctx: aqueue.Context, kind: str) -> None:
    """Push ``kind`` and the time to ``<prefix>:order`` as the run starts."""
    client: aioredis.Redis = ctx.state["redis"]
    await client.rpush(f"{app.settings.prefix}:order", f"{kind} {time.time()!r}")  # type: ignore[misc]


@app.task
async def hold(ctx: aqueue.Context, key: str, n: int, seconds: float) -> int:
    """No limits: counts in flight under ``key`` like the limited tasks above."""
    return await _hold(ctx, key, n, seconds)
