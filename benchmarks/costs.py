#!/usr/bin/env python3
"""Where each microsecond of a task goes, on the worker, the producer and Redis.

    python benchmarks/costs.py drain -n 20000            # worker side, one burst drain
    python benchmarks/costs.py drain -n 20000 --cprofile # plus the top functions
    python benchmarks/costs.py enqueue -n 5000           # producer side, one at a time
    python benchmarks/costs.py bulk -n 10000             # producer side, one enqueue_many
    python benchmarks/costs.py roundtrip -n 2000         # p50/p99 and what the tail waits on

Starts its own redis-server on a free port (never 127.0.0.1:6379) unless
``--url`` names one this script may flush. Every mode runs in this process on
uvloop (as ``aqueue worker`` does) and prints one JSON object:

* ``drain``: N no-ops enqueued with ``enqueue_many``, then drained by an
  in-process burst worker (concurrency 100). Worker CPU per task
  (``time.process_time``), Redis CPU per task (``INFO cpu``), and Redis
  commands per task by command (``INFO commandstats``; commands run inside
  scripts included, with their own microseconds).
* ``enqueue``: N awaited ``enqueue()`` calls from one coroutine; the same
  figures for the producer side.
* ``bulk``: one ``enqueue_many`` of N no-ops (the drain's own enqueue); the
  same figures for it.
* ``roundtrip``: a worker subprocess (``aqueue worker``), then N
  ``await (await noop.enqueue()).get()`` in a row; p50/p90/p99/max, the
  garbage collections that ran in this process during the slowest calls,
  and the same with ``gc.freeze()`` + collection off to tell GC from the rest.

For instruction counts that do not move with the machine's load, run the
``drain`` and ``bulk`` (the drain's enqueue_many alone) modes under callgrind,
each at N and a smaller N, and subtract (the worker's share per task is
drain minus bulk):

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python benchmarks/costs.py \\
        drain -n 5000 --url redis://127.0.0.1:PORT/0
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

IGNORED = ("cmdstat_info", "cmdstat_flushall", "cmdstat_config|resetstat", "cmdstat_config")


def _commands(info: dict[str, Any]) -> dict[str, tuple[int, float]]:
    return {
        k[len("cmdstat_") :]: (int(v["calls"]), float(v["usec"]))
        for k, v in info.items()
        if k.startswith("cmdstat_") and k not in IGNORED
    }


def _cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _redis_snapshot(raw: Any) -> tuple[dict[str, tuple[int, float]], float]:
    return _commands(await raw.info("commandstats")), _cpu(await raw.info("cpu"))


def _per_task(
    before: tuple[dict[str, tuple[int, float]], float],
    after: tuple[dict[str, tuple[int, float]], float],
    n: int,
) -> dict[str, Any]:
    by_command: dict[str, dict[str, float]] = {}
    for name, (calls, usec) in after[0].items():
        calls0, usec0 = before[0].get(name, (0, 0.0))
        if calls - calls0:
            by_command[name] = {
                "per_task": round((calls - calls0) / n, 3),
                "usec_per_task": round((usec - usec0) / n, 3),
            }
    return {
        "redis_cpu_us_per_task": round((after[1] - before[1]) / n * 1e6, 2),
        "redis_commands_per_task": round(sum(c["per_task"] for c in by_command.values()), 2),
        "redis_commands": dict(sorted(by_command.items(), key=lambda kv: -kv[1]["per_task"])),
    }


def _top(profile: cProfile.Profile, n: int, limit: int = 25) -> list[str]:
    stats = pstats.Stats(profile)
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tottime, calls, cumtime, f"{os.path.basename(file)}:{line}:{func}"))
    rows.sort(reverse=True)
    return [
        f"{t / n * 1e6:7.2f} us/task self {c / n:6.2f} calls/task "
        f"{ct / n * 1e6:8.2f} us cum  {name}"
        for t, c, ct, name in rows[:limit]
    ]


def _app(url: str) -> Any:
    import aqueue

    app = aqueue.App(url, prefix="prof")

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app, noop


async def drain(url: str, n: int, use_cprofile: bool, settle: bool = False) -> dict[str, Any]:
    import redis.asyncio as aioredis

    import aqueue

    app, noop = _app(url)
    raw = aioredis.Redis.from_url(url)
    await raw.flushall()
    await noop.enqueue_many([() for _ in range(n)])
    before = await _redis_snapshot(raw)
    worker = aqueue.Worker(app, concurrency=100, burst=True, beat=False)
    if os.environ.get("COSTS_NO_EAGER"):  # compare: jobs started on the loop's next turn
        from aqueue.runtime import running

        running.task_starter = lambda loop: loop.create_task
    if settle:  # as `aqueue worker` does before it runs the worker
        from aqueue.runtime.tuning import settle_heap

        settle_heap()
    profile = cProfile.Profile(time.process_time) if use_cprofile else None
    start, cpu = time.perf_counter(), time.process_time()
    if profile:
        profile.enable()
    await worker.run()
    if profile:
        profile.disable()
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = await _redis_snapshot(raw)
    done = worker.stats.succeeded
    await raw.aclose()
    await app.close()
    out = {
        "mode": "drain",
        "n": n,
        "done": done,
        "tasks_per_s": round(done / took),
        "worker_cpu_us_per_task": round(cpu / n * 1e6, 2),
        **_per_task(before, after, n),
    }
    if profile:
        out["top_self_time"] = _top(profile, n)
    return out


async def bulk(url: str, n: int, use_cprofile: bool, repeat: int = 1) -> dict[str, Any]:
    """One ``enqueue_many`` of N no-ops (``repeat``: that many in a row, the queue
    emptied in between; the figures are the last one's, the rates all of them)."""
    import redis.asyncio as aioredis

    app, noop = _app(url)
    raw = aioredis.Redis.from_url(url)
    await raw.flushall()
    await noop.enqueue_many([() for _ in range(100)])  # warm up: connections, scripts
    rates: list[int] = []
    for batch in range(repeat):
        if batch:
            await raw.flushall()
        before = await _redis_snapshot(raw)
        profile = cProfile.Profile(time.process_time) if use_cprofile else None
        start, cpu = time.perf_counter(), time.process_time()
        if profile:
            profile.enable()
        await noop.enqueue_many([() for _ in range(n)])
        if profile:
            profile.disable()
        took, cpu = time.perf_counter() - start, time.process_time() - cpu
        after = await _redis_snapshot(raw)
        rates.append(round(n / took))
    await raw.aclose()
    await app.close()
    out: dict[str, Any] = {
        "mode": "bulk",
        "n": n,
        "tasks_per_s": rates[-1],
        "tasks_per_s_each": rates,
        "client_cpu_us_per_task": round(cpu / n * 1e6, 2),
        **_per_task(before, after, n),
    }
    if profile:
        out["top_self_time"] = _top(profile, n)
    return out


async def enqueue(url: str, n: int, use_cprofile: bool) -> dict[str, Any]:
    import redis.asyncio as aioredis

    app, noop = _app(url)
    raw = aioredis.Redis.from_url(url)
    await raw.flushall()
    for _ in range(100):  # warm up: connections, script loading
        await noop.enqueue()
    before = await _redis_snapshot(raw)
    profile = cProfile.Profile(time.process_time) if use_cprofile else None
    start, cpu = time.perf_counter(), time.process_time()
    if profile:
        profile.enable()
    for _ in range(n):
        await noop.enqueue()
    if profile:
        profile.disable()
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = await _redis_snapshot(raw)
    await raw.aclose()
    await app.close()
    out = {
        "mode": "enqueue",
        "n": n,
        "tasks_per_s": round(n / took),
        "client_cpu_us_per_task": round(cpu / n * 1e6, 2),
        "client_wall_us_per_task": round(took / n * 1e6, 2),
        **_per_task(before, after, n),
    }
    if profile:
        out["top_self_time"] = _top(profile, n)
    return out


TASKS_MODULE = '''
import aqueue, gc, os, time
app = aqueue.App(os.environ["PROF_URL"], prefix="prof")

@app.task(name="noop")
async def noop() -> None:
    return None


@app.task(name="stamp")
async def stamp() -> list[float]:
    """When it ran (wall clock, shared with the client) and the worker's GC count."""
    return [time.time(), float(sum(s["collections"] for s in gc.get_stats()))]
'''


def _runqueue_ms(pid: int | str) -> float:
    """Time the process's main thread has spent runnable but waiting for a CPU."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e6


async def _roundtrips(
    stamp: Any, n: int, worker_pid: int
) -> tuple[list[float], list[list[float]], list[tuple[float, float, bool, float]]]:
    """N round trips; per call its latency, the client's GC pauses (ms) inside it,
    and (enqueue to task start, task start to result in hand, worker GC ran)."""
    pauses: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(on_gc)
    lat: list[float] = []
    gcs: list[list[float]] = []
    legs: list[tuple[float, float, bool, float]] = []
    worker_gc = -1.0
    try:
        for _ in range(n):
            seen = len(pauses)
            waited = _runqueue_ms("self") + _runqueue_ms(worker_pid)
            wall = time.time()
            t = time.perf_counter()
            ran, collections = await (await stamp.enqueue()).get(timeout=30)
            took = time.perf_counter() - t
            lat.append(took * 1000)
            gcs.append(pauses[seen:])
            waited = _runqueue_ms("self") + _runqueue_ms(worker_pid) - waited
            legs.append(
                (
                    (ran - wall) * 1000,
                    (wall + took - ran) * 1000,
                    collections != worker_gc,
                    waited,
                )
            )
            worker_gc = collections
    finally:
        gc.callbacks.remove(on_gc)
    return lat, gcs, legs


def _summary(
    lat: list[float], gcs: list[list[float]], legs: list[tuple[float, float, bool, float]]
) -> dict[str, Any]:
    q = statistics.quantiles(lat, n=100, method="inclusive")
    cut = q[98]
    slow = [i for i, v in enumerate(lat) if v >= cut]
    to_start = [legs[i][0] for i in range(len(lat))]
    to_result = [legs[i][1] for i in range(len(lat))]
    return {
        "enqueue_to_start_p50_ms": round(statistics.median(to_start), 3),
        "start_to_result_p50_ms": round(statistics.median(to_result), 3),
        "slowest_1pct_enqueue_to_start_ms": round(statistics.median(to_start[i] for i in slow), 3),
        "slowest_1pct_start_to_result_ms": round(statistics.median(to_result[i] for i in slow), 3),
        "runqueue_wait_p50_ms": round(statistics.median(leg[3] for leg in legs), 3),
        "slowest_1pct_runqueue_wait_ms": round(statistics.median(legs[i][3] for i in slow), 3),
        "slowest_1pct_with_worker_gc": sum(1 for i in slow if legs[i][2]),
        "worker_gc_runs": sum(1 for leg in legs[1:] if leg[2]),
        "p50_ms": round(q[49], 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(max(lat), 3),
        "client_gc_runs": sum(len(g) for g in gcs),
        "slowest_1pct_with_client_gc": sum(1 for i in slow if gcs[i]),
        "slowest_1pct": len(slow),
    }


async def roundtrip(url: str, n: int, worker_env: dict[str, str]) -> dict[str, Any]:
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(url)
    await raw.flushall()
    await raw.aclose()
    moddir = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"aqueue-prof-{os.getpid()}")
    os.makedirs(moddir, exist_ok=True)
    with open(os.path.join(moddir, "prof_tasks.py"), "w") as f:
        f.write(TASKS_MODULE)
    env = dict(
        os.environ,
        PROF_URL=url,
        PYTHONPATH=os.pathsep.join([moddir, ROOT]),
        **worker_env,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aqueue",
            "worker",
            "prof_tasks:app",
            "-c",
            "100",
            "--no-beat",
            "--log-level=warning",
        ],
        env=env,
    )
    try:
        sys.path.insert(0, moddir)
        os.environ["PROF_URL"] = url
        import prof_tasks

        app, stamp = prof_tasks.app, prof_tasks.stamp
        async with app:
            for _ in range(200):  # warm-up, and the worker is up once these return
                await (await stamp.enqueue()).get(timeout=30)
            plain = _summary(*await _roundtrips(stamp, n, proc.pid))
            gc.collect()
            gc.freeze()
            gc.disable()
            try:
                frozen = _summary(*await _roundtrips(stamp, n, proc.pid))
            finally:
                gc.enable()
                gc.unfreeze()
    finally:
        proc.terminate()
        proc.wait(15)
    return {
        "mode": "roundtrip",
        "n": n,
        "worker_env": worker_env,
        "client_gc_on": plain,
        "client_gc_off": frozen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["drain", "bulk", "enqueue", "roundtrip"])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--url", help="a Redis this script may FLUSHALL (default: its own)")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument(
        "--settle-heap", action="store_true", help="drain: gc.freeze() first, as the CLI does"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="bulk: that many batches in a row (warm figures)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="roundtrip: environment for the worker process",
    )
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        from aqueue.testing.server import RedisServer

        server = RedisServer()
        server.start()
        url = server.url
    try:
        import uvloop

        if args.mode == "drain":
            result = uvloop.run(drain(url, args.n, args.cprofile, settle=args.settle_heap))
        elif args.mode == "bulk":
            result = uvloop.run(bulk(url, args.n, args.cprofile, args.repeat))
        elif args.mode == "enqueue":
            result = uvloop.run(enqueue(url, args.n, args.cprofile))
        else:
            worker_env = dict(kv.split("=", 1) for kv in args.worker_env)
            result = uvloop.run(roundtrip(url, args.n, worker_env))
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
