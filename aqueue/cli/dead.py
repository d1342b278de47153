"""``aqueue dead list | replay | purge``: the dead-letter streams, from the command line.

Each works with only ``--url`` and ``--prefix`` (every queue found in Redis)
or with the App (its queues; its signing key to read signed messages)::

    aqueue dead list [-A tasks:app] [--queue Q] [--limit N] [--json]
    aqueue dead replay ID... | --all [--queue Q]
    aqueue dead purge [--queue Q] [--yes]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from ..deadletter import list_dead, purge_dead, replay_dead
from .base import add_target_arguments, looks_like_app, target_from_args

__all__ = ["add_parsers"]


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def list_command(args: argparse.Namespace) -> int:
    """``aqueue dead list``: dead-lettered messages, newest first, with the reason."""
    target = target_from_args(args, args.app)
    async with target.app:
        queues = await target.queues([args.queue] if args.queue else None)
        letters = await list_dead(target.app.client, queues, args.limit)
    if args.json:
        print(json.dumps([d.as_json() for d in letters], indent=2))
        return 0
    if not letters:
        print("no dead-lettered messages")
        return 0
    for d in letters:
        print(
            f"{d.entry_id}  {d.queue}  task {d.task_id or '-'} ({d.task_name or '?'})  "
            f"{d.reason}  attempts {d.attempts}  {_when(d.at)} UTC"
        )
        print(f"    {d.error}")
    print(f"{len(letters)} message(s); replay with `aqueue dead replay ID...`")
    return 0


async def replay_command(args: argparse.Namespace) -> int:
    """``aqueue dead replay ID... | --all``: put messages back into their queue."""
    ids = list(args.ids)
    app_spec = ids.pop(0) if ids and looks_like_app(ids[0]) else None
    if bool(ids) == bool(args.all):
        print(
            "error: give ids (dead-letter entry ids or task ids) or --all, not both",
            file=sys.stderr,
        )
        return 2
    target = target_from_args(args, app_spec)
    async with target.app:
        queues = await target.queues([args.queue] if args.queue else None)
        replayed = await replay_dead(target.app.client, queues, None if args.all else ids)
    for queue, entry in replayed:
        print(f"replayed {entry} ({queue})")
    missing = [] if args.all else sorted(set(ids) - {e for _, e in replayed})
    for entry in missing:
        print(f"not found: {entry}", file=sys.stderr)
    print(f"{len(replayed)} message(s) back in their queue")
    return 1 if missing else 0


async def purge_command(args: argparse.Namespace) -> int:
    """``aqueue dead purge``: delete dead-lettered messages (asks first)."""
    target = target_from_args(args, args.app)
    where = f"queue {args.queue!r}" if args.queue else "every queue"
    if not args.yes:
        if not sys.stdin.isatty():
            print("error: purging needs --yes when not run interactively", file=sys.stderr)
            return 2
        question = f"Delete every dead-lettered message of {where}? Type 'yes': "
        answer = await asyncio.to_thread(input, question)
        if answer.strip().lower() != "yes":
            print("nothing deleted")
            return 1
    async with target.app:
        queues = await target.queues([args.queue] if args.queue else None)
        n = await purge_dead(target.app.client, queues)
    print(f"deleted {n} dead-lettered message(s) of {where}")
    return 0


def add_parsers(sub: Any) -> None:
    dead = sub.add_parser(
        "dead",
        help="list, replay or purge dead-lettered messages",
        description="Messages that could not run (bad input, crashed workers, ...), kept "
        "with the reason and their original payload.",
    )
    commands = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, positional_app: bool = True) -> None:
        add_target_arguments(p, positional_app)
        p.add_argument("--queue", help="one queue (default: the app's, or all found)")

    ls = commands.add_parser("list", help="show dead-lettered messages, newest first")
    common(ls)
    ls.add_argument("--limit", type=int, default=100, help="per queue (default 100)")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=list_command)

    rp = commands.add_parser("replay", help="put messages back into their queue")
    common(rp, positional_app=False)
    rp.add_argument(
        "ids",
        nargs="*",
        metavar="[MODULE:APP] ID",
        help="dead-letter entry ids (from list), task ids, or the entry ids the worker logged",
    )
    rp.add_argument("--all", action="store_true", help="replay every dead-lettered message")
    rp.set_defaults(func=replay_command)

    pg = commands.add_parser("purge", help="delete dead-lettered messages")
    common(pg)
    pg.add_argument("--yes", action="store_true", help="don't ask for confirmation")
    pg.set_defaults(func=purge_command)
