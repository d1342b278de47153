"""Celery adapter (sync client), worker via `celery worker -P threads -c 100`."""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

from common import Lib, run_adapter


class CeleryLib(Lib):
    name = "celery"
    version_pkgs = ("celery", "kombu", "redis")
    has_bulk = True
    worker_note = (
        "celery worker -P threads -c 100 (thread pool for I/O-bound tasks; "
        "tasks are sync def, sleep task uses time.sleep), defaults otherwise"
    )
    result_note = "AsyncResult.get() (Redis backend, pub/sub)"

    def worker_cmd(self, concurrency: int) -> list[str]:
        exe = os.path.join(os.path.dirname(sys.executable), "celery")
        return [
            exe,
            "-A",
            "celery_tasks",
            "worker",
            "-P",
            "threads",
            "-c",
            str(concurrency),
            "--loglevel",
            "WARNING",
        ]

    async def setup(self) -> None:
        import celery_tasks

        self.t = celery_tasks

    async def close(self) -> None:
        self.t.app.close()

    async def enqueue_noop(self) -> None:
        self.t.noop.delay()

    async def enqueue_sleep(self) -> None:
        self.t.sleepy.delay()

    async def enqueue_concurrent(self, fn, n: int, conc: int) -> None:  # type: ignore[override]
        # Celery's client is synchronous: 100 threads stand in for 100 coroutines.
        task = self.t.noop if fn == self.enqueue_noop else self.t.sleepy
        with ThreadPoolExecutor(conc) as ex:
            list(ex.map(lambda _: task.delay(), range(n)))

    async def bulk_noop(self, n: int) -> None:
        from celery import group

        group(self.t.noop.s() for _ in range(n)).apply_async()

    async def bulk_sleep(self, n: int) -> None:
        from celery import group

        group(self.t.sleepy.s() for _ in range(n)).apply_async()

    async def roundtrip(self) -> None:
        self.t.noop.delay().get(timeout=30)


if __name__ == "__main__":
    run_adapter(CeleryLib)
