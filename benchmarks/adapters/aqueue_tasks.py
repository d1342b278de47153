"""aqueue worker module: `aqueue worker aqueue_tasks:app --concurrency 100 --queues bench`."""

import asyncio
import os

from common import COUNTER

import aqueue

app = aqueue.App(os.environ["BENCH_REDIS_URL"])


@app.task(queue="bench")
async def noop() -> None:
    COUNTER.hit()


@app.task(queue="bench")
async def sleepy() -> None:
    COUNTER.mark_start()
    await asyncio.sleep(0.1)
    COUNTER.hit()
