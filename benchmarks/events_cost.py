#!/usr/bin/env python3
"""What the event stream costs a worker's drain: events off and on, alternating.

    python benchmarks/events_cost.py               # N=20000 per drain, 7 pairs
    python benchmarks/events_cost.py -n 5000 --pairs 3

Each pair fills a queue with N no-op tasks (events off, so the producer side is
the same), then drains it with one in-process worker (concurrency 100), once
with events off and once with events on, in alternating order. Per drain it
records the wall time until the N-th outcome, the Redis server's CPU time
(INFO cpu) and this process's CPU time (the worker's), so a busy machine shows
in the wall times but much less in the CPU figures. Runs on a private
redis-server on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import redis

import aqueue
from aqueue.testing.server import RedisServer


def redis_cpu(url: str) -> float:
    info: Any = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def xadds(url: str) -> int:
    stats: Any = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_xadd", {}).get("calls", 0))


async def one_drain(url: str, n: int, events: bool) -> dict[str, float]:
    prefix = f"ev{uuid.uuid4().hex[:8]}"
    producer = aqueue.App(url, prefix=prefix)

    @producer.task(name="bench.noop")
    async def noop(i: int) -> None: ...

    async with producer:
        for start in range(0, n, 1000):
            await noop.enqueue_many([(i,) for i in range(start, min(n, start + 1000))])
    app = aqueue.App(url, prefix=prefix, events=events)

    @app.task(name="bench.noop")
    async def noop_worker(i: int) -> None: ...

    worker = aqueue.Worker(app, concurrency=100, burst=True)
    x0 = xadds(url)
    cpu0, rcpu0, t0 = time.process_time(), redis_cpu(url), time.perf_counter()
    run = asyncio.create_task(worker.run())
    while worker.stats.succeeded < n:
        await asyncio.sleep(0.002)
    wall = time.perf_counter() - t0
    cpu, rcpu = time.process_time() - cpu0, redis_cpu(url) - rcpu0
    event_entries = xadds(url) - x0
    await run
    async with app:
        await app.broker.delete_every_key()
    await app.close()
    return {
        "tasks_per_s": n / wall,
        "worker_cpu_us_per_task": cpu / n * 1e6,
        "redis_cpu_us_per_task": rcpu / n * 1e6,
        "event_entries_per_task": event_entries / n,
    }


async def main_async(n: int, pairs: int) -> dict[str, Any]:
    server = RedisServer()
    server.start()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        for pair in range(pairs):
            order = ["off", "on"] if pair % 2 == 0 else ["on", "off"]
            for mode in order:
                res = await one_drain(server.url, n, mode == "on")
                runs[mode].append(res)
                print(
                    f"pair {pair} events {mode:3}: "
                    + ", ".join(f"{k}={v:.1f}" for k, v in res.items()),
                    flush=True,
                )
    finally:
        server.stop()
    medians = {
        mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for mode, rs in runs.items()
    }
    ratios = [
        on["tasks_per_s"] / off["tasks_per_s"]
        for off, on in zip(runs["off"], runs["on"], strict=True)
    ]
    return {
        "n": n,
        "pairs": pairs,
        "medians": medians,
        "paired_rate_ratio_median": statistics.median(ratios),
        "runs": runs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=20000, help="tasks per drain")
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args()
    try:
        import uvloop

        result = uvloop.run(main_async(args.n, args.pairs))
    except ImportError:
        result = asyncio.run(main_async(args.n, args.pairs))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
