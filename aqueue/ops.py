"""Operator commands on tasks and queues: ``result``, ``enqueue`` and ``purge``.

``purge`` removes work that is *waiting*: stream entries no worker has read
yet and delayed or retrying tasks. Tasks that are running keep their leases
and finish (or are reclaimed) as usual; cancelling them is what ``aqueue
abort`` is for. Each purged task is recorded as aborted, so producers
awaiting it get :class:`~aqueue.TaskAborted` instead of waiting forever.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import sys
from typing import Any

import msgspec

from .envelope import ErrorInfo, encode_error
from .errors import ResultTimeout, TaskFailed

__all__ = ["add_parser", "purge_queue"]


def add_parser(sub: Any) -> None:
    r = sub.add_parser(
        "result",
        help="print a task's result as JSON (or its error)",
        description="Print a finished task's value as JSON, or its error on stderr. Exit "
        "status: 0 succeeded, 1 failed/aborted/expired/dead, 2 not finished (yet).",
    )
    r.add_argument("app", metavar="MODULE:APP")
    r.add_argument("id", help="task id")
    r.add_argument(
        "--wait", type=float, default=None, metavar="SECONDS", help="wait this long for it"
    )
    r.add_argument("--queue", help="the task's queue (default: search the app's queues)")
    r.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    r.set_defaults(func=cmd_result)

    e = sub.add_parser(
        "enqueue",
        help="enqueue a registered task by name",
        description="Enqueue TASK_NAME with JSON arguments and print the task id "
        "(and, with --wait, the result).",
    )
    e.add_argument("app", metavar="MODULE:APP")
    e.add_argument("task", metavar="TASK_NAME", help="registered task name")
    e.add_argument("--args", default="[]", help="JSON list of positional arguments")
    e.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    e.add_argument("--queue", help="send to this queue instead of the task's")
    e.add_argument("--delay", type=float, default=None, help="run no sooner than in SECONDS")
    e.add_argument("--task-id", default=None, help="use this task id")
    e.add_argument(
        "--wait", type=float, default=None, metavar="SECONDS", help="wait for the result"
    )
    e.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    e.set_defaults(func=cmd_enqueue)

    p = sub.add_parser(
        "purge",
        help="remove a queue's waiting and delayed tasks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("-y", "--yes", action="store_true", help="don't ask for confirmation")
    p.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    p.set_defaults(func=cmd_purge)


def _json(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return json.dumps(repr(value))


async def _print_outcome(handle: Any, wait: float | None) -> int:
    try:
        if wait is None:
            info = await handle.info()
            if not info.status.is_final:
                print(f"{handle.id}: {info.status.value} (not finished)", file=sys.stderr)
                return 2
            value = await handle.get(timeout=0.001)
        else:
            value = await handle.get(timeout=wait)
    except ResultTimeout:
        status = await handle.status()
        print(f"{handle.id}: {status.value} (not finished)", file=sys.stderr)
        return 2
    except TaskFailed as exc:
        print(f"{handle.id}: {exc}", file=sys.stderr)
        if exc.traceback:
            print(exc.traceback.rstrip(), file=sys.stderr)
        return 1
    print(_json(value))
    return 0


async def cmd_result(args: argparse.Namespace) -> int:
    from .cli import app_from_args

    app = app_from_args(args)
    async with app:
        return await _print_outcome(app.result(args.id, args.queue), args.wait)


async def cmd_enqueue(args: argparse.Namespace) -> int:
    from .cli import app_from_args

    app = app_from_args(args)
    task = app.tasks.get(args.task)
    if task is None:
        close = difflib.get_close_matches(args.task, list(app.tasks), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"error: no task named {args.task!r} in {args.app}{hint}", file=sys.stderr)
        return 1
    try:
        call_args = json.loads(args.args)
        call_kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        print(f"error: --args/--kwargs must be JSON: {exc}", file=sys.stderr)
        return 1
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        print("error: --args must be a JSON list and --kwargs a JSON object", file=sys.stderr)
        return 1
    options: dict[str, Any] = {}
    if args.queue:
        options["queue"] = args.queue
    if args.delay:
        options["delay"] = args.delay
    if args.task_id:
        options["task_id"] = args.task_id
    async with app:
        handle = await task.options(**options).enqueue(*call_args, **call_kwargs)
        print(handle.id)
        if args.wait is None:
            return 0
        return await _print_outcome(handle, args.wait)


async def purge_queue(app: Any, queue: str) -> tuple[int, int]:
    """Remove ``queue``'s waiting and delayed tasks: (from the stream, delayed)."""
    error = encode_error(ErrorInfo("TaskAborted", "purged from the queue"))
    total_stream = total_delayed = 0
    while True:
        from_stream, from_delayed = await app.broker.purge(queue, error)
        total_stream += from_stream
        total_delayed += from_delayed
        if not from_stream and not from_delayed:
            return total_stream, total_delayed


async def cmd_purge(args: argparse.Namespace) -> int:
    from .cli import app_from_args
    from .inspect import queue_figures

    app = app_from_args(args)
    async with app:
        figures = await queue_figures(app, args.queue)
        if not args.yes:
            question = (
                f"Remove {figures['waiting']} waiting and {figures['delayed']} delayed task(s) "
                f"from queue {args.queue!r}? Running tasks are not touched. [y/N] "
            )
            try:
                answer = await asyncio.to_thread(input, question)
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing purged")
                return 1
        from_stream, from_delayed = await purge_queue(app, args.queue)
    print(
        f"purged {from_stream + from_delayed} task(s) from {args.queue!r} "
        f"({from_stream} waiting, {from_delayed} delayed); "
        f"{figures['pending']} running task(s) left to finish"
    )
    return 0
