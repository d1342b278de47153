"""Workflow hand-offs: what a finished step passes on, and failed chord members.

A worker that finishes a workflow step describes what comes next as rows
(:data:`Handoff`) that the finish script writes to the queue's outbox; a
forwarder applies them to the queues they belong to. A chord's callback gets
each failed member as a msgpack extension that :func:`ext_hook` turns into a
:class:`~aqueue.TaskFailed` on the worker.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import TaskAborted, TaskDead, TaskExpired, TaskFailed
from .protocol import decode_error
from .status import TaskStatus

__all__ = [
    "FAILED_MEMBER_EXT",
    "HANDOFF_ABORT",
    "HANDOFF_CHORD",
    "HANDOFF_DELAYED",
    "HANDOFF_ENQUEUE",
    "HANDOFF_FAIL",
    "Handoff",
    "decode_delayed",
    "decode_handoffs",
    "encode_delayed",
    "encode_handoffs",
    "encode_member_failure",
    "ext_hook",
]

_encoder = msgspec.msgpack.Encoder()
_any_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()

#: What a finished workflow step hands on: ``(queue, task id, task name, body, kind)``
#: per next step; kind ``HANDOFF_ENQUEUE`` (body: the step's message) or
#: ``HANDOFF_FAIL`` (body: the error the step fails with, never having run).
Handoff = tuple[str, str, str, bytes, int]
HANDOFF_ENQUEUE = 0
HANDOFF_FAIL = 1
#: A chord member's outcome: ``(callback queue, chord id, member index, outcome, 2)``,
#: the outcome ``b"s"`` + value or ``b"f"`` + :func:`encode_member_failure`.
HANDOFF_CHORD = 2

#: A chain step aborted before it was enqueued: ``(queue, task id, "", error, 3)``;
#: its record says aborted, so forwarding it later leaves it alone.
HANDOFF_ABORT = 3

#: A chain step with a delay or ETA: ``(queue, task id, task name, timing + message, 4)``;
#: it goes into the queue's delayed set when forwarded (see :func:`encode_delayed`).
HANDOFF_DELAYED = 4

#: msgpack extension code of a failed chord member passed to the callback.
FAILED_MEMBER_EXT = 17

_handoffs_decoder = msgspec.msgpack.Decoder(list[tuple[str, str, str, bytes, int]])


def encode_delayed(delay_ms: int, eta_ms: int, payload: bytes) -> bytes:
    """The body of a ``HANDOFF_DELAYED`` row: the delay counted from when it is
    forwarded, the ETA (epoch ms, 0: none), each 8 big-endian bytes, then the message."""
    return delay_ms.to_bytes(8, "big", signed=True) + eta_ms.to_bytes(8, "big") + payload


def decode_delayed(body: bytes) -> tuple[int, int, bytes]:
    """(delay ms, ETA epoch ms or 0, message) of a ``HANDOFF_DELAYED`` row's body."""
    delay_ms = int.from_bytes(body[:8], "big", signed=True)
    return delay_ms, int.from_bytes(body[8:16], "big"), body[16:]


def encode_handoffs(rows: list[Handoff]) -> bytes:
    return _encoder.encode(rows)


def decode_handoffs(data: bytes) -> list[Handoff]:
    return _handoffs_decoder.decode(data)


def encode_member_failure(task_id: str, state: str, error: bytes) -> bytes:
    """A failed chord member, as the callback will receive it (see :func:`ext_hook`)."""
    info = decode_error(error)
    return _encoder.encode((task_id, state, info.type, info.message, info.traceback))


def ext_hook(code: int, data: memoryview) -> Any:
    """Decodes msgpack extensions in task arguments: a failed chord member is a
    :class:`~aqueue.TaskFailed` (or the subclass of its state)."""
    if code != FAILED_MEMBER_EXT:
        return msgspec.msgpack.Ext(code, bytes(data))
    task_id, state, exc_type, message, traceback = _any_decoder.decode(data)
    failure = _MEMBER_FAILURES.get(state, TaskFailed)
    return failure(task_id, exc_type, message, traceback)


_MEMBER_FAILURES: dict[str, type[TaskFailed]] = {
    TaskStatus.ABORTED.value: TaskAborted,
    TaskStatus.EXPIRED.value: TaskExpired,
    TaskStatus.DEAD.value: TaskDead,
}
