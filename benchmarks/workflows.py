#!/usr/bin/env python3
"""Workflow figures: group fan-out rate, and what a chord's bookkeeping costs.

    python benchmarks/workflows.py                 # -n 100000 fan-out, -m 20000 drained
    python benchmarks/workflows.py -n 20000 -m 5000 --repeat 1

Starts a private redis-server on a free port and measures, in one process:

* fan-out: tasks/s enqueued by ``await group(add.s(i, i) for i in range(n)).enqueue()``
  (signatures built, checked, encoded and sent), next to ``add.enqueue_many`` of
  the same calls, and the chord's members (``chord(group, total).enqueue()``);
* drained: a group and a chord of ``m`` members run by an in-process worker
  (concurrency 200): wall time until the worker has run every member (group)
  or the callback's value is in (chord), and Redis commands per member (INFO
  commandstats, the commands scripts run included): the difference is what
  the chord's bookkeeping costs per member;
* chunk latency: a streaming task yields ``--chunks`` timestamps, 2 ms apart,
  to a reader in the same process (worker in-process too): p50 / p99 ms from
  ``yield`` to the reader's loop body; once for an ``async def`` generator and
  once for a ``def`` generator running in the worker's thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import redis

import aqueue


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def commands(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        stats: Any = client.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    finally:
        client.close()


def make_app(url: str, prefix: str) -> tuple[aqueue.App, Any, Any]:
    app = aqueue.App(url, prefix=prefix)

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def total(values: list[int]) -> int:
        return sum(values)

    return app, add, total


async def fan_out(url: str, n: int, repeat: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {"enqueue_many": [], "group": [], "chord": []}
    for r in range(repeat):
        for kind in rates:
            app, add, total = make_app(url, f"wf{r}{kind}")
            async with app:
                await app.client.connect()
                t0 = time.perf_counter()
                if kind == "enqueue_many":
                    await add.enqueue_many([(i, i) for i in range(n)])
                elif kind == "group":
                    await aqueue.group(add.s(i, i) for i in range(n)).enqueue()
                else:
                    await aqueue.chord(aqueue.group(add.s(i, i) for i in range(n)), total).enqueue()
                rates[kind].append(n / (time.perf_counter() - t0))
                await app.client.broker.delete_every_key()
    return {kind: round(statistics.median(values)) for kind, values in rates.items()}


async def drained(url: str, m: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind in ("group", "chord"):
        app, add, total = make_app(url, f"wfd{kind}")
        async with app:
            before = commands(url)
            t0 = time.perf_counter()
            members = aqueue.group(add.s(i, i) for i in range(m))
            worker = aqueue.Worker(app, concurrency=200, beat=False)
            running = asyncio.create_task(worker.run())
            if kind == "group":
                # Counted by the worker, not awaited member by member: the waiter's
                # reads would hide what the chord's bookkeeping costs.
                await members.enqueue()
                while worker.stats.succeeded < m:
                    await asyncio.sleep(0.01)
            else:
                r = await aqueue.chord(members, total).enqueue()
                assert await r.get(timeout=600) == sum(2 * i for i in range(m))
            seconds = time.perf_counter() - t0
            worker.stop()
            await asyncio.wait_for(running, 60)
            used = commands(url) - before
            out[kind] = {
                "seconds": round(seconds, 2),
                "members_per_s": round(m / seconds),
                "redis_commands_per_member": round(used / m, 2),
            }
            await app.client.broker.delete_every_key()
    return out


async def chunk_latency(url: str, chunks: int, in_thread: bool = False) -> dict[str, float]:
    """Milliseconds from a streaming task's ``yield`` to the reader's loop body
    (``in_thread``: a ``def`` generator in the worker's thread)."""
    app = aqueue.App(url, prefix="wfstream")

    @app.task
    async def ticks(n: int) -> AsyncIterator[float]:
        for _ in range(n):
            await asyncio.sleep(0.002)  # a producer slower than Redis: readers wait
            yield time.time()

    @app.task
    def thread_ticks(n: int) -> Iterator[float]:
        for _ in range(n):
            time.sleep(0.002)
            yield time.time()

    latencies: list[float] = []
    async with app:
        worker = aqueue.Worker(app, concurrency=10, beat=False)
        running = asyncio.create_task(worker.run())
        r = await (thread_ticks if in_thread else ticks).enqueue(chunks)
        async for sent in r.stream():
            latencies.append((time.time() - sent) * 1000)
        worker.stop()
        await asyncio.wait_for(running, 60)
        await app.client.broker.delete_every_key()
    latencies.sort()
    return {
        "chunks": chunks,
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="members enqueued for fan-out")
    parser.add_argument("-m", type=int, default=20_000, help="members drained by a worker")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=2000, help="chunks for the latency run")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not on PATH", file=sys.stderr)
        return 2
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory(prefix="aqueue-wf-bench-") as workdir:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            runner: Any = asyncio.run
            try:
                import uvloop

                runner = uvloop.run
            except ImportError:
                pass
            figures = {
                "n": args.n,
                "fan_out_tasks_per_s": runner(fan_out(url, args.n, args.repeat)),
                "m": args.m,
                "drained": runner(drained(url, args.m)),
                "chunk_latency": runner(chunk_latency(url, args.chunks)),
                "chunk_latency_def_generator": runner(chunk_latency(url, args.chunks, True)),
            }
            print(json.dumps(figures, indent=2))
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
