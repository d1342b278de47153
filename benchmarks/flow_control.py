#!/usr/bin/env python3
"""Flow-control figures: what debounce, task processes and recycling cost.

    python benchmarks/flow_control.py            # defaults below
    python benchmarks/flow_control.py -n 2000 -m 500 -d 5000

Starts a private redis-server on a free port and measures:

* enqueue: ``-n`` sequential enqueues, plain, with ``unique_mode="debounce"``
  on a new key each time (the first enqueue of a key: one script call), and on
  one key (every enqueue after the first updates the waiting task: two calls);
  µs per enqueue (median of three passes) and Redis commands per enqueue;
* task processes: ``-m`` trivial ``def`` tasks drained by an in-process worker
  (concurrency 8) in threads, then with ``executor="process"``: tasks/s, and
  the time the first process task takes on a fresh worker (a process started);
* recycling: ``-d`` no-op tasks drained by ``aqueue worker`` (one process,
  concurrency 100) without a limit and with ``--max-tasks-per-child d/5``:
  wall time from the first enqueue to the last result, and how many children ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

import aqueue
from aqueue.testing.server import RedisServer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import flow_tasks  # noqa: E402


def commands(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        stats: Any = client.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    finally:
        client.close()


async def enqueue_costs(url: str, n: int) -> None:
    app = aqueue.App(url, prefix="bench-enqueue")
    noop = app.task(name="flow_tasks.noop")(flow_tasks.noop.fn)
    runs: dict[str, list[float]] = {"plain": [], "debounce, new key": [], "debounce, same key": []}
    cmds: dict[str, float] = {}
    for _ in range(3):
        for kind in runs:
            await app.client.broker.ping()
            before = commands(url)
            start = time.perf_counter()
            for i in range(n):
                if kind == "plain":
                    await noop.enqueue(i)
                elif kind == "debounce, new key":
                    await noop.options(
                        unique_key=f"k{i}-{start}", unique_mode="debounce", unique_for=600
                    ).enqueue(i)
                else:
                    await noop.options(
                        unique_key=f"one-{start}", unique_mode="debounce", unique_for=600
                    ).enqueue(i)
            runs[kind].append((time.perf_counter() - start) / n * 1e6)
            cmds[kind] = (commands(url) - before) / n
    await app.close()
    print(f"enqueue, {n} sequential (median of 3)")
    for kind, values in runs.items():
        print(
            f"  {kind:<20} {statistics.median(values):7.1f} µs/enqueue  "
            f"{cmds[kind]:5.2f} Redis commands/enqueue"
        )


async def process_costs(url: str, m: int) -> None:
    print(f"task processes, {m} trivial def tasks, in-process worker, concurrency 8")
    for name in ("double_in_thread", "double_in_process"):
        app = aqueue.App(url, prefix=f"bench-{name}")
        task = app.task(
            name=f"flow_tasks.{name}",
            executor="process" if "process" in name else None,
        )(getattr(flow_tasks, name).fn)
        worker = aqueue.Worker(app, concurrency=8, beat=False)
        running = asyncio.create_task(worker.run())
        first = time.perf_counter()
        assert await (await task.enqueue(1)).get(timeout=60) == 2
        first_s = time.perf_counter() - first
        handles = await task.enqueue_many([(i,) for i in range(m)])
        start = time.perf_counter()
        for h in handles:
            await h.get(timeout=120)
        rate = m / (time.perf_counter() - start)
        worker.stop()
        await running
        await app.close()
        print(
            f"  {name:<20} {rate:8.0f} tasks/s   "
            f"first task on a fresh worker {first_s * 1000:6.0f} ms"
        )


def recycling_costs(url: str, d: int) -> None:
    print(f"recycling, {d} no-op tasks, aqueue worker -c 100")
    for limit in (None, d // 5):
        prefix = f"bench-recycle-{limit}"
        env = dict(
            os.environ,
            AQUEUE_REDIS_URL=url,
            AQUEUE_PREFIX=prefix,
            PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]),
        )
        extra = ["--max-tasks-per-child", str(limit)] if limit else []
        log = tempfile.TemporaryFile()  # noqa: SIM115 - a pipe nobody reads blocks the worker
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aqueue",
                "worker",
                "flow_tasks:app",
                "-c",
                "100",
                "--no-beat",
                "--log-level",
                "info",
                *extra,
            ],
            env=env,
            cwd=str(HERE),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        async def drain(prefix: str) -> float:
            app = aqueue.App(url, prefix=prefix)
            noop = app.task(name="flow_tasks.noop")(flow_tasks.noop.fn)
            await (await noop.enqueue(0)).get(timeout=60)  # the worker is up
            start = time.perf_counter()
            handles = await noop.enqueue_many([(i,) for i in range(d)])
            for h in handles:
                await h.get(timeout=300)
            took = time.perf_counter() - start
            await app.close()
            return took

        took = asyncio.run(drain(prefix))
        proc.terminate()
        proc.wait(60)
        log.seek(0)
        out = log.read().decode()
        log.close()
        children = 1 + out.count("recycled; starting a fresh one")
        label = f"--max-tasks-per-child {limit}" if limit else "no limit"
        print(f"  {label:<28} {d / took:8.0f} tasks/s   {children} worker process(es)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="enqueues per kind")
    ap.add_argument("-m", type=int, default=500, help="tasks per executor")
    ap.add_argument("-d", type=int, default=5000, help="tasks drained per recycling run")
    args = ap.parse_args()
    server = RedisServer()
    server.start()
    try:
        asyncio.run(enqueue_costs(server.url, args.n))
        asyncio.run(process_costs(server.url, args.m))
        recycling_costs(server.url, args.d)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
