#!/usr/bin/env python3
"""What flow control costs: the drain with priorities and limits unused and used.

    python benchmarks/flow.py                       # -n 10000, 3 repeats
    python benchmarks/flow.py --baseline ../main    # plus a build without flow control
    python benchmarks/flow.py --baseline ../main --only plain,baseline --repeat 10

Starts its own redis-server on a free port (never touches 127.0.0.1:6379) and
drains N no-op tasks with one burst-mode worker (concurrency 100) for each
variant, every variant in every repetition, in rotating order, so they share
the machine's noise. Each drain runs in a fresh interpreter. Reported: median
tasks/s; the worker process's CPU time and the Redis server's CPU time per task
(steadier than wall-clock time on a shared machine); and Redis commands per
task (INFO commandstats, script-internal commands included), which does not
vary from run to run.

Variants (limits are set high enough never to hold a task back, so what is
measured is their bookkeeping):

* ``plain``: no priority, no limit (today's path; one EXISTS per fetch added)
* ``priority``: every task at priority 5, behind one plain task (so they wait
  in the priority set and are delivered from the urgent stream)
* ``mixed``: half at priority 0, half at 5
* ``concurrency``: ``concurrency=100000`` (one global key)
* ``concurrency_keyed``: ``concurrency=(100000, "k:{k}")`` over 10 keys
* ``rate``: ``rate_limit="1000000/s"``
* ``baseline``: ``plain`` on the build given by ``--baseline`` (a checkout)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VARIANTS = ["plain", "priority", "mixed", "concurrency", "concurrency_keyed", "rate"]


def _commands(info: dict[str, Any]) -> int:
    return sum(
        int(v["calls"])
        for k, v in info.items()
        if k.startswith("cmdstat_") and k not in ("cmdstat_info", "cmdstat_flushall")
    )


async def _child(variant: str, url: str, n: int) -> dict[str, Any]:
    import redis.asyncio as aioredis

    import aqueue

    app = aqueue.App(url, prefix="bench")
    options: dict[str, Any] = {}
    if variant == "concurrency":
        options["concurrency"] = 100_000
    elif variant == "concurrency_keyed":
        options["concurrency"] = (100_000, "k:{k}")
    elif variant == "rate":
        options["rate_limit"] = "1000000/s"

    @app.task(name="noop", **options)
    async def noop(k: int) -> None:
        return None

    if variant in ("priority", "mixed"):
        await noop.enqueue(0)
        urgent = noop.options(priority=5)
        if variant == "priority":
            await urgent.enqueue_many([(i % 10,) for i in range(n - 1)])
        else:
            await noop.enqueue_many([(i % 10,) for i in range(n // 2 - 1)])
            await urgent.enqueue_many([(i % 10,) for i in range(n - n // 2)])
    else:
        await noop.enqueue_many([(i % 10,) for i in range(n)])
    raw = aioredis.Redis.from_url(url)
    before = _commands(await raw.info("commandstats"))
    redis_cpu = _cpu(await raw.info("cpu"))
    worker = aqueue.Worker(app, concurrency=100, burst=True, beat=False)
    start, cpu = time.perf_counter(), time.process_time()
    await worker.run()
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = _commands(await raw.info("commandstats"))
    redis_cpu = _cpu(await raw.info("cpu")) - redis_cpu
    done = worker.stats.succeeded
    await raw.aclose()
    await app.close()
    return {
        "tasks_per_s": done / took,
        "commands_per_task": (after - before) / n,
        "worker_cpu_us": cpu / n * 1e6,
        "redis_cpu_us": redis_cpu / n * 1e6,
        "done": done,
    }


def _cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _run_child(variant: str, url: str, n: int, source: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=source)
    real = "plain" if variant == "baseline" else variant
    out = subprocess.run(
        [sys.executable, __file__, "--child", real, "--url", url, "-n", str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", help="a checkout of aqueue without flow control")
    parser.add_argument("--only", help="comma-separated variants to run (default: all)")
    parser.add_argument("--child")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_child(args.child, args.url, args.n))))
        return

    import redis

    sys.path.insert(0, ROOT)
    from aqueue.testing.server import RedisServer

    variants = [*VARIANTS, *(["baseline"] if args.baseline else [])]
    if args.only:
        variants = [v for v in variants if v in args.only.split(",")]
    server = RedisServer()
    server.start()
    client = redis.Redis.from_url(server.url)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        for rep in range(args.repeat):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for variant in order:
                client.flushall()  # our own private server
                source = args.baseline if variant == "baseline" else ROOT
                result = _run_child(variant, server.url, args.n, source)
                if result["done"] != args.n:
                    raise SystemExit(f"{variant}: {result['done']} of {args.n} tasks ran")
                runs[variant].append(result)
                print(
                    f"[{rep + 1}/{args.repeat}] {variant:18} "
                    f"{result['tasks_per_s']:8.0f} tasks/s "
                    f"{result['worker_cpu_us']:6.1f} us worker CPU/task "
                    f"{result['redis_cpu_us']:6.1f} us Redis CPU/task "
                    f"{result['commands_per_task']:6.2f} commands/task",
                    flush=True,
                )
    finally:
        client.close()
        server.stop()
    print(f"\ndrain of {args.n:,} no-op tasks, 1 worker, concurrency 100, {args.repeat} runs")
    print(
        "| variant | tasks/s (median) | min-max | worker CPU µs/task | Redis CPU µs/task "
        "| Redis commands/task |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for variant in variants:
        rates = [r["tasks_per_s"] for r in runs[variant]]

        def med(key: str, variant: str = variant) -> float:
            return statistics.median(r[key] for r in runs[variant])

        print(
            f"| {variant} | {statistics.median(rates):,.0f} | "
            f"{min(rates):,.0f}-{max(rates):,.0f} | {med('worker_cpu_us'):.1f} | "
            f"{med('redis_cpu_us'):.1f} | {med('commands_per_task'):.2f} |"
        )


if __name__ == "__main__":
    main()
