"""taskiq worker module: `taskiq worker taskiq_tasks:broker`."""

import asyncio
import os

from common import COUNTER
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

URL = os.environ["BENCH_REDIS_URL"]

broker = RedisStreamBroker(url=URL, queue_name="bench").with_result_backend(
    RedisAsyncResultBackend(redis_url=URL)
)


@broker.task
async def noop() -> None:
    COUNTER.hit()


@broker.task
async def sleepy() -> None:
    COUNTER.mark_start()
    await asyncio.sleep(0.1)
    COUNTER.hit()
