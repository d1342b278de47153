"""streaq adapter: Worker as client context manager, worker via `streaq run`."""

import os
import sys

from common import Lib, run_adapter


class Streaq(Lib):
    name = "streaq"
    version_pkgs = ("streaq", "coredis")
    has_bulk = True
    worker_note = "streaq run, Worker(concurrency=100), tasks silent=True"
    result_note = (
        "await task.result(timeout=...) (subscribes per call; ~100 ms even for an "
        "already-finished task here)"
    )

    def worker_cmd(self, concurrency: int) -> list[str]:
        exe = os.path.join(os.path.dirname(sys.executable), "streaq")
        return [exe, "run", "streaq_tasks:worker"]

    async def setup(self) -> None:
        import streaq_tasks

        self.t = streaq_tasks
        await streaq_tasks.worker.__aenter__()

    async def close(self) -> None:
        await self.t.worker.__aexit__(None, None, None)

    async def enqueue_noop(self) -> None:
        await self.t.noop.enqueue()

    async def enqueue_sleep(self) -> None:
        await self.t.sleepy.enqueue()

    async def bulk_noop(self, n: int) -> None:
        await self.t.worker.enqueue_many([self.t.noop.enqueue() for _ in range(n)])

    async def bulk_sleep(self, n: int) -> None:
        await self.t.worker.enqueue_many([self.t.sleepy.enqueue() for _ in range(n)])

    async def roundtrip(self) -> None:
        task = await self.t.noop.enqueue()
        res = await task.result(timeout=30)
        assert res.success, res


if __name__ == "__main__":
    run_adapter(Streaq)
