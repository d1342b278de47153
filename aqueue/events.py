"""Reading the event stream: ``async for ev in app.events(...)``.

With ``events=True`` the scripts that change a task's state write an
:class:`~aqueue.core.events.Event` to a capped stream, one per app (on Redis
Cluster one per queue, under the queue's hash tag). A reader keeps its own
position, so any number of readers see every event, and a reader that stops
can go on later from the last event's ``id`` (``since=ev.id``) for as long as
the stream still holds it (``events_maxlen``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from ._redis.connection import REDIS_ERRORS
from ._redis.events import EventStream
from .client import Client
from .core.errors import ConfigError, ConnectionFailed
from .core.events import Event, decode_events
from .core.urls import mask_url

__all__ = ["Since", "read_events"]

#: Where to start: None (only new events), "0" (the oldest kept), an event id
#: (after that event) or a datetime (events from that time on).
Since = str | datetime | None

#: A blocking read waits this long at most, well inside the socket timeout.
BLOCK_MS = 1000
#: Events read per round trip.
BATCH = 500


async def read_events(
    client: Client,
    queues: Sequence[str],
    since: Since = None,
    follow: bool = True,
    only: Sequence[str] | None = None,
) -> AsyncIterator[Event]:
    """Events of ``queues`` in the order they were written (per stream).

    ``only`` keeps the queues to report (None: every queue the stream holds).
    With ``follow=False`` it stops at the newest event that existed when it began.
    """
    broker = client.broker
    if broker.cluster:
        if not queues:
            raise ConfigError(
                "on Redis Cluster each queue has its own event stream: name the queues"
            )
        streams = sorted({broker.events.key(q) for q in queues})
    else:
        streams = [broker.events.key("")]
    wanted = set(only) if only else None
    events = broker.events
    try:
        start, skip = _position(since)
        ends = {s: _id_key(await events.last_id(s)) for s in streams}
        if start == "$":
            positions = {s: f"{ends[s][0]}-{ends[s][1]}" for s in streams}
        else:
            positions = dict.fromkeys(streams, start)
    except REDIS_ERRORS as exc:
        raise _unreachable(client, exc) from exc
    if follow and len(streams) > 1:
        # Redis Cluster: one read can't block on streams of several slots (and
        # each queue's stream is in its queue's slot), so each stream gets a
        # blocking read of its own, all waiting at once.
        async for event in _follow_each(client, events, positions, skip, wanted):
            yield event
        return
    while True:
        if not follow:
            positions = {s: p for s, p in positions.items() if _id_key(p) < ends[s]}
            if not positions:
                return
        try:
            batch = await events.read(positions, BATCH, BLOCK_MS if follow else None)
        except REDIS_ERRORS as exc:
            raise _unreachable(client, exc) from exc
        if not batch:
            if not follow:
                return
            continue
        for stream, entry_id, data in batch:
            if stream in positions:
                positions[stream] = entry_id
            if not follow and _id_key(entry_id) > ends[stream]:
                continue
            for event in _events_of(entry_id, data, skip, wanted):
                yield event
        skip = None


async def _follow_each(
    client: Client,
    events: EventStream,
    positions: dict[str, str],
    skip: tuple[str, int] | None,
    wanted: set[str] | None,
) -> AsyncIterator[Event]:
    """Follow several streams with one blocking read each in flight, in each
    stream's order. While the caller handles a batch, the other reads go on
    waiting; a stream is read again once its batch has been handed out."""
    reads: dict[asyncio.Task[list[tuple[str, str, bytes]]], str] = {}
    first = set(positions)  # streams whose first entry may hold events up to ``since``

    def read(stream: str) -> None:
        block = events.read({stream: positions[stream]}, BATCH, BLOCK_MS)
        reads[asyncio.ensure_future(block)] = stream

    for stream in positions:
        read(stream)
    try:
        while True:
            done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=reads.__getitem__):
                stream = reads.pop(task)
                try:
                    batch = task.result()
                except REDIS_ERRORS as exc:
                    raise _unreachable(client, exc) from exc
                for _, entry_id, data in batch:
                    positions[stream] = entry_id
                    for event in _events_of(
                        entry_id, data, skip if stream in first else None, wanted
                    ):
                        yield event
                if batch:
                    first.discard(stream)
                read(stream)
    finally:
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)


def _events_of(
    entry_id: str, data: bytes, skip: tuple[str, int] | None, wanted: set[str] | None
) -> list[Event]:
    """An entry's events, less those up to ``since`` (read before) and other queues'."""
    return [
        event
        for event in decode_events(entry_id, data)
        if not (skip and _up_to(event.id, skip)) and (wanted is None or event.queue in wanted)
    ]


def _position(since: Since) -> tuple[str, tuple[str, int] | None]:
    """The stream id to read after, and (entry id, index) of events to skip in
    the first entry: an event's id is ``<entry id>-<index>`` and one entry holds
    the events of one script call."""
    if since is None:
        return "$", None
    if isinstance(since, datetime):
        # Entry ids start with the time they were added, in ms: the last id
        # of the millisecond before reads from that moment on.
        ms = int(since.timestamp() * 1000)
        return (f"{ms - 1}-{2**63 - 1}" if ms > 0 else "0-0"), None
    text = str(since).strip()
    if text in ("0", "0-0", "-"):
        return "0-0", None
    parts = text.split("-")
    if not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise ConfigError(
            f"since={since!r} is not an event id (like '1733050000000-0-0'), '0' or a datetime"
        )
    if len(parts) < 3:
        return f"{parts[0]}-{parts[1] if len(parts) > 1 else 0}", None
    ms, seq, index = (int(p) for p in parts)
    # Read its entry again (from just before it) and skip the events up to it.
    before = f"{ms}-{seq - 1}" if seq > 0 else f"{ms - 1}-{2**63 - 1}"
    return before, (f"{ms}-{seq}", index)


def _up_to(event_id: str, skip: tuple[str, int]) -> bool:
    entry, _, index = event_id.rpartition("-")
    return entry == skip[0] and int(index) <= skip[1]


def _id_key(entry_id: str) -> tuple[int, int]:
    head, _, tail = entry_id.partition("-")
    return int(head), int(tail or 0)


def _unreachable(client: Client, exc: BaseException) -> ConnectionFailed:
    return ConnectionFailed(
        f"could not read events from Redis at {mask_url(client.settings.redis_url)}: {exc}"
    )
