"""Commands on one task: ``status``, ``result``, ``abort``, ``enqueue``.

``status``, ``result`` and ``abort`` need only the task id and Redis
(``--url``, ``--prefix``); the queue is found among the App's queues, then
among those in Redis (only those when no App is given). ``enqueue`` needs
the App (task names and signatures live in code).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import msgspec

from ..core.errors import ResultTimeout, TaskFailed, did_you_mean
from ..core.status import TaskStatus
from ..result import AsyncResult
from .base import Target, add_app_option, add_redis_options, looks_like_app, target_from_args

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    for name, func, text in (
        ("status", status, "show one task's state"),
        ("abort", abort, "abort a queued, scheduled or running task"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        _task_arguments(p)
        p.set_defaults(func=func)

    r = sub.add_parser(
        "result",
        help="print a task's result as JSON (or its error)",
        description="Print a finished task's value as JSON, or its error on stderr. Exit "
        "status: 0 succeeded, 1 failed/aborted/expired/dead, 2 not finished (yet).",
    )
    _task_arguments(r)
    r.add_argument(
        "--wait", type=float, default=None, metavar="SECONDS", help="wait this long for it"
    )
    r.set_defaults(func=result)

    e = sub.add_parser(
        "enqueue",
        help="enqueue a registered task by name",
        description="Enqueue TASK_NAME with JSON arguments and print the task id "
        "(and, with --wait, the result).",
    )
    e.add_argument("names", nargs="+", metavar="[MODULE:APP] TASK_NAME")
    add_app_option(e, required=True)
    e.add_argument("--args", default="[]", help="JSON list of positional arguments")
    e.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    e.add_argument("--queue", help="send to this queue instead of the task's")
    e.add_argument("--delay", type=float, default=None, help="run no sooner than in SECONDS")
    e.add_argument("--task-id", default=None, help="use this task id")
    e.add_argument(
        "--wait", type=float, default=None, metavar="SECONDS", help="wait for the result"
    )
    add_redis_options(e)
    e.set_defaults(func=enqueue)


def _task_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="[MODULE:APP] ID", help="the task id")
    add_app_option(p)
    p.add_argument("--queue", help="the task's queue (default: search the queues)")
    add_redis_options(p)


def _split(names: list[str], most: int, last: str) -> tuple[str | None, str]:
    """``[MODULE:APP] NAME`` from positional words."""
    if len(names) == 1:
        return None, names[0]
    if len(names) == 2 and looks_like_app(names[0]):
        return names[0], names[1]
    raise SystemExit(f"error: expected [MODULE:APP] {last}, got {' '.join(names)!r}")


def _handle(args: argparse.Namespace) -> tuple[Target, str]:
    app_spec, task_id = _split(args.names, 2, "ID")
    return target_from_args(args, app_spec), task_id


async def _result(target: Target, task_id: str, queue: str | None) -> AsyncResult[Any]:
    if queue is None:
        views = target.app.client.views
        queue = await views.find_queue(task_id, await target.queues())
        if queue is None:
            # Written before there was a queue registry: look for its keys in Redis.
            queue = await views.find_queue(task_id, await views.discover_queues())
    return target.app.result(task_id, queue or target.app.settings.default_queue)


async def status(args: argparse.Namespace) -> int:
    """``aqueue status [MODULE:APP] ID``: the task's state and record."""
    target, task_id = _handle(args)
    async with target.app:
        info = await (await _result(target, task_id, args.queue)).info()
    print(f"{info.id}: {info.status.value}")
    for label, value in (
        ("task", info.name),
        ("queue", info.queue),
        ("attempt", info.attempt or None),
        ("worker", info.worker),
        ("error", info.error),
    ):
        if value:
            print(f"  {label}: {value}")
    return 0 if info.status is not TaskStatus.UNKNOWN else 1


async def abort(args: argparse.Namespace) -> int:
    """``aqueue abort [MODULE:APP] ID``: stop a waiting or running task."""
    target, task_id = _handle(args)
    async with target.app:
        handle = await _result(target, task_id, args.queue)
        before = await handle.status()
        changed = await handle.abort()
    if changed:
        print(f"{task_id}: abort requested (was {before.value})")
        return 0
    print(f"{task_id}: nothing to abort (status {before.value})")
    return 1


async def result(args: argparse.Namespace) -> int:
    """``aqueue result [MODULE:APP] ID [--wait S]``: the value as JSON, or the error."""
    target, task_id = _handle(args)
    async with target.app:
        return await _print_outcome(await _result(target, task_id, args.queue), args.wait)


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


async def enqueue(args: argparse.Namespace) -> int:
    """``aqueue enqueue [MODULE:APP] TASK_NAME --args JSON``: enqueue by name."""
    app_spec, task_name = _split(args.names, 2, "TASK_NAME")
    app = target_from_args(args, app_spec, required=True).app
    task = app.tasks.get(task_name)
    if task is None:
        hint = did_you_mean(task_name, app.tasks)
        print(f"error: no task named {task_name!r} in the app{hint}", file=sys.stderr)
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
