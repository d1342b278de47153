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
    """An event as older workers' scripts wrote it (layout 1: ten values per event)."""

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


class _Head(msgspec.Struct, array_like=True):
    """What the events of a layout 2 entry share (see ``emit`` in ``_common.lua``)."""

    layout: int
    queue: str
    worker: str
    at_ms: int | float


class _Wire2(msgspec.Struct, array_like=True):
    """One event of a layout 2 entry, after the entry's :class:`_Head`."""

    task_id: str
    name: str
    state: str
    attempt: int
    duration_ms: int | float
    error: str
    """'' for none, else the error's type, a newline and its message."""


#: Values per event in a stream entry (the fields of ``_Wire``, in order).
_FIELDS = len(_Wire.__struct_fields__)
#: The same in layout 2, and the values before its first event.
_FIELDS_2 = len(_Wire2.__struct_fields__)
_HEAD_2 = len(_Head.__struct_fields__)
_decoder = msgspec.msgpack.Decoder(list[Any])
_encoder = msgspec.msgpack.Encoder()


def decode_events(entry_id: str, data: bytes) -> list[Event]:
    """The events of one stream entry (a script writes all of its events as one
    entry); each gets the id ``<entry id>-<index>``. Layout 3 is text (see
    ``_layout_3``). Layouts 2 and 1 (older workers) are one msgpack array:
    layout 2 starts with the number 2, then the queue, worker and time its
    events share, then ``_FIELDS_2`` values per event; layout 1 is ``_FIELDS``
    values per event. An entry that can't be read (written by a
    newer aqueue, or damaged) gives none, so one bad entry never stops a reader."""
    try:
        if data[:2] == _LAYOUT_3:
            wires = _layout_3(data)
        elif (values := _decoder.decode(data)) and type(values[0]) is int:
            wires = _layout_2(values)
        else:
            wires = [
                msgspec.convert(values[i : i + _FIELDS], _Wire)
                for i in range(0, len(values) - _FIELDS + 1, _FIELDS)
            ]
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError):
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


def _layout_2(values: list[Any]) -> list[_Wire]:
    head = msgspec.convert(values[:_HEAD_2], _Head)
    if head.layout != 2:
        raise TypeError(f"event layout {head.layout} is not known here")
    wires = []
    for i in range(_HEAD_2, len(values) - _FIELDS_2 + 1, _FIELDS_2):
        ev = msgspec.convert(values[i : i + _FIELDS_2], _Wire2)
        error_type, _, error_message = ev.error.partition("\n")
        wires.append(
            _Wire(
                head.queue,
                ev.task_id,
                ev.name,
                ev.state,
                ev.attempt,
                head.worker,
                head.at_ms,
                ev.duration_ms,
                error_type,
                error_message,
            )
        )
    return wires


#: Layout 3 starts with these bytes; its values are joined by _SEPARATOR, a
#: byte that never occurs in UTF-8 text.
_LAYOUT_3 = b"3\xff"
_SEPARATOR = b"\xff"


def _layout_3(data: bytes) -> list[_Wire]:
    """Layout 3 (``emit`` in ``_common.lua``): text, ``3``, queue, worker and
    time, then ``_FIELDS_2`` values per event as in layout 2."""
    values = [value.decode() for value in data.split(_SEPARATOR)]
    if (len(values) - _HEAD_2) % _FIELDS_2:
        raise ValueError("a layout 3 entry of the wrong length")
    queue, worker, at_ms = values[1], values[2], _number(values[3])
    wires = []
    for i in range(_HEAD_2, len(values), _FIELDS_2):
        task_id, name, state, attempt, duration, error = values[i : i + _FIELDS_2]
        error_type, _, error_message = error.partition("\n")
        wires.append(
            _Wire(
                queue,
                task_id,
                name,
                state,
                int(attempt),
                worker,
                at_ms,
                _number(duration),
                error_type,
                error_message,
            )
        )
    return wires


def _number(text: str) -> int | float:
    """A number as Lua wrote it: whole numbers as digits, others as ``%.14g``."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


def encode_worker_event(queue: str, worker: str, state: str, now_ms: int) -> bytes:
    """A worker's own event (online / offline), in the scripts' format (layout 2)."""
    return _encoder.encode([2, queue, worker, now_ms, "", "", state, 0, -1, ""])


def _at_ms(entry_id: str, at_ms: float) -> float:
    """The event's time; a worker's own events take their entry id's, which is
    Redis' clock too (the id's first part is the time the entry was added)."""
    if at_ms > 0:
        return at_ms
    head = entry_id.partition("-")[0]
    return float(head) if head.isdigit() else 0.0
