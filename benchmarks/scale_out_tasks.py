"""The tasks of benchmarks/scale_out.py: one no-op task per queue.

Worker processes load ``scale_out_tasks:app``; the queues come from the
``SCALE_OUT_QUEUES`` environment variable (comma-separated), the Redis URL and
prefix from ``AQUEUE_REDIS_URL`` / ``AQUEUE_PREFIX``.
"""

from __future__ import annotations

import os
from typing import Any

import aqueue


def register(app: aqueue.App, queues: list[str]) -> list[Any]:
    tasks = []
    for queue in queues:

        async def noop() -> None:
            return None

        tasks.append(app.task(queue=queue, name=f"scale_out.noop.{queue}")(noop))
    return tasks


#: Built only in worker processes (the benchmark sets SCALE_OUT_QUEUES for them).
app = aqueue.App()
register(app, [q for q in os.environ.get("SCALE_OUT_QUEUES", "").split(",") if q])
