"""Eager mode's runner: one message run here and now by the worker's own Executor.

Inside ``app.eager()`` a task's ``enqueue()`` hands its message to
:func:`run_inline` instead of Redis (the package facade installs it, so the
client side never imports the runtime). The message goes through
:meth:`Executor.prepare` and :meth:`Executor.run` exactly as on a worker:
arguments decoded with the annotations, expiry, the Context, the timeout,
retries (run again at once: eager mode does not wait out retry delays) and
the typed result. A delayed message (delay, ETA) runs at once too, with its
expiry judged at its ETA; a streaming task's chunks are its held value.
What comes back is the record a worker would have written.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from ..core.protocol import Delivery, FinishItem, OutgoingMessage
from ..core.records import Record
from ..core.status import TaskStatus
from ..task import Task
from .executor import Executor

__all__ = ["run_inline"]

#: Retries that would never end are cut here (``Retry`` raised for ever).
MAX_INLINE_ATTEMPTS = 1000


async def run_inline(task: Task[Any, Any], queue: str, message: OutgoingMessage) -> Record:
    """Run ``message`` of ``task`` to its final outcome; the record a worker would write."""
    client = task.client
    enqueued_ms = int(client.clock() * 1000)
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="aqueue-eager"
    ) as threads:
        executor = Executor({task.name: task}, client.codec, client.settings, threads)
        payload = message.payload
        attempt = 0
        while True:
            attempt += 1
            delivery = Delivery(queue, "eager", message.task_id, payload, attempt=attempt)
            # A delayed message runs now, but its expiry is judged at its ETA,
            # as a worker would judge it then.
            prepared = executor.prepare(delivery, client.clock() + message.delay_ms / 1000)
            if isinstance(prepared, FinishItem):
                item = prepared
                break
            item = await executor.run(prepared)
            if item.state is not TaskStatus.RETRYING or attempt >= MAX_INLINE_ATTEMPTS:
                break
            payload = item.payload
    if item.state is TaskStatus.RETRYING:
        item.state = TaskStatus.FAILED  # the cut above: no worker will take it up
    record: Record = {
        b"state": item.state.value.encode(),
        b"name": task.name.encode(),
        b"attempt": str(attempt).encode(),
        b"enq": str(enqueued_ms).encode(),
        b"finished": str(int(client.clock() * 1000)).encode(),
        b"worker": b"eager",
    }
    if item.result:
        record[b"result"] = item.result
    if item.error:
        record[b"error"] = item.error
    return record
