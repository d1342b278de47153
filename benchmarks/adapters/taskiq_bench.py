"""taskiq adapter: RedisStreamBroker + RedisAsyncResultBackend, `taskiq worker` CLI."""

import os
import sys

from common import Lib, run_adapter


class Taskiq(Lib):
    name = "taskiq"
    version_pkgs = ("taskiq", "taskiq-redis", "redis")
    worker_note = "taskiq worker --workers 1 --max-async-tasks 100 --log-level WARNING"
    result_note = "task.wait_result(check_interval=0.01) (default 0.2 s)"

    def worker_cmd(self, concurrency: int) -> list[str]:
        exe = os.path.join(os.path.dirname(sys.executable), "taskiq")
        return [
            exe,
            "worker",
            "taskiq_tasks:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(concurrency),
            "--log-level",
            "WARNING",
        ]

    async def setup(self) -> None:
        import taskiq_tasks

        self.t = taskiq_tasks
        await taskiq_tasks.broker.startup()

    async def close(self) -> None:
        await self.t.broker.shutdown()

    async def enqueue_noop(self) -> None:
        await self.t.noop.kiq()

    async def enqueue_sleep(self) -> None:
        await self.t.sleepy.kiq()

    async def roundtrip(self) -> None:
        task = await self.t.noop.kiq()
        res = await task.wait_result(check_interval=0.01, timeout=30)
        assert not res.is_err, res.error


if __name__ == "__main__":
    run_adapter(Taskiq)
