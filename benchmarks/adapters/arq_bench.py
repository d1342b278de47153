"""arq adapter: client side via ArqRedis, worker via the `arq` CLI."""

import os
import sys

from common import Lib, run_adapter


class Arq(Lib):
    name = "arq"
    version_pkgs = ("arq", "redis")
    worker_note = (
        "arq CLI, WorkerSettings.max_jobs=100, poll_delay 0.5 s (default; 0.01 s in the "
        "round-trip run), job logs at WARNING"
    )
    result_note = "job.result(poll_delay=0.01) (default poll is 0.5 s)"

    def worker_cmd(self, concurrency: int) -> list[str]:
        exe = os.path.join(os.path.dirname(sys.executable), "arq")
        return [exe, "--custom-log-dict", "arq_tasks.LOG_CONFIG", "arq_tasks.WorkerSettings"]

    async def setup(self) -> None:
        import arq_tasks
        from arq import create_pool

        self.pool = await create_pool(arq_tasks.REDIS)

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue_noop(self) -> None:
        await self.pool.enqueue_job("noop")

    async def enqueue_sleep(self) -> None:
        await self.pool.enqueue_job("sleepy")

    async def roundtrip(self) -> None:
        job = await self.pool.enqueue_job("noop")
        await job.result(timeout=30, poll_delay=0.01)


if __name__ == "__main__":
    run_adapter(Arq)
