"""Middleware where it used to be skipped: the messages aqueue sends by itself
(a workflow's later steps, group members, a chord's callback, a periodic
tick) go through the enqueue hooks and OpenTelemetry's producer spans; a job
aborted while read ahead reaches the outcome hooks."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import aqueue
from aqueue import JobInfo, Middleware, TaskStatus, chain, group
from aqueue.core.hooks import CallNext
from aqueue.periodic import Scheduler

from .conftest import running_worker, start_cli_worker, wait_until

correlation: contextvars.ContextVar[str] = contextvars.ContextVar("correlation", default="-")


class Recorder(Middleware):
    """Writes down every enqueue and outcome, and carries a correlation id."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []
        self.ran: dict[str, str] = {}
        self.outcomes: list[tuple[str, int, TaskStatus | None]] = []

    async def enqueue(self, job: JobInfo, call_next: CallNext) -> None:
        job.headers["correlation"] = correlation.get()
        await call_next()
        self.sent.append((job.name, job.queue, list(job.args)))

    async def execute(self, job: JobInfo, call_next: CallNext) -> None:
        self.ran[job.task_id] = job.headers.get("correlation", "-")
        token = correlation.set(self.ran[job.task_id])
        try:
            await call_next()
        finally:
            correlation.reset(token)

    async def outcome(self, job: JobInfo) -> None:
        self.outcomes.append((job.task_id, job.attempt, job.status))


async def test_workflow_steps_go_through_the_enqueue_middleware(app: aqueue.App) -> None:
    recorder = app.middleware(Recorder())

    @app.task(name="gaps.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="gaps.total", queue="other")
    async def total(values: list[int]) -> int:
        return sum(values)

    token = correlation.set("req-7")
    try:
        last = await chain(add.s(1, 2), group(add.s(10), add.s(20)), total.s()).enqueue()
    finally:
        correlation.reset(token)
    async with running_worker(app, queues=["default", "other"]):
        assert await last.get(timeout=20) == 36
        await wait_until(lambda: len(recorder.ran) == 4)
    # By the caller: the chord's callback (recorded with the chord, its own
    # arguments: the members' values come later) and the first step; by the
    # worker that ran the first step: the group's members, with its value.
    assert sorted(recorder.sent[:2]) == [
        ("gaps.add", "default", [1, 2]),
        ("gaps.total", "other", []),
    ]
    assert sorted(recorder.sent[2:]) == [
        ("gaps.add", "default", [3, 10]),
        ("gaps.add", "default", [3, 20]),
    ]
    # The header set by the caller's hook reached every step: the worker-side
    # enqueue hooks ran where the step before had set it.
    assert set(recorder.ran.values()) == {"req-7"}


async def test_a_chain_is_one_trace_across_a_worker_process(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from aqueue.integrations.otel import OpenTelemetryMiddleware

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = aqueue.App(redis_url, prefix=prefix)
    app.middleware(OpenTelemetryMiddleware(tracer_provider=provider))

    @app.task(name="otel.add")
    async def add(a: int, b: int) -> int:
        raise NotImplementedError  # runs on the worker (tests/apps/otel_app.py)

    spans_file = tmp_path / "spans.jsonl"
    worker = start_cli_worker(redis_url, prefix, "otel_app:app", OTEL_SPANS_FILE=str(spans_file))
    try:
        async with app:
            last = await chain(add.s(1, 2), add.s(3), add.s(4)).enqueue()
            assert await last.get(timeout=30) == 10
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, out.decode()
    assert last.parent is not None and last.parent.parent is not None
    steps = [last.parent.parent.id, last.parent.id, last.id]

    [first_send] = exporter.get_finished_spans()
    spans: dict[tuple[str, str], dict[str, Any]] = {
        ("send", steps[0]): json.loads(first_send.to_json(indent=None))
    }
    for line in spans_file.read_text().splitlines():
        span = json.loads(line)
        attributes = span["attributes"]
        key = (attributes["messaging.operation.type"], attributes["messaging.message.id"])
        assert key not in spans
        spans[key] = span
    assert sorted(spans) == sorted((op, s) for op in ("send", "process") for s in steps)
    # One trace: send 1 <- process 1 <- send 2 <- process 2 <- send 3 <- process 3.
    assert len({span["context"]["trace_id"] for span in spans.values()}) == 1
    assert first_send.parent is None
    parent = spans[("send", steps[0])]
    for n, step in enumerate(steps):
        send, process = spans[("send", step)], spans[("process", step)]
        assert send["kind"] == "SpanKind.PRODUCER" and send["name"] == "send default"
        assert process["kind"] == "SpanKind.CONSUMER"
        if n > 0:
            assert send["parent_id"] == parent["context"]["span_id"]
        assert process["parent_id"] == send["context"]["span_id"]
        [link] = process["links"]
        assert link["context"]["span_id"] == send["context"]["span_id"]
        assert process["attributes"]["aqueue.task.status"] == "succeeded"
        parent = process


async def test_a_periodic_tick_goes_through_the_enqueue_middleware(app: aqueue.App) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from aqueue.integrations.otel import OpenTelemetryMiddleware

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app.middleware(OpenTelemetryMiddleware(tracer_provider=provider))
    recorder = app.middleware(Recorder())

    @app.periodic(every=60, name="gaps.tick", args=(5,))
    async def tick(n: int) -> int:
        return n * 2

    start = datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC).timestamp()
    now = [start]
    scheduler = Scheduler(app, clock=lambda: now[0])
    assert [o.outcome for o in await scheduler.run_due()] == ["new"]  # recorded, not run
    now[0] = start + 60
    [enqueued] = await scheduler.run_due()
    assert enqueued.outcome == "enqueued"
    assert recorder.sent == [("gaps.tick", "default", [5]), ("gaps.tick", "default", [5])]

    async with running_worker(app, queues=["default"], beat=False):
        assert await aqueue.AsyncResult(app.client, enqueued.task_id, "default").get(10) == 10
    sends = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    # The claim that only recorded the first tick sent nothing: no message id.
    assert [s.attributes.get("messaging.message.id") for s in sends] == [
        None,
        enqueued.task_id,
    ]
    sent = sends[1]
    assert sent.name == "send default" and sent.parent is None  # a tick starts a trace
    [process] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert process.attributes["messaging.message.id"] == enqueued.task_id
    assert process.parent is not None
    assert process.parent.span_id == sent.context.span_id
    assert process.context.trace_id == sent.context.trace_id


async def test_a_job_aborted_while_read_ahead_reaches_the_outcome_hook(
    app: aqueue.App,
) -> None:
    recorder = app.middleware(Recorder())
    release = asyncio.Event()

    @app.task(name="gaps.block")
    async def block() -> str:
        await release.wait()
        return "done"

    @app.task(name="gaps.quick")
    async def quick() -> str:
        return "ran"

    async with running_worker(app, queues=["default"], concurrency=1, prefetch=1) as worker:
        first = await block.enqueue()
        await wait_until(lambda: first.id in recorder.ran)
        second = await quick.enqueue()
        inflight = worker._inflight  # read ahead: held by the worker, not begun

        def held() -> bool:
            entry = inflight.entry_of(second.id)
            return entry is not None and inflight.get(entry) is not None

        await wait_until(held)
        # abort() waits for the outcome, recorded when the read-ahead job's turn comes.
        aborting = asyncio.create_task(second.abort())
        entry = inflight.entry_of(second.id)
        assert entry is not None

        def cancelled() -> bool:
            running = inflight.get(entry)
            return running is not None and running.cancel_reason == "abort"

        await wait_until(cancelled)
        release.set()
        assert await first.get(timeout=10) == "done"
        assert await aborting
        await wait_until(lambda: len(recorder.outcomes) == 2)
        assert await second.status() is TaskStatus.ABORTED
    assert second.id not in recorder.ran  # never began
    assert sorted(recorder.outcomes, key=lambda o: o[0] == second.id) == [
        (first.id, 1, TaskStatus.SUCCEEDED),
        (second.id, 1, TaskStatus.ABORTED),
    ]


class Sequence(Middleware):
    """The worker-side hooks, in order, without the task ids (they differ)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def execute(self, job: JobInfo, call_next: CallNext) -> None:
        self.calls.append(("execute", job.name, job.attempt, list(job.args)))
        await call_next()
        self.calls.append(("executed", job.status, job.error and job.error.type))

    async def retry(self, job: JobInfo) -> None:
        self.calls.append(("retry", job.attempt, job.status, job.retry_delay))

    async def outcome(self, job: JobInfo) -> None:
        self.calls.append(("outcome", job.attempt, job.status, type(job.exception).__name__))


class Raising(Middleware):
    """Raises in every worker-side hook, after the call."""

    async def execute(self, job: JobInfo, call_next: CallNext) -> None:
        await call_next()
        raise RuntimeError("execute hook broke")

    async def retry(self, job: JobInfo) -> None:
        raise RuntimeError("retry hook broke")

    async def outcome(self, job: JobInfo) -> None:
        raise RuntimeError("outcome hook broke")


async def test_eager_mode_runs_the_worker_hooks_as_a_worker_does(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, list[tuple[Any, ...]]] = {}
    for mode in ("worker", "eager"):
        app = aqueue.App(redis_url, prefix=f"{prefix}{mode}")
        app.middleware(Raising())  # outermost: its errors are logged, nothing else
        sequence = app.middleware(Sequence())

        @app.task(name="gaps.flaky", retries=2, retry_delay=0.01, retry_jitter=False)
        async def flaky(ctx: aqueue.Context, n: int) -> int:
            if ctx.attempt == 1:
                raise ConnectionError("once")
            return n * ctx.attempt

        @app.task(name="gaps.broken")
        async def broken() -> None:
            raise ValueError("never works")

        with caplog.at_level(logging.ERROR, logger="aqueue.hooks"):
            if mode == "eager":
                with app.eager():
                    values = [await (await flaky.enqueue(21)).get(timeout=5)]
                    failed = await broken.enqueue()
            else:
                async with running_worker(app, concurrency=1):
                    values = [await (await flaky.enqueue(21)).get(timeout=10)]
                    failed = await broken.enqueue()
                    with pytest.raises(aqueue.TaskFailed):
                        await failed.get(timeout=10)
                    calls = sequence.calls
                    await wait_until(lambda: len(calls) == 9)  # noqa: B023
        assert values == [42]
        assert await failed.status() is TaskStatus.FAILED
        await app.close()
        seen[mode] = sequence.calls
        logged = " ".join(r.getMessage() for r in caplog.records)
        for hook in ("execute", "retry", "outcome"):
            assert f"Raising hook {hook} raised" in logged
        caplog.clear()
    assert (
        seen["eager"]
        == seen["worker"]
        == [
            ("execute", "gaps.flaky", 1, [21]),
            ("executed", TaskStatus.RETRYING, "ConnectionError"),
            ("retry", 1, TaskStatus.RETRYING, 0.01),
            ("execute", "gaps.flaky", 2, [21]),
            ("executed", TaskStatus.SUCCEEDED, None),
            ("outcome", 2, TaskStatus.SUCCEEDED, "NoneType"),
            ("execute", "gaps.broken", 1, []),
            ("executed", TaskStatus.FAILED, "ValueError"),
            ("outcome", 1, TaskStatus.FAILED, "ValueError"),
        ]
    )


async def test_eager_retries_cut_short_end_failed_in_the_outcome_hook(
    app: aqueue.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqueue.runtime import eager

    monkeypatch.setattr(eager, "MAX_INLINE_ATTEMPTS", 2)
    sequence = app.middleware(Sequence())

    @app.task(name="gaps.forever", retries=10, retry_delay=60, retry_jitter=False)
    async def forever() -> None:
        raise ConnectionError("still down")

    with app.eager():
        handle = await forever.enqueue()
    assert await handle.status() is TaskStatus.FAILED
    assert [c for c in sequence.calls if c[0] in ("retry", "outcome")] == [
        ("retry", 1, TaskStatus.RETRYING, 60.0),
        ("outcome", 2, TaskStatus.FAILED, "ConnectionError"),
    ]


async def test_a_job_abandoned_after_ignoring_its_abort_reaches_the_outcome_hook(
    app: aqueue.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqueue.runtime import running

    monkeypatch.setattr(running, "ABORT_GRACE", 0.2)
    recorder = app.middleware(Recorder())
    release = asyncio.Event()

    @app.task(name="gaps.stubborn")
    async def stubborn() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # swallows the abort's cancellation
            await asyncio.sleep(30)
        await release.wait()
        return "late"

    async with running_worker(app, queues=["default"]):
        handle = await stubborn.enqueue()
        await wait_until(lambda: handle.id in recorder.ran)
        assert await handle.abort()  # recorded aborted once the grace has passed
        await wait_until(lambda: len(recorder.outcomes) == 1)
        release.set()  # its late return is dropped (the worker waits for it as it stops)
    assert recorder.outcomes == [(handle.id, 1, TaskStatus.ABORTED)]
    assert await handle.status() is TaskStatus.ABORTED
