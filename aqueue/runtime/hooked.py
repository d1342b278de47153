"""Running a job inside the App's middleware, and telling it how the job ended.

Only used when middleware is registered; without it the worker calls the
executor directly and no hook costs anything.

The messages aqueue sends by itself on the worker (a chain's next step, a
group's members inside a chain) go through the App's ``enqueue`` middleware
too, each packed again with the headers the middleware leaves on the job.
They are packed inside the finished step's own ``execute`` middleware, so
trace context set there (the step's span) is what the next step carries.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ..core.handoffs import (
    HANDOFF_DELAYED,
    HANDOFF_ENQUEUE,
    decode_delayed,
    decode_handoffs,
    encode_delayed,
    encode_handoffs,
)
from ..core.hooks import Hooks, JobInfo, hooked_message
from ..core.protocol import Codec, FinishItem, decode_error
from ..core.status import TaskStatus
from .executor import Job
from .workflow import follow_ups

__all__ = [
    "hooked_handoffs",
    "job_info",
    "run_hooked",
    "tell_aborted",
    "tell_outcome",
]


def job_info(job: Job) -> JobInfo:
    """What middleware sees of a job on the worker."""
    env = job.envelope
    return JobInfo(
        task_id=env.id,
        name=job.task.name,
        queue=job.delivery.queue,
        attempt=job.attempt,
        headers=dict(env.trace or {}),
        args=job.args,
        kwargs=job.kwargs,
    )


def describe(info: JobInfo, item: FinishItem, job: Job, duration: float | None) -> None:
    """Fill in how the run ended."""
    info.status = item.state
    info.duration = duration
    info.exception = job.exception
    info.error = decode_error(item.error) if item.error else None
    if item.state is TaskStatus.RETRYING:
        info.retry_delay = item.retry_delay_ms / 1000


async def run_hooked(
    hooks: Hooks,
    info: JobInfo,
    job: Job,
    run: Callable[[Job], Awaitable[FinishItem]],
    codec: Codec | None = None,
) -> FinishItem:
    """``run(job)`` wrapped by every ``execute`` hook.

    With ``codec`` and ``enqueue`` hooks, a workflow step's hand-offs are made
    here, inside its ``execute`` hooks, each next step's message packed again
    inside the ``enqueue`` hooks (so they see the step's context).
    """
    started = time.monotonic()
    env = job.envelope
    hand_on = (
        codec is not None
        and (env.then is not None or env.member is not None)
        and hooks.has("enqueue")
    )

    async def inner() -> FinishItem:
        item = await run(job)
        describe(info, item, job, time.monotonic() - started)
        if hand_on:
            assert codec is not None
            follow = follow_ups(env, item, codec, time.time())
            if follow:
                item.follow = await hooked_handoffs(hooks, follow, codec)
        return item

    if not hooks.has("execute"):
        return await inner()
    return await hooks.around("execute", info, inner)


async def tell_outcome(hooks: Hooks, info: JobInfo, item: FinishItem, job: Job) -> None:
    """The ``retry`` or ``outcome`` hooks, once the outcome is handed to the finisher."""
    if info.status is None:  # ended without running (aborted while it waited to begin)
        describe(info, item, job, None)
    await hooks.notify("retry" if item.state is TaskStatus.RETRYING else "outcome", info)


def tell_aborted(hooks: Hooks | None, item: FinishItem, job: Job) -> None:
    """The ``outcome`` hooks of a job recorded aborted outside its own run (read
    ahead and never begun, or still running after ignoring its cancellation),
    told from code that can't wait for them."""
    if hooks is None or not hooks.has("outcome"):
        return
    info = job_info(job)
    describe(info, item, job, None)
    hooks.notify_soon("outcome", info)


async def hooked_handoffs(hooks: Hooks, follow: bytes, codec: Codec) -> bytes:
    """Workflow hand-off rows with every message they send (a next step, with
    or without a delay) packed again inside the ``enqueue`` hooks."""
    rows = decode_handoffs(follow)
    changed = False
    for i, (queue, task_id, name, body, kind) in enumerate(rows):
        if kind == HANDOFF_ENQUEUE:
            packed = await hooked_message(hooks, queue, codec.unpack(body), codec)
            rows[i] = (queue, task_id, name, packed, kind)
            changed = True
        elif kind == HANDOFF_DELAYED:
            delay_ms, eta_ms, payload = decode_delayed(body)
            packed = await hooked_message(hooks, queue, codec.unpack(payload), codec)
            rows[i] = (queue, task_id, name, encode_delayed(delay_ms, eta_ms, packed), kind)
            changed = True
    return encode_handoffs(rows) if changed else follow
