"""BullMQ (Python) worker: `python bullmq_tasks.py`.

BullMQ's Python package has no worker command; its documented way to run a
worker is a script that builds a `Worker` and keeps the loop alive, so that is
what this is (on uvloop, as the other peers' CLIs pick it when installed).
SIGTERM closes the worker gracefully.
"""

import asyncio
import os
import signal

import uvloop
from bullmq import Worker
from common import COUNTER


async def process(job, token):  # BullMQ's processor signature
    if job.name == "sleepy":
        COUNTER.mark_start()
        await asyncio.sleep(0.1)
    COUNTER.hit()


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        "bench",
        process,
        {
            "connection": os.environ["BENCH_REDIS_URL"],
            "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "100")),
        },
    )
    await stop.wait()
    await worker.close()


if __name__ == "__main__":
    uvloop.run(main())
