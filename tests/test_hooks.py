"""Middleware: around enqueue and execution, retries, outcomes, worker start/stop,
with a real worker; a hook that raises or forgets call_next never loses a task."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from typing import Any

import pytest

import aqueue
from aqueue import JobInfo, Middleware, TaskStatus, WorkerInfo
from aqueue.core.hooks import CallNext

from .conftest import running_worker

correlation: contextvars.ContextVar[str] = contextvars.ContextVar("correlation", default="-")


class Recorder(Middleware):
    """Writes down every hook call, and carries a correlation id to the worker."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def enqueue(self, job: JobInfo, call_next: CallNext) -> None:
        job.headers["correlation"] = correlation.get()
        self.calls.append(("enqueue:before", job.name, job.task_id))
        await call_next()
        self.calls.append(("enqueue:after", job.task_id))

    async def execute(self, job: JobInfo, call_next: CallNext) -> None:
        token = correlation.set(job.headers.get("correlation", "-"))
        try:
            self.calls.append(("execute:before", job.task_id, job.attempt))
            await call_next()
            self.calls.append(("execute:after", job.task_id, job.status))
        finally:
            correlation.reset(token)

    async def retry(self, job: JobInfo) -> None:
        assert job.error is not None
        self.calls.append(("retry", job.task_id, job.attempt, job.error.type, job.retry_delay))

    async def outcome(self, job: JobInfo) -> None:
        self.calls.append(("outcome", job.task_id, job.attempt, job.status))

    async def worker_start(self, worker: WorkerInfo) -> None:
        self.calls.append(("worker_start", worker.name, worker.queues))

    async def worker_stop(self, worker: WorkerInfo) -> None:
        self.calls.append(("worker_stop", worker.name))


async def test_every_hook_with_a_real_worker(app: aqueue.App) -> None:
    recorder = app.middleware(Recorder())
    seen: list[str] = []

    @app.task(retries=1, retry_delay=0.05, retry_jitter=False)
    async def flaky(ctx: aqueue.Context) -> int:
        seen.append(correlation.get())  # set by the execute hook, from the producer's header
        if ctx.attempt == 1:
            raise ConnectionError("once")
        return ctx.attempt

    token = correlation.set("req-42")
    try:
        handle = await flaky.enqueue()
    finally:
        correlation.reset(token)
    async with running_worker(app, queues=["default"]) as worker:
        assert await handle.get(timeout=10) == 2
        name = worker.name
    tid = handle.id
    assert seen == ["req-42", "req-42"]
    assert recorder.calls == [
        ("enqueue:before", flaky.name, ""),
        ("enqueue:after", tid),
        ("worker_start", name, ("default",)),
        ("execute:before", tid, 1),
        ("execute:after", tid, TaskStatus.RETRYING),
        ("retry", tid, 1, "ConnectionError", 0.05),
        ("execute:before", tid, 2),
        ("execute:after", tid, TaskStatus.SUCCEEDED),
        ("outcome", tid, 2, TaskStatus.SUCCEEDED),
        ("worker_stop", name),
    ]


async def test_failure_reaches_outcome_with_the_exception(app: aqueue.App) -> None:
    outcomes: list[JobInfo] = []

    class Tracker(Middleware):
        async def execute(self, job: JobInfo, call_next: CallNext) -> None:
            await call_next()

        async def outcome(self, job: JobInfo) -> None:
            outcomes.append(job)

    app.middleware(Tracker())

    @app.task
    async def broken() -> None:
        raise ValueError("bad value")

    async with running_worker(app):
        handle = await broken.enqueue()
        with pytest.raises(aqueue.TaskFailed):
            await handle.get(timeout=10)
    [job] = outcomes
    assert job.status is TaskStatus.FAILED
    assert isinstance(job.exception, ValueError) and str(job.exception) == "bad value"
    assert job.error is not None and job.error.type == "ValueError"
    assert job.duration is not None and job.duration >= 0


class Broken(Middleware):
    """Raises in every hook, before and after call_next."""

    def __init__(self, after: bool) -> None:
        self.after = after

    async def enqueue(self, job: JobInfo, call_next: CallNext) -> None:
        if self.after:
            await call_next()
        raise RuntimeError("enqueue hook broke")

    async def execute(self, job: JobInfo, call_next: CallNext) -> None:
        if self.after:
            await call_next()
        raise RuntimeError("execute hook broke")

    async def outcome(self, job: JobInfo) -> None:
        raise RuntimeError("outcome hook broke")

    async def worker_start(self, worker: WorkerInfo) -> None:
        raise RuntimeError("worker_start hook broke")

    async def worker_stop(self, worker: WorkerInfo) -> None:
        raise RuntimeError("worker_stop hook broke")


@pytest.mark.parametrize("after", [False, True], ids=["before-call-next", "after-call-next"])
async def test_a_hook_that_raises_loses_no_task(
    app: aqueue.App, after: bool, caplog: pytest.LogCaptureFixture
) -> None:
    app.middleware(Broken(after))
    runs: list[int] = []

    @app.task
    async def add(a: int, b: int) -> int:
        runs.append(a)
        return a + b

    with caplog.at_level(logging.ERROR, logger="aqueue.hooks"):
        handles = [await add.enqueue(i, 1) for i in range(5)]
        handles += await add.enqueue_many([(i, 1) for i in range(5, 10)])
        async with running_worker(app):
            assert [await h.get(timeout=10) for h in handles] == [i + 1 for i in range(10)]
    assert sorted(runs) == list(range(10))  # each ran exactly once
    logged = " ".join(r.getMessage() for r in caplog.records)
    for hook in ("enqueue", "execute", "outcome", "worker_start", "worker_stop"):
        assert f"hook {hook} raised" in logged


async def test_a_hook_that_forgets_call_next_still_runs_the_task(
    app: aqueue.App, caplog: pytest.LogCaptureFixture
) -> None:
    class Forgetful(Middleware):
        async def enqueue(self, job: JobInfo, call_next: CallNext) -> None:
            return None

        async def execute(self, job: JobInfo, call_next: CallNext) -> None:
            return None

    app.middleware(Forgetful())

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    handle = await double.enqueue(21)
    async with running_worker(app):
        assert await handle.get(timeout=10) == 42
    assert sum("without awaiting call_next" in r.getMessage() for r in caplog.records) == 2


async def test_a_hook_cannot_hide_a_task_error(app: aqueue.App) -> None:
    class Swallow(Middleware):
        async def enqueue(self, job: JobInfo, call_next: CallNext) -> None:
            with contextlib.suppress(aqueue.EnqueueError):
                await call_next()

    app.middleware(Swallow())

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(aqueue.EnqueueError):
        await add.enqueue(1)  # type: ignore[call-arg]


def test_middleware_must_be_a_middleware(app: aqueue.App) -> None:
    with pytest.raises(aqueue.ConfigError, match="Middleware instance"):
        app.middleware(object())  # type: ignore[type-var]


async def test_delay_runs_the_enqueue_hooks_with_the_callers_context(app: aqueue.App) -> None:
    recorder = app.middleware(Recorder())
    seen: list[str] = []

    @app.task
    async def echo(x: int) -> int:
        seen.append(correlation.get())
        return x

    def from_sync_code() -> aqueue.SyncResult[int]:
        correlation.set("sync-7")  # this thread's context
        return echo.delay(7)

    handle = await asyncio.to_thread(from_sync_code)
    try:
        async with running_worker(app):
            assert await app.result(handle.id).get(timeout=10) == 7
    finally:
        app.close_sync()
    assert seen == ["sync-7"]
    assert recorder.calls[:2] == [("enqueue:before", echo.name, ""), ("enqueue:after", handle.id)]
