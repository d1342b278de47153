"""Machine floor: no-op coroutines per second one process can run under Semaphore(100).

Mirrors what a worker's dispatch loop does at minimum: acquire a slot, spawn a
task, the task runs a no-op coroutine and releases the slot.
"""

import argparse
import asyncio
import json
import statistics
import time


async def _floor(n: int, conc: int) -> float:
    sem = asyncio.Semaphore(conc)
    done = asyncio.Event()
    left = n

    async def noop() -> None:
        await asyncio.sleep(0)

    async def run() -> None:
        nonlocal left
        try:
            await noop()
        finally:
            sem.release()
            left -= 1
            if left == 0:
                done.set()

    loop = asyncio.get_running_loop()
    tasks = set()
    t0 = time.perf_counter()
    for _ in range(n):
        await sem.acquire()
        t = loop.create_task(run())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    await done.wait()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    out = {}
    loops = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        loops["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    for name, factory in loops.items():
        rates = []
        for _ in range(args.repeat):
            loop = factory()
            try:
                rates.append(loop.run_until_complete(_floor(args.n, args.concurrency)))
            finally:
                loop.close()
        out[name] = round(statistics.median(rates), 1)
    print(json.dumps({"floor_tasks_per_s": out, "n": args.n, "concurrency": args.concurrency}))


if __name__ == "__main__":
    main()
