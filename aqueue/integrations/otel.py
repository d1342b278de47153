"""OpenTelemetry traces for aqueue (``pip install 'aqueue[otel]'``), built on middleware.

::

    from aqueue.integrations.otel import OpenTelemetryMiddleware

    app.middleware(OpenTelemetryMiddleware())   # producers and workers alike

- every enqueue is a PRODUCER span ``send <queue>``; its context travels in
  the message (the envelope's ``trace`` field, W3C ``traceparent``). That
  includes the messages aqueue sends by itself: a chain's next step (and a
  group's members after it) is sent inside the step's ``process`` span, so a
  whole chain is one trace; a chord's callback when the chord is recorded; a
  periodic tick in a trace of its own;
- every run on a worker is a CONSUMER span ``process <queue>``, a child of the
  producer span and linked to it, so a retry is one more span in the same trace;
- attributes follow the OpenTelemetry semantic conventions for messaging
  (``messaging.system``, ``messaging.destination.name``,
  ``messaging.operation.type`` / ``.name``, ``messaging.message.id``), plus
  ``aqueue.task.name``, ``aqueue.task.attempt`` and ``aqueue.task.status``;
- a failed run records the task's exception and sets the span's status to ERROR.

Only the OpenTelemetry API is needed; the SDK and exporters are the
application's choice. Spans go to the global tracer provider unless one is given.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from .._version import __version__
from ..core.hooks import CallNext, JobInfo, Middleware
from ..core.status import TaskStatus

__all__ = ["OpenTelemetryMiddleware"]

#: Outcomes a span reports as errors.
_ERRORS = {TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.EXPIRED, TaskStatus.RETRYING}


class OpenTelemetryMiddleware(Middleware):
    """Producer and consumer spans for every task, linked across processes."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("aqueue", __version__, tracer_provider=tracer_provider)

    async def enqueue(self, job: JobInfo, call_next: CallNext) -> None:
        attributes = _attributes(job, "send")
        with self.tracer.start_as_current_span(
            f"send {job.queue}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            # The span's context rides with the message, for the worker's span.
            propagate.inject(job.headers)
            try:
                await call_next()
            finally:
                if job.task_id:
                    span.set_attribute("messaging.message.id", job.task_id)

    async def execute(self, job: JobInfo, call_next: CallNext) -> None:
        parent = propagate.extract(job.headers)
        sent = trace.get_current_span(parent).get_span_context()
        links = [Link(sent)] if sent.is_valid else []
        with self.tracer.start_as_current_span(
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=_attributes(job, "process"),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            await call_next()
            if job.status is not None:
                span.set_attribute("aqueue.task.status", job.status.value)
            if job.exception is not None:
                span.record_exception(job.exception)
            if job.status in _ERRORS:
                error = job.error
                description = f"{error.type}: {error.message}" if error else job.status.value
                span.set_status(Status(StatusCode.ERROR, description))
                if error is not None:
                    span.set_attribute("error.type", error.type)


def _attributes(job: JobInfo, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "aqueue",
        "messaging.destination.name": job.queue,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "aqueue.task.name": job.name,
        "aqueue.task.attempt": job.attempt,
    }
    if job.task_id:
        attributes["messaging.message.id"] = job.task_id
    return attributes
