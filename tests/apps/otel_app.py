"""A worker app traced with OpenTelemetry's SDK; its spans are written to
OTEL_SPANS_FILE (JSON lines) when the worker stops, for tests/test_otel.py."""

from __future__ import annotations

import os

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import aqueue
from aqueue.integrations.otel import OpenTelemetryMiddleware

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))

app = aqueue.App()
app.middleware(OpenTelemetryMiddleware(tracer_provider=provider))


class WriteSpans(aqueue.Middleware):
    async def worker_stop(self, worker: aqueue.WorkerInfo) -> None:
        with open(os.environ["OTEL_SPANS_FILE"], "w") as f:
            for span in exporter.get_finished_spans():
                f.write(span.to_json(indent=None) + "\n")


app.middleware(WriteSpans())


@app.task(name="otel.flaky", retries=1, retry_delay=0.05, retry_jitter=False)
async def flaky(ctx: aqueue.Context) -> int:
    if ctx.attempt == 1:
        raise ConnectionError("first run fails")
    return ctx.attempt


@app.task(name="otel.add")
async def add(a: int, b: int) -> int:
    return a + b
