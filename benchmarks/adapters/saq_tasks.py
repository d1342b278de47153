"""SAQ worker module: `saq saq_tasks.settings`."""

import asyncio
import os

from common import COUNTER
from saq import Queue

queue = Queue.from_url(os.environ["BENCH_REDIS_URL"], name="bench")


async def noop(ctx: dict) -> None:
    COUNTER.hit()


async def sleepy(ctx: dict) -> None:
    COUNTER.mark_start()
    await asyncio.sleep(0.1)
    COUNTER.hit()


settings = {
    "queue": queue,
    "functions": [noop, sleepy],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "100")),
}
