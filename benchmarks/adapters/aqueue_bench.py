"""aqueue adapter: runs in the driver's interpreter, worker via `python -m aqueue worker`."""

import sys

from common import Lib, run_adapter


class Aqueue(Lib):
    name = "aqueue"
    version_pkgs = ("aqueue", "redis", "msgspec")
    has_bulk = True
    worker_note = (
        "python -m aqueue worker aqueue_tasks:app --concurrency 100 --queues bench "
        "--log-level warning"
    )
    result_note = "await AsyncResult.get(timeout=...)"

    def worker_cmd(self, concurrency: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "aqueue",
            "worker",
            "aqueue_tasks:app",
            "--concurrency",
            str(concurrency),
            "--queues",
            "bench",
            "--log-level",
            "warning",
        ]

    async def setup(self) -> None:
        import aqueue_tasks

        self.t = aqueue_tasks
        await aqueue_tasks.app.__aenter__()

    async def close(self) -> None:
        await self.t.app.__aexit__(None, None, None)

    async def enqueue_noop(self) -> None:
        await self.t.noop.enqueue()

    async def enqueue_sleep(self) -> None:
        await self.t.sleepy.enqueue()

    async def bulk_noop(self, n: int) -> None:
        await self.t.noop.enqueue_many([() for _ in range(n)])

    async def bulk_sleep(self, n: int) -> None:
        await self.t.sleepy.enqueue_many([() for _ in range(n)])

    async def roundtrip(self) -> None:
        r = await self.t.noop.enqueue()
        await r.get(timeout=30)


if __name__ == "__main__":
    run_adapter(Aqueue)
