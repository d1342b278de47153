"""Start-up and peak RSS of one ``aqueue worker`` process draining N no-ops.

    python benchmarks/startup.py                          # this checkout, 3 runs, N = 10,000
    python benchmarks/startup.py --tree /tmp/old --tree . # two trees, runs alternating
    python benchmarks/startup.py --python /venv/bin/python  # another interpreter (its packages)

Starts its own redis-server on a free port (never 127.0.0.1:6379). For each run it
enqueues N no-ops, then spawns ``python -m aqueue worker startup_tasks:app --burst -c 100
--queues bench --log-level warning`` with ``aqueue/`` taken from the tree (``PYTHONPATH``)
and reports, per run:

* peak RSS: what GNU ``/usr/bin/time`` reports as the worker's maximum resident set;
* CPU to the first task: the worker's ``time.process_time()`` when its first task runs
  (far less disturbed by other load on the machine than wall-clock time), and the
  wall-clock time from spawn to that moment;
* spawn to the last task (wall clock) and the drain rate from spawn;
* the worker's whole CPU time (user + sys).

Each tree imports from ``.pyc`` files of its own (``PYTHONPYCACHEPREFIX``, filled by one
uncounted run first); ``--no-pyc`` sets ``PYTHONDONTWRITEBYTECODE=1`` instead, so an
editable install compiles aqueue from source at every spawn.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from aqueue.testing.server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
TIME = "/usr/bin/time"  # GNU time (apt-get install time)

TASKS = """
import os, sys, time
import aqueue

app = aqueue.App(os.environ["STARTUP_REDIS_URL"])
_ran = [0]
_n = int(os.environ["STARTUP_N"])


@app.task(queue="bench")
async def noop() -> None:
    _ran[0] += 1
    if _ran[0] == 1 or _ran[0] == _n:
        with open(os.environ["STARTUP_MARKS"], "a") as f:
            f.write(f"{time.time()!r} {time.process_time()!r}\\n")


if __name__ == "__main__":
    import asyncio

    async def fill() -> None:
        async with app:
            for _ in range(0, _n, 1000):
                await noop.enqueue_many([()] * 1000)

    asyncio.run(fill())
"""


def one_run(
    python: str, tree: Path, n: int, work: Path, url: str, pyc: Path | None
) -> dict[str, float]:
    """Fill the queue, run one burst worker over it; its figures."""
    marks = work / "marks"
    marks.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        STARTUP_REDIS_URL=url,
        STARTUP_N=str(n),
        STARTUP_MARKS=str(marks),
        PYTHONPATH=os.pathsep.join([str(tree), str(work)]),
    )
    if pyc is not None:
        env["PYTHONPYCACHEPREFIX"] = str(pyc)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    redis.Redis.from_url(url).flushdb()  # the private server main() started
    subprocess.run([python, str(work / "startup_tasks.py")], env=env, check=True)
    argv = [python, "-m", "aqueue", "worker", "startup_tasks:app", "--burst", "-c", "100",
            "--queues", "bench", "--log-level", "warning"]  # fmt: skip
    # GNU time, a small process, measures the worker: a child forked from this (big)
    # interpreter would inherit its peak RSS in ru_maxrss, which survives the exec.
    timing = work / "time"
    spawned = time.time()
    subprocess.run(
        [TIME, "-f", "%M %U %S", "-o", str(timing), *argv], env=env, cwd=work, check=True
    )
    peak_kib, user, system = map(float, timing.read_text().split()[-3:])
    (first_at, first_cpu), (last_at, _) = (
        tuple(map(float, line.split())) for line in marks.read_text().splitlines()[:2]
    )
    return {
        "peak_rss_mib": peak_kib / 1024,
        "cpu_to_first_task_ms": first_cpu * 1000,
        "spawn_to_first_task_ms": (first_at - spawned) * 1000,
        "spawn_to_last_task_s": last_at - spawned,
        "drain_from_spawn_per_s": n / (last_at - spawned),
        "worker_cpu_s": user + system,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="no-ops per run (default 10,000)")
    ap.add_argument("--runs", type=int, default=3, help="counted runs per tree (default 3)")
    ap.add_argument("--tree", action="append", type=Path, help="a tree holding aqueue/")
    ap.add_argument("--python", default=sys.executable, help="the interpreter to run")
    ap.add_argument("--no-pyc", action="store_true", help="compile aqueue at every spawn")
    args = ap.parse_args()
    trees = [t.resolve() for t in args.tree or [ROOT]]
    server = RedisServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="aqueue-startup-") as tmp:
            work = Path(tmp)
            (work / "startup_tasks.py").write_text(TASKS)
            results: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
            for run in range(args.runs + 1):  # run 0 fills each tree's .pyc cache
                for i, tree in enumerate(trees):
                    pyc = None if args.no_pyc else work / "pyc" / str(i)
                    figures = one_run(args.python, tree, args.n, work, server.url, pyc)
                    if run:
                        results[tree].append(figures)
                        print(tree, "  ".join(f"{k}={v:.3g}" for k, v in figures.items()))
            for tree, runs in results.items():
                medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print("median", tree, "  ".join(f"{k}={v:.3g}" for k, v in medians.items()))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
