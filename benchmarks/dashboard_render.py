"""How long the dashboard's pages take to render with a big deployment.

Starts a private redis-server on a free port (never touches another one),
enqueues ``--waiting`` tasks (100,000 by default) and writes ``--finished``
finished task records (1,000,000 by default; written directly, as a worker
would leave them), then times each page over HTTP against the dashboard's
own server, with an App (``-A``) and with only the Redis URL::

    python benchmarks/dashboard_render.py [--waiting 100000] [--finished 1000000] [--rounds 20]
        [--no-worker-yet]

The tasks pages are timed too: waiting, delayed and dead tasks are read
where they live; succeeded tasks are those the dashboard heard finish, so
the benchmark publishes, after the dashboard starts, the completion pushes a
worker would have sent for 1,000 of the finished records.

Prints the median and the slowest time of each page.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import time

import httpx
import redis.asyncio as aioredis

import aqueue
from aqueue.dashboard import Dashboard, serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def fill(
    app: aqueue.App, url: str, waiting: int, finished: int, with_group: bool
) -> tuple[str, str]:
    @app.task(name="bench.work")
    async def work(n: int) -> int:
        return n

    if with_group:
        await app.client.broker.ensure_group("default")  # as the first worker does
    started = time.perf_counter()
    handles = []
    for start in range(0, waiting, 10_000):
        handles += await work.enqueue_many([(n,) for n in range(start, start + 10_000)])
    print(f"enqueued {waiting:,} waiting tasks in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    raw = aioredis.Redis.from_url(url)
    base = f"{app.settings.prefix}:{{default}}:task:"
    now = int(time.time() * 1000)
    for start in range(0, finished, 20_000):
        async with raw.pipeline(transaction=False) as pipe:
            for n in range(start, min(finished, start + 20_000)):
                pipe.hset(
                    f"{base}done-{n}",
                    mapping={
                        "state": "succeeded",
                        "name": "bench.work",
                        "attempt": 1,
                        "enq": now,
                        "started": now,
                        "finished": now,
                        "result": b"\x01",
                    },
                )
            await pipe.execute()
    await raw.aclose()
    print(f"wrote {finished:,} finished task records in {time.perf_counter() - started:.1f}s")
    return handles[0].id, f"done-{finished // 2}" if finished else handles[-1].id


def push_frame(task_id: str, state: str) -> bytes:
    """One task in a completion push, as finish.lua frames it (no inline body)."""
    out = b""
    for part in (task_id.encode(), state.encode(), b""):
        out += struct.pack(">I", len(part)) + part
    return out


async def announce_finished(app: aqueue.App, dashboard: Dashboard, count: int) -> None:
    """Publish what a worker would have pushed for ``count`` finished records."""
    client = app.client.broker.client
    channel = f"{app.settings.prefix}:{{default}}:done"
    for _ in range(200):  # until the dashboard listens
        if "default" in dashboard.readings.outcomes.listening:
            break
        await asyncio.sleep(0.05)
    for start in range(0, count, 100):
        frames = b"".join(push_frame(f"done-{n}", "succeeded") for n in range(start, start + 100))
        await client.publish(channel, b"\0" + frames)
    heard = dashboard.readings.outcomes.recent
    for _ in range(200):
        if len(heard.get("default", ())) >= count:
            break
        await asyncio.sleep(0.05)


async def time_pages(base: str, pages: list[str], rounds: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for n, page in enumerate(pages):
            started = time.perf_counter()
            response = await http.get(page)  # warm up (and check it works)
            assert response.status_code == 200, (page, response.status_code)
            if n == 0:
                first = (time.perf_counter() - started) * 1000
                print(f"  first page after start: {first:.1f} ms")
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                response = await http.get(page)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            print(
                f"  {page[:48]:<48} median {statistics.median(times):7.1f} ms   "
                f"slowest {max(times):7.1f} ms   {len(response.content):>7,} bytes"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--no-worker-yet",
        action="store_true",
        help="don't create the consumer group first (no worker ever started: Redis can't "
        "say how many entries wait, so up to 10,000 are counted)",
    )
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            for _ in range(100):
                try:
                    await aioredis.Redis.from_url(url).ping()
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            app = aqueue.App(url, prefix="bench")
            waiting_id, finished_id = await fill(
                app, url, args.waiting, args.finished, not args.no_worker_yet
            )
            info = await app.client.broker.client.info("memory")
            print(
                f"redis: {await app.client.broker.client.dbsize():,} keys, "
                f"{info['used_memory_human']}"
            )
            pages = [
                "/",
                "/queues/default",
                "/dead",
                "/schedules",
                f"/tasks/{waiting_id}",
                f"/tasks/{finished_id}",
                "/tasks?state=queued",
                "/tasks?state=queued&name=work",
                "/tasks?state=scheduled",
                "/tasks?state=succeeded",
                "/tasks?state=succeeded&name=work",
                "/tasks?state=dead",
            ]
            for label, dashboard in (
                ("with the App (-A)", Dashboard(app)),
                (
                    "with only the Redis URL",
                    Dashboard(aqueue.App(url, prefix="bench"), from_code=False),
                ),
            ):
                started = time.perf_counter()
                await dashboard.start()  # without an App: the search for queues
                print(f"{label}:")
                print(f"  start: {(time.perf_counter() - started) * 1000:.1f} ms")
                await announce_finished(app, dashboard, min(1000, args.finished))
                web = await serve(dashboard, "127.0.0.1", 0)
                try:
                    await time_pages(f"http://127.0.0.1:{web.port}", pages, args.rounds)
                finally:
                    await web.close()
                    await dashboard.close()
                    await dashboard.app.close()
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
