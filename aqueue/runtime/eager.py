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

The App's middleware runs as on a worker: each run inside the ``execute``
hooks, then the ``retry`` hooks (a run that will be repeated) or the
``outcome`` hooks (the last), in that order; a hook that raises is logged
and changes nothing. A message refused before it runs (expired, bad
arguments) reaches no hook, as on a worker.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from ..core.hooks import Hooks
from ..core.protocol import Delivery, FinishItem, OutgoingMessage
from ..core.records import Record
from ..core.status import TaskStatus
from ..task import Task
from .executor import Executor, Job
from .hooked import job_info, run_hooked, tell_outcome

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
            item = await _run(client.hooks, executor, prepared, attempt >= MAX_INLINE_ATTEMPTS)
            if item.state is not TaskStatus.RETRYING:
                break
            payload = item.payload
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


async def _run(hooks: Hooks, executor: Executor, job: Job, last: bool) -> FinishItem:
    """One run, inside the App's middleware when it has any. ``last``: the
    ``MAX_INLINE_ATTEMPTS``-th run, whose retry is cut: it ends failed, as no
    worker will take it up."""
    if not hooks.active:
        item = await executor.run(job)
        if last and item.state is TaskStatus.RETRYING:
            item.state = TaskStatus.FAILED
        return item
    info = job_info(job)
    item = await run_hooked(hooks, info, job, executor.run)
    if last and item.state is TaskStatus.RETRYING:
        item.state = info.status = TaskStatus.FAILED
        info.retry_delay = None
    await tell_outcome(hooks, info, item, job)
    return item
