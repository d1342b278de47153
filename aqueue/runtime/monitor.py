"""What ``aqueue inspect`` shows: a worker's self-description and a deployment snapshot.

Every worker publishes :func:`describe_worker` on each heartbeat (the
registry itself is :class:`~aqueue._redis.views.RedisViews`); :func:`snapshot`
puts queue figures, live workers, running and registered tasks together as
plain data for the CLI, metrics and any dashboard.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..client import Client
from ..task import Task
from .running import Inflight
from .slots import WorkerStats

__all__ = [
    "MAX_LISTED_RUNNING",
    "NODE_ENV",
    "age",
    "describe_worker",
    "snapshot",
    "unserved_queues",
]

#: Running tasks listed per worker at most (the rest are only counted).
MAX_LISTED_RUNNING = 1000
#: Environment variable naming the node a worker process belongs to
#: (set by ``aqueue multi`` and the ``--processes`` supervisor).
NODE_ENV = "AQUEUE_NODE"


def describe_worker(
    name: str,
    queues: Sequence[str],
    concurrency: int,
    stats: WorkerStats,
    inflight: Inflight,
    stopping: bool,
) -> dict[str, Any]:
    """What a worker publishes about itself on every heartbeat."""
    now = time.time()
    perf = time.perf_counter()
    running = []
    for n, run in enumerate(inflight):
        if n >= MAX_LISTED_RUNNING:
            break
        running.append(
            {
                "id": run.job.envelope.id,
                "name": run.job.display_name,
                "queue": run.job.delivery.queue,
                "attempt": run.job.attempt,
                "started_at": round(now - (perf - run.started), 3),
            }
        )
    s = stats
    return {
        "name": name,
        "node": os.environ.get(NODE_ENV) or None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": list(queues),
        "concurrency": concurrency,
        "started_at": round(s.started_at, 3),
        "heartbeat_at": round(now, 3),
        "stopping": stopping,
        "running_count": len(inflight),
        "running": running,
        "stats": {
            "processed": s.processed,
            "succeeded": s.succeeded,
            "failed": s.failed,
            "retried": s.retried,
            "dead": s.dead,
            "expired": s.expired,
            "aborted": s.aborted,
            "reclaimed": s.reclaimed,
            "handed_back": s.handed_back,
        },
    }


async def snapshot(
    client: Client, queues: Sequence[str], tasks: Iterable[Task[Any, Any]] = ()
) -> dict[str, Any]:
    """Everything ``aqueue inspect`` shows, as plain data."""
    views = client.views
    figures = [await views.queue_figures(q) for q in queues]
    for figure in figures:
        where = await client.broker.placement(figure["queue"])
        if where is not None:  # a cluster: one queue is one slot on one master
            figure["slot"], figure["node"] = where
    workers = await views.live_workers(queues)
    now = time.time()
    for w in workers:
        w["uptime"] = round(now - w["started_at"], 3)
        w["heartbeat_age"] = round(max(0.0, now - w["heartbeat_at"]), 3)
    running = [dict(task, worker=w["name"]) for w in workers for task in w["running"]]
    registered = [
        {"name": t.name, "queue": t.config.queue, "is_async": t.is_async}
        for t in sorted(tasks, key=lambda t: t.name)
    ]
    settings = client.settings
    return {
        "redis": await client.topology(),
        "prefix": settings.prefix,
        "time": round(now, 3),
        "queues": figures,
        "workers": workers,
        "running": running,
        "tasks": registered,
    }


async def unserved_queues(client: Client, queues: Sequence[str]) -> list[tuple[str, int]]:
    """(queue, tasks waiting or delayed) of each of ``queues`` that has work and no live
    worker reading it: work nobody will ever run until a worker is started for it."""
    if not queues:
        return []
    views = client.views
    served = {
        q for w in await views.live_workers(queues) if not w.get("stopping") for q in w["queues"]
    }
    stranded = []
    for queue in queues:
        if queue in served:
            continue
        figures = await views.queue_figures(queue)
        waiting = int(figures["waiting"]) + int(figures["delayed"])
        if waiting:
            stranded.append((queue, waiting))
    return stranded


def age(seconds: float | None) -> str:
    """A duration as people read it on a status page: ``42.0s``, ``3.5m``, ``2.1h``."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
