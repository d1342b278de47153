"""The dead-letter stream: messages that can't or won't run, kept with the reason.

A message lands there when it can't be decoded, names a task the worker does
not have, carries arguments that don't fit the signature or a bad signature,
crashed or stalled its workers ``max_deliveries`` times, or (with
``dead_letter_on_failure``) failed for good. Each entry keeps the original
payload, so it can be inspected and replayed once the cause is fixed::

    aqueue dead list tasks:app [--queue Q] [--limit N] [--json]
    aqueue dead replay tasks:app ID... | --all [--queue Q]
    aqueue dead purge tasks:app [--queue Q] [--yes]

The same operations are :meth:`App.dead_letters`, :meth:`App.replay_dead`
and :meth:`App.purge_dead`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .envelope import MessageError, decode_envelope, decode_error, verify

if TYPE_CHECKING:
    from .app import App

__all__ = ["DeadLetter", "add_parser", "list_dead", "purge_dead", "replay_dead"]

#: How many entries one replay script call moves.
REPLAY_CHUNK = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a queue's dead-letter stream."""

    queue: str
    entry_id: str
    """Id of the entry in the dead-letter stream (what replay takes)."""
    task_id: str
    task_name: str | None
    """The task the message names, when it can be decoded."""
    reason: str
    """Machine-readable: undecodable, unknown_task, bad_arguments, bad_signature,
    unsupported_version, max_deliveries, failed, ..."""
    error: str
    """Human-readable details (type: message)."""
    at: float | None
    """When it was dead-lettered (epoch seconds)."""
    attempts: int
    payload_bytes: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _decode(app: App, queue: str, entry_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
    payload = fields.get(b"m", b"")
    try:
        name: str | None = decode_envelope(verify(payload, app._signing_key)).task
    except MessageError:
        name = None
    info = decode_error(fields.get(b"error", b""))
    error = f"{info.type}: {info.message}" if info.message else info.type
    at_ms = fields.get(b"at")
    try:
        attempts = int(fields.get(b"attempt", b"0") or 0)
    except ValueError:
        attempts = 0
    return DeadLetter(
        queue=queue,
        entry_id=entry_id,
        task_id=fields.get(b"id", b"").decode("utf-8", "replace"),
        task_name=name,
        reason=fields.get(b"reason", b"").decode("utf-8", "replace"),
        error=error,
        at=int(at_ms) / 1000 if at_ms else None,
        attempts=attempts,
        payload_bytes=len(payload),
    )


async def list_dead(app: App, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """Dead-lettered messages, newest first: of ``queue``, or of each of the app's queues."""
    out: list[DeadLetter] = []
    for q in [queue] if queue else app.queues:
        entries = await app.broker.dead_entries(q, limit)
        out.extend(_decode(app, q, entry_id, fields) for entry_id, fields in entries)
    return out


async def _all_entry_ids(app: App, queue: str) -> list[str]:
    """Every entry id of the queue's dead-letter stream right now, oldest first."""
    ids: list[str] = []
    before = "+"
    while True:
        page = await app.broker.dead_entries(queue, 1000, before)
        if not page:
            break
        ids.extend(entry for entry, _ in page)
        before = "(" + page[-1][0]
    ids.reverse()
    return ids


async def replay_dead(
    app: App, entry_ids: Sequence[str] | None = None, queue: str | None = None
) -> list[tuple[str, str]]:
    """Re-enqueue dead-lettered messages with their original payload.

    ``entry_ids`` None replays every entry there is when the call starts.
    Without ``queue`` the app's queues are searched. Returns ``(queue, dead
    entry id)`` for each message replayed; ids that were not found are left out.
    """
    replayed: list[tuple[str, str]] = []
    wanted = None if entry_ids is None else list(dict.fromkeys(entry_ids))
    for q in [queue] if queue else app.queues:
        ids = await _all_entry_ids(app, q) if wanted is None else wanted
        found: set[str] = set()
        for start in range(0, len(ids), REPLAY_CHUNK):
            batch = ids[start : start + REPLAY_CHUNK]
            new = await app.broker.replay_dead(q, batch)
            for entry, stream_id in zip(batch, new, strict=True):
                if stream_id:
                    found.add(entry)
                    replayed.append((q, entry))
        if wanted is not None:
            # Ids not in this queue are looked for in the next one.
            wanted = [e for e in wanted if e not in found]
            if not wanted:
                break
    return replayed


async def purge_dead(app: App, queue: str | None = None) -> int:
    """Delete dead-lettered messages of ``queue`` (or of every app queue); returns the count."""
    total = 0
    for q in [queue] if queue else app.queues:
        total += await app.broker.purge_dead(q)
    return total


# -- CLI ---------------------------------------------------------------------------


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def cmd_list(args: argparse.Namespace) -> int:
    from .cli import app_from_args

    app = app_from_args(args)
    async with app:
        letters = await list_dead(app, args.queue, args.limit)
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
    print(f"{len(letters)} message(s); replay with `aqueue dead replay {args.app} ID...`")
    return 0


async def cmd_replay(args: argparse.Namespace) -> int:
    from .cli import app_from_args

    if bool(args.ids) == bool(args.all):
        print("error: give dead-letter entry ids or --all (not both)", file=sys.stderr)
        return 2
    app = app_from_args(args)
    async with app:
        replayed = await replay_dead(app, None if args.all else args.ids, args.queue)
    for queue, entry in replayed:
        print(f"replayed {entry} ({queue})")
    missing = [] if args.all else sorted(set(args.ids) - {e for _, e in replayed})
    for entry in missing:
        print(f"not found: {entry}", file=sys.stderr)
    print(f"{len(replayed)} message(s) back in their queue")
    return 1 if missing else 0


async def cmd_purge(args: argparse.Namespace) -> int:
    from .cli import app_from_args

    app = app_from_args(args)
    where = f"queue {args.queue!r}" if args.queue else "every queue of the app"
    if not args.yes:
        if not sys.stdin.isatty():
            print("error: purging needs --yes when not run interactively", file=sys.stderr)
            return 2
        question = f"Delete every dead-lettered message of {where}? Type 'yes': "
        answer = await asyncio.to_thread(input, question)
        if answer.strip().lower() != "yes":
            print("nothing deleted")
            return 1
    async with app:
        n = await purge_dead(app, args.queue)
    print(f"deleted {n} dead-lettered message(s) of {where}")
    return 0


def add_parser(sub: Any) -> None:
    dead = sub.add_parser(
        "dead",
        help="list, replay or purge dead-lettered messages",
        description="Messages that could not run (bad input, crashed workers, ...), kept "
        "with the reason and their original payload.",
    )
    commands = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("app", metavar="MODULE:APP")
        p.add_argument("--queue", help="one queue (default: every queue of the app)")
        p.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")

    ls = commands.add_parser("list", help="show dead-lettered messages, newest first")
    common(ls)
    ls.add_argument("--limit", type=int, default=100, help="per queue (default 100)")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=cmd_list)

    rp = commands.add_parser("replay", help="put messages back into their queue")
    common(rp)
    rp.add_argument("ids", nargs="*", metavar="ID", help="dead-letter entry ids (from list)")
    rp.add_argument("--all", action="store_true", help="replay every dead-lettered message")
    rp.set_defaults(func=cmd_replay)

    pg = commands.add_parser("purge", help="delete dead-lettered messages")
    common(pg)
    pg.add_argument("--yes", action="store_true", help="don't ask for confirmation")
    pg.set_defaults(func=cmd_purge)
