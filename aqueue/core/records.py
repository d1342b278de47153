"""A task's record (the hash under its id) read as a state, a snapshot, a value or an error.

The record holds ``state``, ``name``, ``attempt``, ``worker``, times in ms
(``enq``, ``started``, ``finished``, ``eta``), ``result`` or ``error`` and
``progress``; the Lua scripts write it, everything here only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from .errors import AqueueError, TaskAborted, TaskDead, TaskExpired, TaskFailed
from .protocol import ErrorInfo, decode_error
from .status import TaskStatus

__all__ = ["TaskInfo", "status_of", "value_of"]

Record = dict[bytes, bytes]

_any_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()
_FAILURES: dict[TaskStatus, type[TaskFailed]] = {
    TaskStatus.FAILED: TaskFailed,
    TaskStatus.ABORTED: TaskAborted,
    TaskStatus.EXPIRED: TaskExpired,
    TaskStatus.DEAD: TaskDead,
}


def status_of(rec: Record) -> TaskStatus:
    """The record's state; UNKNOWN when there is no record or the state is not known."""
    raw = rec.get(b"state")
    if raw is None:
        return TaskStatus.UNKNOWN
    try:
        return TaskStatus(raw.decode())
    except ValueError:
        return TaskStatus.UNKNOWN


def value_of(task_id: str, rec: Record, decoder: msgspec.msgpack.Decoder[Any] | None = None) -> Any:
    """The value of a succeeded task, or raise the failure its record describes.

    ``decoder`` types the value (the task's return annotation); without one
    it comes back as msgpack decodes it.
    """
    status = status_of(rec)
    if status is TaskStatus.SUCCEEDED:
        raw = rec.get(b"result", b"")
        try:
            return (decoder or _any_decoder).decode(raw) if raw else None
        except msgspec.ValidationError as exc:
            raise AqueueError(
                f"task {task_id} returned a value that doesn't match its annotation: {exc}"
            ) from exc
    info = decode_error(rec.get(b"error", b""))
    if status is TaskStatus.DEAD and not rec.get(b"error"):
        info = ErrorInfo("DeadLetter", "moved to the dead-letter stream")
    failure = _FAILURES.get(status, TaskFailed)
    raise failure(task_id, info.type, info.message, info.traceback)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A snapshot of a task's record."""

    id: str
    queue: str | None
    status: TaskStatus
    name: str | None = None
    attempt: int = 0
    worker: str | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    eta: float | None = None
    error: str | None = None

    @classmethod
    def from_record(cls, task_id: str, queue: str | None, rec: Record) -> TaskInfo:
        if not rec:
            return cls(task_id, queue, TaskStatus.UNKNOWN)

        def ms(field: bytes) -> float | None:
            raw = rec.get(field)
            return int(raw) / 1000 if raw else None

        error = None
        if rec.get(b"error"):
            info = decode_error(rec[b"error"])
            error = f"{info.type}: {info.message}"
        return cls(
            id=task_id,
            queue=queue,
            status=status_of(rec),
            name=rec[b"name"].decode() if b"name" in rec else None,
            attempt=int(rec.get(b"attempt", 0)),
            worker=rec[b"worker"].decode() if b"worker" in rec else None,
            enqueued_at=ms(b"enq"),
            started_at=ms(b"started"),
            finished_at=ms(b"finished"),
            eta=ms(b"eta"),
            error=error,
        )
