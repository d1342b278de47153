"""The dead-letter stream: messages that can't or won't run, kept with the reason.

A message lands there when it can't be decoded, names a task the worker does
not have, carries arguments that don't fit the signature or a bad signature,
crashed or stalled its workers ``max_deliveries`` times, or (with
``dead_letter_on_failure``) failed for good. Each entry keeps the original
payload, so it can be inspected and replayed once the cause is fixed::

    aqueue dead list [-A tasks:app] [--queue Q] [--limit N] [--json]
    aqueue dead replay ID... | --all [--queue Q]
    aqueue dead purge [--queue Q] [--yes]

The same operations are :meth:`App.dead_letters`, :meth:`App.replay_dead`
and :meth:`App.purge_dead`; the functions here take the App's Client and the
queues to look in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .client import Client
from .core.protocol import MessageError, decode_error

__all__ = ["DeadLetter", "list_dead", "purge_dead", "replay_dead"]

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


def _decode(client: Client, queue: str, entry_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
    payload = fields.get(b"m", b"")
    try:
        name: str | None = client.codec.unpack(payload).task
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


async def list_dead(client: Client, queues: Sequence[str], limit: int = 100) -> list[DeadLetter]:
    """Dead-lettered messages of each of ``queues``, newest first."""
    out: list[DeadLetter] = []
    for q in queues:
        entries = await client.views.dead_entries(q, limit)
        out.extend(_decode(client, q, entry_id, fields) for entry_id, fields in entries)
    return out


async def _dead_entries_named(client: Client, queue: str, names: Sequence[str]) -> dict[str, str]:
    """Each of ``names`` found in the queue's dead-letter stream -> its entry id there.

    A name is a dead-letter entry id (what ``dead list`` shows), a task id, or
    the stream entry id the worker logged when it dead-lettered the message.
    """
    wanted = set(names)
    found: dict[str, str] = {}
    before = "+"
    while len(found) < len(wanted):
        page = await client.views.dead_entries(queue, 1000, before)
        if not page:
            break
        for entry, fields in page:
            for name in (entry, fields.get(b"id", b""), fields.get(b"entry", b"")):
                text = name if isinstance(name, str) else name.decode("utf-8", "replace")
                if text in wanted and text not in found:
                    found[text] = entry
        before = "(" + page[-1][0]
    return {name: found[name] for name in names if name in found}


async def _all_entry_ids(client: Client, queue: str) -> list[str]:
    """Every entry id of the queue's dead-letter stream right now, oldest first."""
    ids: list[str] = []
    before = "+"
    while True:
        page = await client.views.dead_entries(queue, 1000, before)
        if not page:
            break
        ids.extend(entry for entry, _ in page)
        before = "(" + page[-1][0]
    ids.reverse()
    return ids


async def replay_dead(
    client: Client, queues: Sequence[str], entry_ids: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """Re-enqueue dead-lettered messages with their original payload.

    ``entry_ids`` None replays every entry there is when the call starts;
    ids are looked for in ``queues`` in order. Returns ``(queue, dead entry
    id)`` for each message replayed; ids that were not found are left out.
    """
    replayed: list[tuple[str, str]] = []
    wanted = None if entry_ids is None else list(dict.fromkeys(entry_ids))
    for q in queues:
        # What was asked for -> the dead-letter entry it names in this queue.
        asked = (
            {entry: entry for entry in await _all_entry_ids(client, q)}
            if wanted is None
            else await _dead_entries_named(client, q, wanted)
        )
        ids = list(asked.values())
        replayed_entries: set[str] = set()
        for start in range(0, len(ids), REPLAY_CHUNK):
            batch = ids[start : start + REPLAY_CHUNK]
            new = await client.broker.replay_dead(q, batch)
            replayed_entries.update(e for e, stream_id in zip(batch, new, strict=True) if stream_id)
        found = {name for name, entry in asked.items() if entry in replayed_entries}
        replayed.extend((q, name) for name in asked if name in found)
        if wanted is not None:
            # Ids not in this queue are looked for in the next one.
            wanted = [e for e in wanted if e not in found]
            if not wanted:
                break
    return replayed


async def purge_dead(client: Client, queues: Sequence[str]) -> int:
    """Delete the dead-lettered messages of ``queues``; returns how many there were."""
    total = 0
    for q in queues:
        total += await client.broker.purge_dead(q)
    return total
