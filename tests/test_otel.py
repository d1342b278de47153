"""OpenTelemetry: a producer span here, consumer spans in a real worker process,
linked parent and child through the message's trace context."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

import aqueue
from aqueue.integrations.otel import OpenTelemetryMiddleware

from .conftest import start_cli_worker


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


async def test_spans_link_producer_and_worker_process(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = aqueue.App(redis_url, prefix=prefix)
    app.middleware(OpenTelemetryMiddleware(tracer_provider=provider))

    @app.task(name="otel.flaky")
    async def flaky() -> int:
        raise NotImplementedError  # runs on the worker

    @app.task(name="otel.add")
    async def add(a: int, b: int) -> int:
        raise NotImplementedError

    spans_file = tmp_path / "spans.jsonl"
    worker = start_cli_worker(redis_url, prefix, "otel_app:app", OTEL_SPANS_FILE=str(spans_file))
    try:
        async with app:
            retried = await flaky.enqueue()
            plain = await add.enqueue(2, 3)
            assert await retried.get(timeout=30) == 2
            assert await plain.get(timeout=30) == 5
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, out.decode()

    sent = {s.attributes["messaging.message.id"]: s for s in exporter.get_finished_spans()}
    assert set(sent) == {retried.id, plain.id}
    for span in sent.values():
        assert span.kind is SpanKind.PRODUCER and span.name == "send default"
        assert span.attributes["messaging.system"] == "aqueue"
        assert span.attributes["messaging.operation.type"] == "send"
        assert span.attributes["messaging.destination.name"] == "default"

    processed: list[dict[str, Any]] = [
        json.loads(line) for line in spans_file.read_text().splitlines()
    ]
    by_task: dict[str, list[dict[str, Any]]] = {}
    for span in processed:
        by_task.setdefault(span["attributes"]["messaging.message.id"], []).append(span)
    assert sorted(by_task) == sorted(sent)

    for task_id, runs in by_task.items():
        producer = sent[task_id].get_span_context()
        for run in runs:
            assert run["kind"] == "SpanKind.CONSUMER" and run["name"] == "process default"
            # Child of the producer span, in its trace, and linked to it.
            assert run["context"]["trace_id"] == _hex(producer.trace_id, 32)
            assert run["parent_id"] == _hex(producer.span_id, 16)
            [link] = run["links"]
            assert link["context"]["span_id"] == _hex(producer.span_id, 16)
            assert run["attributes"]["messaging.operation.type"] == "process"
    # The retry is a second span in the same trace: attempt 1 failed, attempt 2 succeeded.
    runs = sorted(by_task[retried.id], key=lambda s: s["attributes"]["aqueue.task.attempt"])
    assert [r["attributes"]["aqueue.task.attempt"] for r in runs] == [1, 2]
    assert [r["attributes"]["aqueue.task.status"] for r in runs] == ["retrying", "succeeded"]
    assert runs[0]["status"]["status_code"] == "ERROR"
    assert runs[0]["events"][0]["name"] == "exception"
    assert runs[0]["attributes"]["error.type"] == "ConnectionError"
    assert runs[1]["status"]["status_code"] == "UNSET"
    assert [r["attributes"]["aqueue.task.status"] for r in by_task[plain.id]] == ["succeeded"]
