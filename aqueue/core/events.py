"""Task and worker events: what the event stream carries, as typed data.

With the App option ``events=True`` every state change is written to a capped
Redis stream by the very script that makes the change, so an event exists
exactly when its change happened. Workers add ``worker_online`` and
``worker_offline``. :meth:`aqueue.App.events` and ``aqueue events`` read them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = [
    "EVENT_STATES",
    "WORKER_OFFLINE",
    "WORKER_ONLINE",
    "Event",
    "decode_events",
    "encode_worker_event",
]

#: A worker joined (its first heartbeat) or left (after its hand-back).
WORKER_ONLINE = "worker_online"
WORKER_OFFLINE = "worker_offline"

#: Every value ``Event.state`` takes: the TaskStatus values a task moves
#: through, plus the moments that are not states.
EVENT_STATES = (
    "queued",
    "scheduled",
    "started",
    "progress",
    "retrying",
    "succeeded",
    "failed",
    "aborted",
    "expired",
    "dead",
    WORKER_ONLINE,
    WORKER_OFFLINE,
)


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One change, as read from the event stream.

    ``state`` is the :class:`~aqueue.TaskStatus` value the task entered
    (``queued``, ``scheduled``, ``retrying``, ``succeeded``, ``failed``,
    ``aborted``, ``expired``, ``dead``), or ``started`` (a run began; the
    record says ``running``), ``progress`` (``ctx.progress()``),
    ``worker_online`` / ``worker_offline`` (``task_id`` and ``name`` empty).
    """

    id: str
    """Where the event is in the stream: give it as ``since=`` to read on after it."""
    task_id: str
    name: str
    queue: str
    state: str
    attempt: int
    """Runs begun so far (0 before the first; ``started`` counts its own)."""
    worker: str
    """The worker that made the change ('' for producers and operators)."""
    at: datetime
    """When Redis made the change (Redis' clock, UTC, millisecond precision)."""
    duration: float | None = None
    """Seconds the run took, on events that end a run."""
    error_type: str | None = None
    error_message: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The event as JSON-ready builtins (``at`` as an ISO 8601 string)."""
        out: dict[str, object] = msgspec.to_builtins(self)
        return out


class _Wire(msgspec.Struct, array_like=True):
    """An event as the scripts write it (see ``emit`` in ``_common.lua``)."""

    queue: str
    task_id: str
    name: str
    state: str
    attempt: int
    worker: str
    at_ms: int | float
    duration_ms: int | float = -1
    error_type: str = ""
    error_message: str = ""


#: Values per event in a stream entry (the fields of ``_Wire``, in order).
_FIELDS = len(_Wire.__struct_fields__)
_decoder = msgspec.msgpack.Decoder(list[Any])
_encoder = msgspec.msgpack.Encoder()


def decode_events(entry_id: str, data: bytes) -> list[Event]:
    """The events of one stream entry (a script writes all of its events as one
    entry: one msgpack array, ``_FIELDS`` values per event); each gets the id
    ``<entry id>-<index>``. An entry that can't be read (written by a newer
    aqueue, or damaged) gives none, so one bad entry never stops a reader."""
    try:
        values = _decoder.decode(data)
        wires = [
            msgspec.convert(values[i : i + _FIELDS], _Wire)
            for i in range(0, len(values) - _FIELDS + 1, _FIELDS)
        ]
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
        return []
    return [
        Event(
            id=f"{entry_id}-{i}",
            task_id=wire.task_id,
            name=wire.name,
            queue=wire.queue,
            state=wire.state,
            attempt=wire.attempt,
            worker=wire.worker,
            at=datetime.fromtimestamp(_at_ms(entry_id, wire.at_ms) / 1000, tz=UTC),
            duration=None if wire.duration_ms < 0 else wire.duration_ms / 1000,
            error_type=wire.error_type or None,
            error_message=wire.error_message or None,
        )
        for i, wire in enumerate(wires)
    ]


def encode_worker_event(queue: str, worker: str, state: str, now_ms: int) -> bytes:
    """A worker's own event (online / offline), in the scripts' format."""
    return _encoder.encode([queue, "", "", state, 0, worker, now_ms, -1, "", ""])


def _at_ms(entry_id: str, at_ms: float) -> float:
    """The event's time; a worker's own events take their entry id's, which is
    Redis' clock too (the id's first part is the time the entry was added)."""
    if at_ms > 0:
        return at_ms
    head = entry_id.partition("-")[0]
    return float(head) if head.isdigit() else 0.0
