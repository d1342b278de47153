"""Memory over a long run: stream N no-op tasks through one `aqueue worker`.

    python benchmarks/soak.py                 # 1,000,000 tasks
    python benchmarks/soak.py -n 200000       # shorter

Starts a private redis-server on a free port, a worker process (concurrency
100), and a producer that keeps about 50,000 tasks queued. Every 50,000
completions it prints the worker's resident memory, so growth shows as a
trend; at the end it checks that exactly N tasks succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
import redis.exceptions

HERE = Path(__file__).resolve().parent
TASKS = """
import aqueue

app = aqueue.App()


@app.task(queue="soak")
async def noop() -> None:
    return None
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def soak(n: int, workdir: str, url: str) -> int:
    Path(workdir, "soak_tasks.py").write_text(TASKS)
    env = dict(os.environ, AQUEUE_REDIS_URL=url, PYTHONPATH=workdir)
    worker = subprocess.Popen(
        [sys.executable, "-m", "aqueue", "worker", "soak_tasks:app", "--log-level", "warning"],
        env=env,
        cwd=workdir,
    )
    sys.path.insert(0, workdir)
    os.environ["AQUEUE_REDIS_URL"] = url
    import soak_tasks

    app = soak_tasks.app
    client = aioredis.Redis.from_url(url)
    samples: list[tuple[int, float]] = []
    started = time.perf_counter()
    try:
        async with app:
            sent = 0
            next_sample = 0
            while True:
                done = await _succeeded(client)
                if done >= next_sample:
                    samples.append((done, rss_mib(worker.pid)))
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    print(
                        f"  {done:>9,} done  worker RSS {samples[-1][1]:6.1f} MiB  {rate:8,.0f}/s",
                        flush=True,
                    )
                    next_sample += 50_000
                if done >= n:
                    break
                backlog = sent - done
                if sent < n and backlog < 50_000:
                    batch = min(10_000, n - sent)
                    await soak_tasks.noop.enqueue_many([() for _ in range(batch)])
                    sent += batch
                else:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            final = await _succeeded(client)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        await client.aclose()
    elapsed = time.perf_counter() - started
    first = samples[1][1] if len(samples) > 1 else samples[0][1]
    last = samples[-1][1]
    print(
        f"\n{final:,} of {n:,} succeeded in {elapsed:.0f}s ({final / elapsed:,.0f}/s); "
        f"worker RSS {first:.1f} MiB after the first 50,000, {last:.1f} MiB at the end "
        f"({last - first:+.1f} MiB)"
    )
    return 0 if final == n else 1


async def _succeeded(client: aioredis.Redis) -> int:
    # Entries the consumer group has read minus those still pending: the
    # acknowledged ones, exact at any moment and free of per-task bookkeeping.
    try:
        info = await client.xinfo_groups("aqueue:{soak}:stream")
    except redis.exceptions.ResponseError:  # no stream yet
        return 0
    if not info:
        return 0
    group = info[0]
    read = int(group.get("entries-read") or 0)
    return read - int(group["pending"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not on PATH", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="aqueue-soak-") as workdir:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)
            try:
                import uvloop

                return uvloop.run(soak(args.n, workdir, f"redis://127.0.0.1:{port}/0"))
            except ImportError:
                return asyncio.run(soak(args.n, workdir, f"redis://127.0.0.1:{port}/0"))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
