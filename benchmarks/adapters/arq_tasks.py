"""arq worker module: `arq arq_tasks.WorkerSettings`."""

import asyncio
import os

from arq.connections import RedisSettings
from common import COUNTER

REDIS = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])


async def noop(ctx: dict) -> None:
    COUNTER.hit()


async def sleepy(ctx: dict) -> None:
    COUNTER.mark_start()
    await asyncio.sleep(0.1)
    COUNTER.hit()


class WorkerSettings:
    functions = [noop, sleepy]
    redis_settings = REDIS
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "100"))
    # arq's worker polls the queue every poll_delay (default 0.5 s).  Throughput runs keep
    # the default; the round-trip run uses 0.01 s, otherwise p50 is just ~poll_delay.
    poll_delay = 0.01 if os.environ.get("BENCH_WORKLOAD") == "roundtrip" else 0.5


# `--custom-log-dict`: arq logs every job at INFO by default; keep warnings only.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"h": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["h"], "level": "WARNING"}},
}
