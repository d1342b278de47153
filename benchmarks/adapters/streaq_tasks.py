"""streaq worker module: `streaq run streaq_tasks:worker`."""

import asyncio
import os

from common import COUNTER
from streaq import Worker

worker = Worker(
    redis_url=os.environ["BENCH_REDIS_URL"],
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "100")),
    queue_name="bench",
)


# silent=True: streaq logs every task start/finish at INFO otherwise
@worker.task(silent=True)
async def noop() -> None:
    COUNTER.hit()


@worker.task(silent=True)
async def sleepy() -> None:
    COUNTER.mark_start()
    await asyncio.sleep(0.1)
    COUNTER.hit()
