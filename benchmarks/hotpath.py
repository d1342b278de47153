#!/usr/bin/env python3
"""The worker's Python cost per task without Redis: accept, run, hand over, recorded.

    python benchmarks/hotpath.py -n 50000            # CPU per task
    python benchmarks/hotpath.py -n 12000 --build-only

A real Worker's own parts (fetcher, runner, executor, finisher) take N no-op
messages, built by the task as ``enqueue`` builds them, in batches of 100 as
a fetch delivers them: each batch is accepted (prepared, admitted, begun),
runs to its end, and its outcomes are recorded as the finish script's reply
would record them (rows built, slots and jobs forgotten). Nothing talks to
Redis, so nothing here waits: the figure is the worker's own work, which a
drain under load (``costs.py drain``) mixes with the machine's.

Under callgrind this gives the same instruction count from run to run (to
~0.1%), unlike a drain, whose batch sizes follow the timing:

    valgrind --tool=callgrind --callgrind-out-file=hot.12000 \\
        python benchmarks/hotpath.py -n 12000
    # the same with -n 2000, and both with --build-only; per task:
    # ((hot.12000 - hot.2000) - (build.12000 - build.2000)) / 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BATCH = 100


async def hot_path(n: int, build_only: bool) -> dict[str, Any]:
    import aqueue
    from aqueue.core.protocol import Delivery
    from aqueue.runtime.tuning import settle_heap
    from aqueue.task import EnqueueOptions

    # Never connected: nothing here talks to Redis.
    app = aqueue.App("redis://127.0.0.1:1/0", prefix="hot")

    @app.task(name="noop", queue="q")
    async def noop() -> None:
        return None

    worker = aqueue.Worker(app, concurrency=BATCH, burst=True, beat=False)
    fetcher, runner, finisher = worker._fetcher, worker._runner, worker._finisher
    runner.on_loop(asyncio.get_running_loop())
    batches = []
    for start in range(0, n, BATCH):
        batch = []
        for i in range(start, min(start + BATCH, n)):
            _, message = noop.build_message((), {}, EnqueueOptions())
            batch.append(Delivery("q", f"{i + 1}-0", message.task_id, message.payload, 1, 1))
        batches.append(batch)
    settle_heap()  # as `aqueue worker` does
    if build_only:
        return {"mode": "build", "n": n}
    capacity = runner.capacity
    cpu = time.process_time()
    for batch in batches:
        capacity.try_reserve(len(batch))
        await fetcher.accept("q", batch, marked=True)
        while runner.executing:
            await asyncio.sleep(0)
        # What Finisher.loop does around the finish script's call, without the call.
        pending, finisher._queued = finisher._queued, {}
        for chunk in pending.values():
            [item.row() for item, _ in chunk]
            finisher._recorded_chunk(chunk, set())
    cpu = time.process_time() - cpu
    if worker.stats.succeeded != n:
        raise SystemExit(f"{worker.stats.succeeded} of {n} tasks recorded")
    return {"mode": "hotpath", "n": n, "worker_cpu_us_per_task": round(cpu / n * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=50_000)
    parser.add_argument(
        "--build-only", action="store_true", help="only build the messages (to subtract)"
    )
    args = parser.parse_args()
    import uvloop

    print(json.dumps(uvloop.run(hot_path(args.n, args.build_only))))


if __name__ == "__main__":
    main()
