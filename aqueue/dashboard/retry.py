"""The dashboard's "run this failed task again": its kept message, back in its queue.

A task that failed for good keeps its message in its record (until the
record expires). Running it again enqueues that message under the same task
id, so links and handles stay valid, with its retries and expiry reset (an
operator asking for a run means now, with the task's full retry budget) and
a fresh enqueue time. Anything else (a task still live, a record without a
message, an unreadable message) is refused with a sentence saying why.
"""

from __future__ import annotations

import msgspec

from ..client import Client
from ..core.protocol import MessageError, OutgoingMessage, encode_envelope
from ..core.status import TaskStatus

__all__ = ["run_again"]


async def run_again(client: Client, queue: str, task_id: str) -> str:
    """Enqueue a failed task's message again; a notice saying what happened."""
    broker = client.broker
    rec = await broker.record(queue, task_id)
    state = rec.get(b"state", b"").decode()
    if state != TaskStatus.FAILED.value:
        return f"task {task_id} is {state or 'unknown'}: only a failed task can be run again"
    kept = rec.get(b"msg")
    if not kept:
        return f"task {task_id} failed before aqueue kept failed messages: nothing to run again"
    try:
        envelope = client.codec.unpack(kept)
    except MessageError as exc:
        return f"task {task_id}'s message can't be read ({exc}): not run again"
    again = msgspec.structs.replace(envelope, retries=0, expires=None, enqueued_at=client.clock())
    payload = client.codec.seal(encode_envelope(again))
    await broker.enqueue(queue, OutgoingMessage(task_id, envelope.task, payload, fresh=True))
    return f"task {task_id} is back in queue {queue}"
