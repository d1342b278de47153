"""Running a job inside the App's middleware, and telling it how the job ended.

Only used when middleware is registered; without it the worker calls the
executor directly and no hook costs anything.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ..core.hooks import Hooks, JobInfo
from ..core.protocol import FinishItem, decode_error
from ..core.status import TaskStatus
from .executor import Job

__all__ = ["job_info", "run_hooked", "tell_outcome"]


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
    hooks: Hooks, info: JobInfo, job: Job, run: Callable[[Job], Awaitable[FinishItem]]
) -> FinishItem:
    """``run(job)`` wrapped by every ``execute`` hook."""
    started = time.monotonic()

    async def inner() -> FinishItem:
        item = await run(job)
        describe(info, item, job, time.monotonic() - started)
        return item

    if not hooks.has("execute"):
        return await inner()
    return await hooks.around("execute", info, inner)


async def tell_outcome(hooks: Hooks, info: JobInfo, item: FinishItem, job: Job) -> None:
    """The ``retry`` or ``outcome`` hooks, once the outcome is handed to the finisher."""
    if info.status is None:  # ended without running (aborted while it waited to begin)
        describe(info, item, job, None)
    await hooks.notify("retry" if item.state is TaskStatus.RETRYING else "outcome", info)
