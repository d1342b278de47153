"""Tasks for abort and lifespan tests that run the real CLI.

URL and key prefix come from AQUEUE_REDIS_URL / AQUEUE_PREFIX, set by the test;
AQUEUE_TEST_LIFESPAN_FAIL=1 makes the lifespan fail at startup.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aqueue

app = aqueue.App()


@app.lifespan
async def lifespan(app: aqueue.App) -> AsyncIterator[dict[str, Any]]:
    if os.environ.get("AQUEUE_TEST_LIFESPAN_FAIL") == "1":
        raise RuntimeError("database at db.invalid:5432 refused the connection")
    yield {"greeting": "hello from the lifespan"}


@app.task
async def long_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


@app.task
async def greet(ctx: aqueue.Context) -> str:
    return str(ctx.state["greeting"])
