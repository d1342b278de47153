"""SAQ adapter: client side via saq.Queue, worker via the `saq` CLI."""

import os
import sys

from common import Lib, run_adapter


class Saq(Lib):
    name = "saq"
    version_pkgs = ("saq", "redis")
    worker_note = "saq CLI, settings concurrency=100"
    result_note = "queue.apply(poll_interval=0.01) (default 0.5 s)"

    def worker_cmd(self, concurrency: int) -> list[str]:
        exe = os.path.join(os.path.dirname(sys.executable), "saq")
        return [exe, "saq_tasks.settings"]

    async def setup(self) -> None:
        import saq_tasks

        self.q = saq_tasks.queue
        await self.q.connect()

    async def close(self) -> None:
        await self.q.disconnect()

    async def enqueue_noop(self) -> None:
        await self.q.enqueue("noop")

    async def enqueue_sleep(self) -> None:
        await self.q.enqueue("sleepy")

    async def roundtrip(self) -> None:
        # Queue.apply: enqueue + wait for the result.  (job.refresh(until_complete=...)
        # subscribes after reading the job, and a completion landing in between was
        # seen to stall a round trip until its timeout, so apply is used.)
        await self.q.apply("noop", timeout=30, poll_interval=0.01)


if __name__ == "__main__":
    run_adapter(Saq)
