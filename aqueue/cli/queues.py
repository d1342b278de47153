"""Commands on queues and workers: ``inspect``, ``check``, ``purge``.

All three work with only ``--url`` and ``--prefix``: without an App, the
queues are the ones found in Redis. ``purge`` removes work that is
*waiting* (stream entries no worker has read yet, delayed or retrying
tasks); running tasks keep their leases and finish (or are reclaimed) as
usual. Each purged task is recorded as aborted, so producers awaiting it get
:class:`~aqueue.TaskAborted` instead of waiting forever.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from .._redis.connection import REDIS_ERRORS
from ..client import Client
from ..core.errors import ConnectionFailed
from ..runtime.monitor import age, snapshot, unserved_queues
from .base import (
    add_app_option,
    add_redis_options,
    add_target_arguments,
    help_text,
    looks_like_app,
    split_queues,
    target_from_args,
)

__all__ = ["add_parsers", "purge_queue", "render"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="show queues, live workers, running and registered tasks",
        description="Show queue depths, live workers, running tasks and the app's tasks.",
    )
    add_target_arguments(p)
    p.add_argument("--queues", help="comma-separated queues (default: the app's, or all found)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=inspect_command)

    c = sub.add_parser(
        "check",
        help="exit 0 when Redis answers and a worker is alive for the queues",
        description="Health check for scripts and orchestrators: exit status 0 when Redis "
        "is reachable and every given queue has at least one live worker, 1 when a queue "
        "has none, 2 when Redis is unreachable, each with a one-line reason on stderr.",
    )
    add_target_arguments(c)
    c.add_argument("--queues", help="comma-separated queues (default: the app's, or all found)")
    c.set_defaults(func=check)

    g = sub.add_parser(
        "purge",
        help="remove a queue's waiting and delayed tasks",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("names", nargs="+", metavar="[MODULE:APP] QUEUE")
    add_app_option(g)
    g.add_argument("-y", "--yes", action="store_true", help="don't ask for confirmation")
    add_redis_options(g)
    g.set_defaults(func=purge)


async def inspect_command(args: argparse.Namespace) -> int:
    """``aqueue inspect``: queue depths, live workers, running and registered tasks."""
    target = target_from_args(args, args.app)
    async with target.app:
        queues = await target.queues(split_queues(args.queues))
        tasks = target.app.tasks.values()
        data = await snapshot(target.app.client, queues, tasks)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data))
    return 0


async def check(args: argparse.Namespace) -> int:
    """``aqueue check``: exit 0 healthy, 1 a queue has no live worker, 2 Redis unreachable."""
    target = target_from_args(args, args.app)
    wanted = split_queues(args.queues)
    try:
        async with target.app:
            queues = await target.served_queues(wanted)
            workers = await target.app.client.views.live_workers(queues)
            others = [] if wanted else [q for q in await target.queues() if q not in queues]
            stranded = await unserved_queues(target.app.client, others)
    except (ConnectionFailed, *REDIS_ERRORS) as exc:
        print(f"unhealthy: Redis unreachable: {exc}", file=sys.stderr)
        return 2
    for queue, waiting in stranded:
        print(
            f"warning: queue {queue!r} has {waiting} waiting task(s) and no live worker "
            f"(start one with: aqueue worker ... -q {queue})",
            file=sys.stderr,
        )
    served = {q for w in workers if not w.get("stopping") for q in w["queues"]}
    missing = [q for q in queues if q not in served]
    if missing:
        print(f"unhealthy: no live worker for queue(s) {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"ok: {len(workers)} worker(s) alive for {', '.join(queues)}")
    return 0


async def purge(args: argparse.Namespace) -> int:
    """``aqueue purge [MODULE:APP] QUEUE``: remove waiting and delayed work."""
    if len(args.names) == 2 and looks_like_app(args.names[0]):
        app_spec, queue = args.names
    elif len(args.names) == 1:
        app_spec, queue = None, args.names[0]
    else:
        print("error: expected [MODULE:APP] QUEUE", file=sys.stderr)
        return 2
    target = target_from_args(args, app_spec)
    async with target.app:
        client = target.app.client
        forgot_queue = app_spec is None and looks_like_app(queue)
        if forgot_queue and queue not in await client.views.discover_queues():
            print(
                f"error: {queue!r} looks like an App, not a queue: "
                "aqueue purge [-A MODULE:APP] QUEUE",
                file=sys.stderr,
            )
            return 2
        figures = await client.views.queue_figures(queue)
        if not args.yes:
            question = (
                f"Remove {figures['waiting']} waiting and {figures['delayed']} delayed task(s) "
                f"from queue {queue!r}? Running tasks are not touched. [y/N] "
            )
            try:
                answer = await asyncio.to_thread(input, question)
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing purged")
                return 1
        from_stream, from_delayed = await purge_queue(client, queue)
    print(
        f"purged {from_stream + from_delayed} task(s) from {queue!r} "
        f"({from_stream} waiting, {from_delayed} delayed); "
        f"{figures['pending']} running task(s) left to finish"
    )
    return 0


async def purge_queue(client: Client, queue: str) -> tuple[int, int]:
    """Remove ``queue``'s waiting and delayed tasks: (from the stream, delayed)."""
    return await client.purge(queue)


# -- the human-readable inspect ---------------------------------------------------


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
    clustered = any("slot" in q for q in data["queues"])
    extra = ["slot", "node"] if clustered else []
    out.append(
        _table(
            ["queue", "waiting", "running", "delayed", "dead", "lag", "oldest", *extra],
            [
                [
                    q["queue"],
                    str(q["waiting"]),
                    str(q["pending"]),
                    str(q["delayed"]),
                    str(q["dead"]),
                    str(q["lag"]),
                    age(q["oldest_waiting_age"]),
                    *([str(q.get("slot", "-")), str(q.get("node", "-"))] if clustered else []),
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
                        age(w["uptime"]),
                        age(w["heartbeat_age"]) + " ago",
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
                        age(now - r["started_at"]),
                        r["worker"],
                    ]
                    for r in data["running"]
                ],
            )
        )
    out += ["", f"TASKS ({len(data['tasks'])} registered)"]
    out += [f"  {t['name']}  (queue {t['queue']})" for t in data["tasks"]]
    return "\n".join(out)
