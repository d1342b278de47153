#!/usr/bin/env python3
"""What the fetch and finish scripts cost Redis per task, without a worker.

    python benchmarks/scripts_cost.py -n 20000            # events off
    python benchmarks/scripts_cost.py -n 20000 --events   # events on

Fills a queue with N no-op tasks (``enqueue_many``), then calls
``broker.fetch(queue, consumer, 100)`` and ``broker.finish(...)`` with a
succeeded outcome for each delivery until the queue is empty, and prints Redis
CPU per task and commands per task for that loop only (``INFO``). No worker
runs, so no timer-driven call (heartbeat, reclaim) and no batch size varies
between runs: under callgrind its instruction counts repeat within 0.3%, which
makes it the figure to compare script changes by:

    valgrind --tool=callgrind --callgrind-out-file=cg.out redis-server --port PORT --save ''
    python benchmarks/scripts_cost.py -n 5000 --url redis://127.0.0.1:PORT/0
    # ...the same with -n 1000; (total(5000) - total(1000)) / 4000 per task,
    # minus the same for `benchmarks/costs.py bulk` (the enqueue_many)

``--phases`` fetches every task first, then finishes them all, and reports
each script on its own; with ``--callgrind-pid`` (the pid of a redis-server
run under callgrind) it also has callgrind dump its counters at the start of
the fetches and after each phase (``callgrind_control``), so the dumps
``.2`` and ``.3`` hold one script's instructions each:

    valgrind --tool=callgrind --callgrind-out-file=cg.out redis-server --port PORT --save '' &
    python benchmarks/scripts_cost.py -n 3000 --phases --url redis://127.0.0.1:PORT/0 \
        --callgrind-pid $!

Starts its own redis-server on a free port unless ``--url`` names one this
script may flush.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import redis.asyncio as aioredis  # noqa: E402

import aqueue  # noqa: E402
from aqueue.core.protocol import FinishItem  # noqa: E402
from aqueue.testing.server import RedisServer  # noqa: E402

BATCH = 100
CONSUMER = "scripts-cost"


def _succeeded(deliveries: list[Any]) -> list[FinishItem]:
    return [
        FinishItem(
            d.entry_id,
            d.task_id,
            aqueue.TaskStatus.SUCCEEDED,
            b"\xc0",  # msgpack nil: what a no-op returns
            unique=False,
            name="noop",
            attempt=d.attempt,
            ran_ms=1,
        )
        for d in deliveries
    ]


def _callgrind(command: str, pid: int | None) -> None:
    if pid is not None:
        subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True)


async def run_phases(url: str, n: int, events: bool, pid: int | None) -> dict[str, Any]:
    """Fetch all N, then finish all N: each script's cost on its own."""
    app = aqueue.App(url, prefix="scripts-cost", events=events)

    @app.task(name="noop")
    async def noop() -> None: ...

    raw = aioredis.Redis.from_url(url)
    out: dict[str, Any] = {"n": n, "events": events}
    try:
        await raw.flushall()
        await noop.enqueue_many([() for _ in range(n + 1)])
        queue = noop.config.queue
        broker = app.broker
        await broker.ensure_group(queue)
        # One task through both scripts first: they are loaded, nothing is cold.
        await broker.finish(queue, CONSUMER, _succeeded(await broker.fetch(queue, CONSUMER, 1)))
        _callgrind("-d", pid)
        got: list[Any] = []
        for phase in ("fetch", "finish"):
            await raw.config_resetstat()
            cpu0 = _cpu(await raw.info("cpu"))
            if phase == "fetch":
                while len(got) < n:
                    deliveries = await broker.fetch(queue, CONSUMER, BATCH)
                    if not deliveries:
                        break
                    got += deliveries
            else:
                for start in range(0, len(got), BATCH):
                    fenced = await broker.finish(
                        queue, CONSUMER, _succeeded(got[start : start + BATCH])
                    )
                    if fenced:
                        raise RuntimeError(f"fenced off: {fenced}")
            cpu = _cpu(await raw.info("cpu")) - cpu0
            stats: Any = await raw.info("commandstats")
            _callgrind("-d", pid)
            out[phase] = {
                "redis_cpu_us_per_task": round(cpu / len(got) * 1e6, 2),
                "calls_per_task": {
                    name[len("cmdstat_") :]: round(int(v["calls"]) / len(got), 3)
                    for name, v in stats.items()
                    if int(v["calls"]) / len(got) >= 0.005
                },
            }
    finally:
        await raw.aclose()
        await app.close()
    return out


async def run(url: str, n: int, events: bool) -> dict[str, Any]:
    app = aqueue.App(url, prefix="scripts-cost", events=events)

    @app.task(name="noop")
    async def noop() -> None: ...

    raw = aioredis.Redis.from_url(url)
    try:
        await raw.flushall()
        await noop.enqueue_many([() for _ in range(n)])
        queue = noop.config.queue
        broker = app.broker
        await broker.ensure_group(queue)
        await raw.config_resetstat()
        cpu0 = _cpu(await raw.info("cpu"))
        done = 0
        while done < n:
            deliveries = await broker.fetch(queue, CONSUMER, BATCH)
            if not deliveries:
                break
            fenced = await broker.finish(queue, CONSUMER, _succeeded(deliveries))
            if fenced:
                raise RuntimeError(f"fenced off: {fenced}")
            done += len(deliveries)
        cpu = _cpu(await raw.info("cpu")) - cpu0
        stats: Any = await raw.info("commandstats")
    finally:
        await raw.aclose()
        await app.close()
    calls = {
        name[len("cmdstat_") :]: round(int(v["calls"]) / done, 3)
        for name, v in stats.items()
        if int(v["calls"]) / done >= 0.005
    }
    return {
        "n": done,
        "events": events,
        "redis_cpu_us_per_task": round(cpu / done * 1e6, 2),
        "evalsha_us_per_task": round(
            int(stats.get("cmdstat_evalsha", {}).get("usec", 0)) / done, 2
        ),
        "calls_per_task": calls,
    }


def _cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--events", action="store_true")
    parser.add_argument("--url", help="a Redis this script may flush (default: its own)")
    parser.add_argument("--phases", action="store_true", help="all fetches, then all finishes")
    parser.add_argument(
        "--callgrind-pid", type=int, help="with --phases: dump this callgrind'ed Redis per phase"
    )
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        server = RedisServer()
        server.start()
        url = server.url
    try:
        if args.phases:
            result = asyncio.run(run_phases(url, args.n, args.events, args.callgrind_pid))
        else:
            result = asyncio.run(run(url, args.n, args.events))
        print(json.dumps(result, indent=1))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
