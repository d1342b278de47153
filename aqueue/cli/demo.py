"""``aqueue demo``: an end-to-end run on this machine.

Starts a worker process, enqueues a few thousand tasks, shows progress,
awaits every result and prints throughput and latency. It uses the Redis at
``AQUEUE_REDIS_URL`` (default ``redis://localhost:6379/0``); when nothing
answers there it starts a throwaway ``redis-server`` on a free port. Its keys
live under a prefix of its own and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..app import App
from ..core.config import DEFAULT_REDIS_URL
from ..core.errors import ConnectionFailed
from ..core.urls import mask_url
from .base import help_text

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: worker + producer + results, with throughput and latency",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", "--tasks", type=int, default=5000, help="tasks to run (default 5000)")
    p.add_argument("-c", "--concurrency", type=int, default=100, help="worker concurrency")
    p.add_argument("--url", help="Redis URL (default AQUEUE_REDIS_URL or localhost:6379)")
    p.set_defaults(func=run_demo)


@contextmanager
def throwaway_redis() -> Iterator[str]:
    """A private redis-server on a free port, answering PING, removed afterwards."""
    if shutil.which("redis-server") is None:
        raise SystemExit(
            "error: no Redis answers and there is no redis-server on PATH.\n"
            "  Install one (Debian/Ubuntu: sudo apt-get install -y redis-server; "
            "macOS: brew install redis)\n"
            "  or point the demo at one: AQUEUE_REDIS_URL=redis://host:6379/0 aqueue demo"
        )
    from ..testing.server import RedisServer  # only when there is no Redis to use

    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def _answers(url: str) -> bool:
    app = App(url, connect_timeout=1.0)
    try:
        await app.connect()
        return True
    except ConnectionFailed:
        return False
    finally:
        await app.close()


def _progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    width = 30
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "." * (width - filled)
    line = f"\r  {label:<10} [{bar}] {done:>6}/{total} {rate:>9,.0f}/s"
    if sys.stdout.isatty():
        print(line, end="", flush=True)
    elif done == total:
        print(line.strip("\r"), flush=True)


async def run_demo(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("AQUEUE_REDIS_URL", DEFAULT_REDIS_URL)
    if await _answers(url):
        print(f"Using Redis at {mask_url(url)}")
        return await _run(url, args)
    print(f"No Redis answers at {mask_url(url)}.")
    with throwaway_redis() as private_url:
        print(
            f"Started a throwaway redis-server for this run at {private_url} (removed afterwards)"
        )
        return await _run(private_url, args)


async def _run(url: str, args: argparse.Namespace) -> int:
    prefix = f"aqueue-demo-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, AQUEUE_DEMO_URL=url, AQUEUE_DEMO_PREFIX=prefix)
    os.environ.update(AQUEUE_DEMO_URL=url, AQUEUE_DEMO_PREFIX=prefix)
    from . import demo_tasks as demo  # reads the URL and prefix set just above

    worker = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
        [
            sys.executable,
            "-m",
            "aqueue",
            "worker",
            "aqueue.cli.demo_tasks:app",
            "--concurrency",
            str(args.concurrency),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    print(f"Worker started (pid {worker.pid}, concurrency {args.concurrency}, prefix {prefix})")
    n = args.tasks
    try:
        async with demo.app:
            # 1. A mixed workload: notifications (async I/O) and thumbnails (threads).
            print(f"\n1. Enqueue {n:,} tasks (enqueue_many, one round trip per 1,000)")
            t0 = time.perf_counter()
            results: list[Any] = []
            step = 1000
            for start in range(0, n, step):
                count = min(step, n - start)
                results += await demo.notify.enqueue_many(
                    [(i, "your report is ready") for i in range(start, start + count)]
                )
                _progress("enqueued", len(results), n, t0)
            enqueue_s = time.perf_counter() - t0
            extra = [await demo.thumbnail.enqueue(b"pixels", 64) for _ in range(20)]

            print("\n2. Await every result (pushed to this process as workers finish)")
            done = 0
            for chunk_start in range(0, n, 500):
                values = await asyncio.gather(*results[chunk_start : chunk_start + 500])
                assert all(v.startswith("sent to user") for v in values)
                done += len(values)
                _progress("completed", done, n, t0)
            await asyncio.gather(*extra)
            total_s = time.perf_counter() - t0

            print("\n3. Round trip: enqueue one task and await its result, 300 times")
            latencies = []
            for _ in range(300):
                t = time.perf_counter()
                await (await demo.noop.enqueue())
                latencies.append((time.perf_counter() - t) * 1000)
            latencies.sort()
            p50 = statistics.median(latencies)
            p99 = latencies[int(len(latencies) * 0.99) - 1]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        await _cleanup(url, prefix)

    print("\nResults")
    print(f"  tasks completed      {n + 20:,} ({n:,} async + 20 in threads), 0 lost")
    print(f"  enqueue throughput   {n / enqueue_s:,.0f} tasks/s")
    print(f"  end-to-end           {n / total_s:,.0f} tasks/s (enqueue -> result in hand)")
    print(f"  round-trip latency   p50 {p50:.2f} ms   p99 {p99:.2f} ms")
    print(f"  worker exit code     {worker.returncode} (SIGTERM: graceful)")
    return 0 if worker.returncode == 0 else 1


async def _cleanup(url: str, prefix: str) -> None:
    """Delete the keys this demo created (its own prefix only)."""
    async with App(url, prefix=prefix) as app:
        await app.client.broker.delete_every_key()
