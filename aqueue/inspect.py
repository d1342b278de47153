"""Looking at a live deployment: worker registry, queue figures, ``inspect`` and ``check``.

Every worker writes a short JSON description of itself (host, pid, queues,
counters, running tasks) to ``<prefix>:worker:<name>`` on each heartbeat,
with a TTL of a few heartbeats, and deletes it when it stops. A worker that
dies without stopping simply disappears when the TTL runs out. Workers are
found through the per-queue heartbeat sets, so nothing scans the keyspace.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .broker import REDIS_ERRORS
from .config import mask_url
from .errors import ConnectionFailed
from .keys import CONSUMER_GROUP, worker_info_key

if TYPE_CHECKING:
    from .app import App
    from .worker import Worker

__all__ = [
    "add_parser",
    "delete_worker_info",
    "live_workers",
    "publish_worker_info",
    "queue_figures",
    "worker_info",
]

#: Running tasks listed per worker at most (the rest are only counted).
MAX_LISTED_RUNNING = 1000
#: Most waiting entries counted one by one when Redis can't say (after a purge).
WAITING_COUNT_CAP = 10_000
#: Environment variable naming the node a worker process belongs to
#: (set by ``aqueue multi`` and the ``--processes`` supervisor).
NODE_ENV = "AQUEUE_NODE"


def _info_ttl_ms(app: App) -> int:
    s = app.settings
    return int(max(3 * s.heartbeat_interval, s.dead_worker_after) * 1000)


def worker_info(worker: Worker) -> dict[str, Any]:
    """What a worker publishes about itself on every heartbeat."""
    now = time.time()
    perf = time.perf_counter()
    running = []
    for n, run in enumerate(worker._running.values()):
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
    s = worker.stats
    return {
        "name": worker.name,
        "node": os.environ.get(NODE_ENV) or None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": list(worker.queues),
        "concurrency": worker.concurrency,
        "started_at": round(s.started_at, 3),
        "heartbeat_at": round(now, 3),
        "stopping": worker._stopping,
        "running_count": len(worker._running),
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


async def publish_worker_info(worker: Worker) -> None:
    """Write the worker's description with a TTL of a few heartbeats."""
    app = worker.app
    key = worker_info_key(app.settings.prefix, worker.name)
    await app.broker.client.set(key, json.dumps(worker_info(worker)), px=_info_ttl_ms(app))


async def delete_worker_info(worker: Worker) -> None:
    """Remove the worker's description (on shutdown), after its last heartbeat."""
    import asyncio

    for loop_task in worker._loops:
        if loop_task.get_name() == "aqueue-heartbeat":
            # Until it has ended: redis-py swallows a cancellation that lands
            # while it opens a connection.
            while not loop_task.done():
                loop_task.cancel()
                await asyncio.wait({loop_task}, timeout=1.0)
    app = worker.app
    await app.broker.client.delete(worker_info_key(app.settings.prefix, worker.name))


async def live_workers(app: App, queues: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Descriptions of the workers alive on ``queues`` (default: the app's queues)."""
    broker = app.broker
    client = broker.client
    names: set[str] = set()
    for queue in queues or app.queues:
        members: list[Any] = await client.zrange(broker.keys(queue).workers, 0, -1)
        names.update(_text(m) for m in members)
    if not names:
        return []
    ordered = sorted(names)
    async with client.pipeline(transaction=False) as pipe:
        for name in ordered:
            pipe.get(worker_info_key(app.settings.prefix, name))
        raw = await pipe.execute()
    found = [json.loads(r) for r in raw if r]
    return sorted(found, key=lambda w: (w.get("node") or "", w["name"]))


async def queue_figures(app: App, queue: str) -> dict[str, Any]:
    """Depths of one queue: waiting, running (pending), delayed, dead, lag, oldest age."""
    broker = app.broker
    keys = broker.keys(queue)
    client = broker.client
    async with client.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.stream)
        pipe.zcard(keys.delayed)
        pipe.xlen(keys.dead)
        pipe.zcard(keys.workers)
        length, delayed, dead, consumers = await pipe.execute()
    pending = 0
    lag: int | None = None
    last_delivered = "0-0"
    if length:
        for group in await client.xinfo_groups(keys.stream):
            if _text(group.get("name")) == CONSUMER_GROUP:
                pending = int(group.get("pending") or 0)
                raw_lag = group.get("lag")
                lag = int(raw_lag) if raw_lag is not None else None
                last_delivered = _text(group.get("last-delivered-id")) or "0-0"
    oldest_age: float | None = None
    first = await client.xrange(keys.stream, f"({last_delivered}", "+", count=1)
    if first:
        entry_ms = int(_text(first[0][0]).split("-")[0])
        oldest_age = round(max(0.0, time.time() - entry_ms / 1000), 3)
    # Acknowledged entries are trimmed in batches, so the stream's length is not
    # the backlog: what waits is what comes after the group's last delivered id.
    # Redis tracks that count as the group's lag, unless deletions past that id
    # (a purge) make it unknown; then count, up to a cap.
    if lag is not None:
        waiting = lag
    elif first:
        after = await client.xrange(keys.stream, f"({last_delivered}", "+", count=WAITING_COUNT_CAP)
        waiting = len(after or [])
    else:
        waiting = 0
    return {
        "queue": queue,
        "stream_length": int(length),
        "waiting": waiting,
        "pending": pending,
        "lag": waiting,
        "delayed": int(delayed),
        "dead": int(dead),
        "heartbeats": int(consumers),
        "oldest_waiting_age": oldest_age,
    }


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


async def snapshot(app: App, queues: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything ``aqueue inspect`` shows, as plain data."""
    queues = list(queues or app.queues)
    figures = [await queue_figures(app, q) for q in queues]
    workers = await live_workers(app, queues)
    now = time.time()
    for w in workers:
        w["uptime"] = round(now - w["started_at"], 3)
        w["heartbeat_age"] = round(max(0.0, now - w["heartbeat_at"]), 3)
    running = [dict(task, worker=w["name"]) for w in workers for task in w["running"]]
    registered = [
        {"name": t.name, "queue": t.config.queue, "is_async": t.is_async}
        for t in sorted(app.tasks.values(), key=lambda t: t.name)
    ]
    return {
        "redis": mask_url(app.settings.redis_url),
        "prefix": app.settings.prefix,
        "time": round(now, 3),
        "queues": figures,
        "workers": workers,
        "running": running,
        "tasks": registered,
    }


# -- CLI -------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="show queues, live workers, running and registered tasks",
        description="Show queue depths, live workers, running tasks and the app's tasks.",
    )
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("--queues", help="comma-separated queues (default: the app's queues)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    p.set_defaults(func=cmd_inspect)

    c = sub.add_parser(
        "check",
        help="exit 0 when Redis answers and a worker is alive for the queues",
        description="Health check for scripts and orchestrators: exit status 0 when Redis "
        "is reachable and every given queue has at least one live worker, else 1 with a "
        "one-line reason on stderr.",
    )
    c.add_argument("app", metavar="MODULE:APP")
    c.add_argument("--queues", help="comma-separated queues (default: the app's queues)")
    c.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    c.set_defaults(func=cmd_check)


def split_queues(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [q.strip() for q in text.split(",") if q.strip()] or None


async def cmd_inspect(args: argparse.Namespace) -> int:
    from .cli import app_from_args

    app = app_from_args(args)
    async with app:
        data = await snapshot(app, split_queues(args.queues))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data))
    return 0


async def cmd_check(args: argparse.Namespace) -> int:
    from .cli import app_from_args

    app = app_from_args(args)
    queues = split_queues(args.queues) or app.queues
    try:
        async with app:
            workers = await live_workers(app, queues)
    except (ConnectionFailed, *REDIS_ERRORS) as exc:
        print(f"unhealthy: Redis unreachable: {exc}", file=sys.stderr)
        return 2
    served = {q for w in workers if not w.get("stopping") for q in w["queues"]}
    missing = [q for q in queues if q not in served]
    if missing:
        print(f"unhealthy: no live worker for queue(s) {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"ok: {len(workers)} worker(s) alive for {', '.join(queues)}")
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def render(data: dict[str, Any]) -> str:
    """The human-readable form of :func:`snapshot`."""
    out = [f"redis {data['redis']}  prefix {data['prefix']}", "", "QUEUES"]
    out.append(
        _table(
            ["queue", "waiting", "running", "delayed", "dead", "lag", "oldest"],
            [
                [
                    q["queue"],
                    str(q["waiting"]),
                    str(q["pending"]),
                    str(q["delayed"]),
                    str(q["dead"]),
                    str(q["lag"]),
                    _age(q["oldest_waiting_age"]),
                ]
                for q in data["queues"]
            ],
        )
    )
    out += ["", f"WORKERS ({len(data['workers'])} alive)"]
    if data["workers"]:
        out.append(
            _table(
                ["worker", "node", "pid", "conc", "running", "done", "failed", "uptime", "beat"],
                [
                    [
                        w["name"],
                        w.get("node") or "-",
                        str(w["pid"]),
                        str(w["concurrency"]),
                        str(w["running_count"]),
                        str(w["stats"]["succeeded"]),
                        str(w["stats"]["failed"]),
                        _age(w["uptime"]),
                        _age(w["heartbeat_age"]) + " ago",
                    ]
                    for w in data["workers"]
                ],
            )
        )
    out += ["", f"RUNNING ({len(data['running'])})"]
    if data["running"]:
        now = data["time"]
        out.append(
            _table(
                ["id", "task", "queue", "attempt", "for", "worker"],
                [
                    [
                        r["id"],
                        r["name"],
                        r["queue"],
                        str(r["attempt"]),
                        _age(now - r["started_at"]),
                        r["worker"],
                    ]
                    for r in data["running"]
                ],
            )
        )
    out += ["", f"TASKS ({len(data['tasks'])} registered)"]
    out += [f"  {t['name']}  (queue {t['queue']})" for t in data["tasks"]]
    return "\n".join(out)
