#!/usr/bin/env python3
"""Scale-out figures: drain rate of worker processes over queues on 1, 2 and 3
cluster masters, next to the same queues on one standalone server.

    python benchmarks/scale_out.py                  # -n 20000 tasks, 1 and 2 workers, 3 repeats
    python benchmarks/scale_out.py -n 5000 --repeat 1 --workers 1

Starts, on free loopback ports, one standalone ``redis-server`` and a 3-master
Redis Cluster (no replicas: the figures are about spreading work, not about
replication), and stops them by their own handles at the end. Every layout
uses the same six queues and the same code:

* ``standalone``: the six queues on the standalone server;
* ``cluster/1``: six queues whose slots all sit on one master;
* ``cluster/2``: three on one master, three on another;
* ``cluster/3``: two on each master.

A run enqueues ``n`` no-op tasks spread evenly over the six queues, then starts
``N`` worker processes (``aqueue worker --burst -c 100``, each reading all six
queues), which exit once the queues are empty.
The drain rate is ``n`` over the drain's own time: from the first task's start
to the last task's end, as the task records say (Redis' clock), so process
start-up is left out; every record is checked to say "succeeded".
Layouts are interleaved within each repeat, so a busy moment of the machine
spreads over all of them; the table shows medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.crc import key_slot

import aqueue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_out_tasks import register

HERE = Path(__file__).resolve().parent
SLOT_RANGES = [(0, 5460), (5461, 10922), (10923, 16383)]
TASKS_MODULE = "scale_out_tasks"


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 <= 65535:  # a cluster node also needs its bus port
            return port


def wait(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.exceptions.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


@contextmanager
def servers(count: int, *args: str) -> Iterator[list[int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    with tempfile.TemporaryDirectory(prefix="aqueue-scale-out-") as workdir:
        procs: list[subprocess.Popen[bytes]] = []
        ports: list[int] = []
        try:
            for _ in range(count):
                port = free_port()
                directory = os.path.join(workdir, str(port))
                os.makedirs(directory)
                procs.append(
                    subprocess.Popen(
                        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
                         "--save", "", "--appendonly", "no", *args],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
                )  # fmt: skip
                ports.append(port)
            for port in ports:
                wait(redis.Redis(port=port).ping, f"redis-server on {port}")
            yield ports
        finally:
            for proc in procs:  # only the processes this script started
                proc.terminate()
            for proc in procs:
                proc.wait(10)


def form_cluster(ports: list[int]) -> None:
    for port, (start, end) in zip(ports, SLOT_RANGES, strict=True):
        redis.Redis(port=port).execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
    first = redis.Redis(port=ports[0])
    for port in ports[1:]:
        first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)

    def ok() -> bool:
        return all(
            redis.Redis(port=p, decode_responses=True).cluster("info")["cluster_state"] == "ok"
            for p in ports
        )

    wait(ok, "the cluster to form")


def master_of(queue: str) -> int:
    slot = key_slot(f"{{{queue}}}".encode())
    return next(i for i, (start, end) in enumerate(SLOT_RANGES) if start <= slot <= end)


def queues_on(masters: list[int], count: int = 6) -> list[str]:
    """``count`` queue names whose slots sit on ``masters``, spread evenly."""
    wanted = {m: count // len(masters) for m in masters}
    names: list[str] = []
    i = 0
    while any(wanted.values()):
        name = f"q{i}"
        i += 1
        m = master_of(name)
        if wanted.get(m):
            wanted[m] -= 1
            names.append(name)
    return names


async def enqueue(url: str, prefix: str, queues: list[str], n: int) -> dict[str, list[str]]:
    """Enqueue ``n`` tasks spread evenly over ``queues``; their ids by queue."""
    app = aqueue.App(url, prefix=prefix)
    tasks = register(app, queues)  # the names the workers' scale_out_tasks.app knows
    ids: dict[str, list[str]] = {}
    try:
        per_queue = n // len(queues)
        for queue, task in zip(queues, tasks, strict=True):
            for start in range(0, per_queue, 5000):
                handles = await task.enqueue_many([() for _ in range(min(5000, per_queue - start))])
                ids.setdefault(queue, []).extend(r.id for r in handles)
    finally:
        await app.close()
    return ids


async def drain_window(url: str, prefix: str, ids: dict[str, list[str]]) -> float:
    """Seconds from the first task's start to the last one's end (from the records,
    which hold Redis' clock): the drain itself, without process start-up."""
    app = aqueue.App(url, prefix=prefix)
    first, last, done = float("inf"), 0.0, 0
    try:
        broker = app.client.broker
        for queue, queue_ids in ids.items():
            for start in range(0, len(queue_ids), 1000):
                for record in await broker.records(queue, queue_ids[start : start + 1000]):
                    if record.get(b"state") == b"succeeded":
                        done += 1
                        first = min(first, int(record[b"started"]) / 1000)
                        last = max(last, int(record[b"finished"]) / 1000)
    finally:
        await app.close()
    expected = sum(len(x) for x in ids.values())
    if done != expected:
        raise SystemExit(f"only {done} of {expected} tasks succeeded")
    return last - first


def drain(url: str, prefix: str, queues: list[str], workers: int) -> float:
    env = dict(os.environ)
    env.update(
        AQUEUE_REDIS_URL=url,
        AQUEUE_PREFIX=prefix,
        SCALE_OUT_QUEUES=",".join(queues),
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    )
    command = [
        *(sys.executable, "-m", "aqueue", "worker", f"{TASKS_MODULE}:app", "--burst", "-c", "100"),
        *("-q", ",".join(queues), "--log-level", "warning", "--no-beat"),
    ]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed ({proc.returncode}): {err.decode()[-2000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="tasks per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="worker process counts (default 1,2)")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    # A SIGTERM still stops the servers this script started (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with servers(1) as (standalone,), servers(3, "--cluster-enabled", "yes") as nodes:
        form_cluster(nodes)
        standalone_url = f"redis://127.0.0.1:{standalone}/0"
        cluster_url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in nodes)
        layouts = {
            "standalone": (standalone_url, queues_on([0, 1, 2])),
            "cluster/1": (cluster_url, queues_on([0])),
            "cluster/2": (cluster_url, queues_on([0, 1])),
            "cluster/3": (cluster_url, queues_on([0, 1, 2])),
        }
        rates: dict[tuple[str, int], list[float]] = {}
        for repeat in range(args.repeat):
            for workers in counts:
                for name, (url, queues) in layouts.items():
                    prefix = f"so{uuid.uuid4().hex[:8]}"
                    ids = asyncio.run(enqueue(url, prefix, queues, args.n))
                    wall = drain(url, prefix, queues, workers)
                    seconds = asyncio.run(drain_window(url, prefix, ids))
                    rate = sum(len(x) for x in ids.values()) / seconds
                    rates.setdefault((name, workers), []).append(rate)
                    print(
                        f"repeat {repeat + 1} {name:<11} workers={workers}: "
                        f"{rate:,.0f} tasks/s (drain {seconds:.2f} s, processes {wall:.2f} s)",
                        flush=True,
                    )
    print()
    header = ["layout", "queues per master"] + [f"{w} worker(s), tasks/s" for w in counts]
    if len(counts) > 1:
        header.append(f"{counts[-1]} vs {counts[0]}")
    header.append("vs standalone")
    rows = [header]
    base = {w: statistics.median(rates[("standalone", w)]) for w in counts}
    for name, (_, queues) in layouts.items():
        spread = (
            "6 (one server)"
            if name == "standalone"
            else " / ".join(str(sum(1 for q in queues if master_of(q) == m)) for m in range(3))
        )
        medians = [statistics.median(rates[(name, w)]) for w in counts]
        row = [name, spread] + [f"{m:,.0f}" for m in medians]
        if len(counts) > 1:
            row.append(f"{medians[-1] / medians[0]:.2f}x")
        row.append(" / ".join(f"{m / base[w]:.2f}x" for m, w in zip(medians, counts, strict=True)))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))
    print(f"\nn={args.n} per run, repeats={args.repeat}, cpus={os.cpu_count()}, medians")
    return 0


if __name__ == "__main__":
    sys.exit(main())
