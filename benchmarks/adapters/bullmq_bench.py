"""BullMQ (Python) adapter: client side via bullmq.Queue, worker via bullmq_tasks.py."""

import asyncio
import os
import sys

from common import Lib, run_adapter


class Bullmq(Lib):
    name = "bullmq"
    version_pkgs = ("bullmq", "redis")
    has_bulk = True
    worker_note = "python bullmq_tasks.py (Worker(concurrency=100); the package has no CLI)"
    result_note = "QueueEvents 'completed' event for the job id"

    def worker_cmd(self, concurrency: int) -> list[str]:
        return [sys.executable, os.path.join(os.path.dirname(__file__), "bullmq_tasks.py")]

    async def setup(self) -> None:
        from bullmq import Queue, QueueEvents

        url = os.environ["BENCH_REDIS_URL"]
        self.q = Queue("bench", {"connection": url})
        self.events = QueueEvents("bench", {"connection": url})
        self.done: set[str] = set()
        self.waiting: dict[str, asyncio.Future[None]] = {}

        def completed(args: dict, _entry_id: str) -> None:
            job_id = args.get("jobId")
            future = self.waiting.pop(job_id, None)
            if future is None:
                self.done.add(job_id)
            elif not future.done():
                future.set_result(None)

        self.events.on("completed", completed)

    async def close(self) -> None:
        await self.events.close()
        await self.q.close()

    async def enqueue_noop(self) -> None:
        await self.q.add("noop", {})

    async def enqueue_sleep(self) -> None:
        await self.q.add("sleepy", {})

    async def bulk_noop(self, n: int) -> None:
        await self.q.addBulk([{"name": "noop", "data": {}} for _ in range(n)])

    async def bulk_sleep(self, n: int) -> None:
        await self.q.addBulk([{"name": "sleepy", "data": {}} for _ in range(n)])

    async def roundtrip(self) -> None:
        job = await self.q.add("noop", {})
        if job.id in self.done:  # completed before we asked
            self.done.discard(job.id)
            return
        future = asyncio.get_running_loop().create_future()
        self.waiting[job.id] = future
        await asyncio.wait_for(future, 30)


if __name__ == "__main__":
    run_adapter(Bullmq)
