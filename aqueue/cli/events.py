"""``aqueue events``: the event stream, from the command line.

Works with only ``--url`` and ``--prefix``, or with the App::

    aqueue events [MODULE:APP] [--queue Q[,Q...]] [--since ID|0] [--follow] [--json]

Without ``--follow`` it prints the events the stream still holds and exits;
with it, it prints events as they happen until interrupted. ``--json`` prints
one JSON object per line (``jq``-friendly); otherwise one readable line each.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from ..core.events import Event
from ..events import read_events
from .base import add_target_arguments, split_queues, target_from_args

__all__ = ["add_parsers", "format_event"]

_json = msgspec.json.Encoder()


def format_event(ev: Event) -> str:
    """One readable line: time, queue, state, task, attempt, worker, duration, error."""
    when = ev.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    what = f"{ev.name}[{ev.task_id}] attempt {ev.attempt}" if ev.task_id else "-"
    parts = [when, ev.queue, f"{ev.state:<14}", what]
    if ev.worker:
        parts.append(f"worker {ev.worker}")
    if ev.duration is not None:
        parts.append(f"{ev.duration * 1000:.1f} ms")
    if ev.error_type:
        parts.append(f"{ev.error_type}: {ev.error_message or ''}")
    return "  ".join(parts)


async def events_command(args: argparse.Namespace) -> int:
    """``aqueue events``: print events (``--follow``: as they happen)."""
    target = target_from_args(args, args.app)
    wanted = split_queues(args.queue)
    since: str | None = args.since
    if since is None and not args.follow:
        since = "0"
    async with target.app:
        app = target.app
        queues = await target.queues(wanted) if app.broker.cluster or wanted else []
        async for ev in read_events(app.client, queues, since, args.follow, only=wanted):
            if args.json:
                sys.stdout.buffer.write(_json.encode(ev) + b"\n")
            else:
                sys.stdout.write(format_event(ev) + "\n")
            if args.follow:
                sys.stdout.flush()
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "events",
        help="print task and worker events (needs events=True / AQUEUE_EVENTS=1)",
        description="Task and worker events from the event stream, oldest first. The apps "
        "that enqueue and the workers must run with events=True (AQUEUE_EVENTS=1).",
    )
    add_target_arguments(p)
    p.add_argument("--queue", help="only these queues (comma-separated)")
    p.add_argument(
        "--since",
        help="start after this event id ('0': the oldest kept; default: all kept, or with "
        "--follow only new events)",
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=events_command)
