"""Prometheus metrics and a health endpoint for one worker process.

``aqueue worker --metrics-port 9100`` serves, on that port:

- ``/metrics``: Prometheus text format (tasks started / succeeded / failed /
  retried and other outcomes by task name, a task duration histogram, queue
  depth, consumer-group lag and dead-letter length per queue, running tasks,
  event-loop lag);
- ``/healthz``: 200 when the event loop is responsive and Redis answers a
  PING, else 503 with the reason.

Needs the ``metrics`` extra (``pip install 'aqueue[metrics]'``). With no
metrics port nothing here is imported, and the worker's only cost is one
``observer is None`` check per task. Each worker has a registry of its own,
so nothing is global.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from .._redis.connection import REDIS_ERRORS
from ..core.errors import ConfigError
from ..core.protocol import FinishItem
from ..core.status import TaskStatus
from .executor import Job
from .running import Running
from .worker import Worker

__all__ = ["MetricsServer", "WorkerMetrics", "serve_metrics"]

logger = logging.getLogger(__name__)

#: How often the event-loop lag is sampled.
LAG_SAMPLE_INTERVAL = 0.25
#: /healthz fails when the loop lagged more than this on the last sample.
UNHEALTHY_LOOP_LAG = 2.0
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _require_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError("metrics need prometheus-client: pip install 'aqueue[metrics]'") from None
    return prometheus_client


class WorkerMetrics:
    """The worker's observer: counts tasks as they start and finish."""

    def __init__(self, worker: Worker) -> None:
        prom = _require_prometheus()
        self.worker = worker
        self.registry = registry = prom.CollectorRegistry(auto_describe=True)
        task = ["task"]
        self.started_total = prom.Counter(
            "aqueue_tasks_started", "Tasks started", task, registry=registry
        )
        self.succeeded_total = prom.Counter(
            "aqueue_tasks_succeeded", "Tasks that returned a value", task, registry=registry
        )
        self.failed_total = prom.Counter(
            "aqueue_tasks_failed", "Tasks that failed for good", task, registry=registry
        )
        self.retried_total = prom.Counter(
            "aqueue_tasks_retried",
            "Task runs that failed and were retried",
            task,
            registry=registry,
        )
        self.other_total = prom.Counter(
            "aqueue_tasks_ended",
            "Task runs ending otherwise (aborted, expired, dead)",
            ["task", "outcome"],
            registry=registry,
        )
        self.duration = prom.Histogram(
            "aqueue_task_duration_seconds",
            "Wall time of one task run, start to outcome",
            task,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        queue = ["queue"]
        self.waiting = prom.Gauge(
            "aqueue_queue_waiting", "Messages no worker has read yet", queue, registry=registry
        )
        self.pending = prom.Gauge(
            "aqueue_queue_pending",
            "Messages delivered and not yet acknowledged",
            queue,
            registry=registry,
        )
        self.lag = prom.Gauge(
            "aqueue_queue_lag",
            "Consumer-group lag (entries not yet delivered)",
            queue,
            registry=registry,
        )
        self.delayed = prom.Gauge(
            "aqueue_queue_delayed", "Delayed and retrying tasks", queue, registry=registry
        )
        self.dead = prom.Gauge(
            "aqueue_queue_dead", "Dead-letter stream length", queue, registry=registry
        )
        self.oldest = prom.Gauge(
            "aqueue_queue_oldest_waiting_seconds",
            "Age of the oldest waiting message",
            queue,
            registry=registry,
        )
        self.running = prom.Gauge(
            "aqueue_worker_running_tasks", "Tasks running in this worker", registry=registry
        )
        self.loop_lag = prom.Gauge(
            "aqueue_event_loop_lag_seconds",
            "How late the last event-loop timer fired",
            registry=registry,
        )
        self.last_lag = 0.0
        self._lag_task: asyncio.Task[None] | None = None

    def start_sampling(self) -> None:
        """Start measuring event-loop lag (on the running loop)."""
        self._lag_task = asyncio.create_task(self._sample_loop_lag())

    async def stop_sampling(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            await asyncio.gather(self._lag_task, return_exceptions=True)
            self._lag_task = None

    # -- the worker's observer hook --------------------------------------------------

    def started(self, job: Job) -> None:
        self.started_total.labels(job.task.name).inc()

    def finished(self, item: FinishItem, running: Running | None) -> None:
        name = running.job.task.name if running is not None else "-"
        state = item.state
        if state is TaskStatus.SUCCEEDED:
            self.succeeded_total.labels(name).inc()
        elif state is TaskStatus.FAILED:
            self.failed_total.labels(name).inc()
        elif state is TaskStatus.RETRYING:
            self.retried_total.labels(name).inc()
        else:
            self.other_total.labels(name, state.value).inc()
        if running is not None:
            self.duration.labels(name).observe(time.perf_counter() - running.started)

    # -- sampled values ---------------------------------------------------------------

    async def _sample_loop_lag(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_SAMPLE_INTERVAL)
            self.last_lag = max(0.0, time.monotonic() - before - LAG_SAMPLE_INTERVAL)
            self.loop_lag.set(self.last_lag)

    async def refresh_queues(self) -> None:
        views = self.worker.app.client.views
        for queue in self.worker.queues:
            fig = await views.queue_figures(queue)
            self.waiting.labels(queue).set(fig["waiting"])
            self.pending.labels(queue).set(fig["pending"])
            self.lag.labels(queue).set(fig["lag"])
            self.delayed.labels(queue).set(fig["delayed"])
            self.dead.labels(queue).set(fig["dead"])
            self.oldest.labels(queue).set(fig["oldest_waiting_age"] or 0.0)
        self.running.set(self.worker.running_count)

    async def render(self) -> bytes:
        prom = _require_prometheus()
        try:
            await asyncio.wait_for(self.refresh_queues(), 2.0)
        except (TimeoutError, *REDIS_ERRORS) as exc:
            logger.warning("metrics: could not read queue depths (%s)", exc)
        data: bytes = prom.generate_latest(self.registry)
        return data

    async def health(self) -> tuple[bool, dict[str, Any]]:
        report: dict[str, Any] = {"event_loop_lag": round(self.last_lag, 4)}
        ok = self.last_lag < UNHEALTHY_LOOP_LAG
        if not ok:
            report["reason"] = f"event loop lagging {self.last_lag:.2f}s"
        try:
            await asyncio.wait_for(self.worker.app.client.broker.ping(), 2.0)
            report["redis"] = "ok"
        except (TimeoutError, *REDIS_ERRORS) as exc:
            ok = False
            report["redis"] = f"unreachable: {exc}"
            report.setdefault("reason", "redis unreachable")
        report["status"] = "ok" if ok else "unhealthy"
        return ok, report


class MetricsServer:
    """A minimal HTTP/1.1 server for ``/metrics`` and ``/healthz``."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        self.metrics.start_sampling()
        self._server = await asyncio.start_server(self._handle, host, port)
        logger.info("metrics: serving /metrics and /healthz on %s:%d", host, self.port)

    async def close(self) -> None:
        await self.metrics.stop_sampling()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]
            if method != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                prom = _require_prometheus()
                status, ctype, body = (
                    "200 OK",
                    prom.CONTENT_TYPE_LATEST,
                    await self.metrics.render(),
                )
            elif path in ("/healthz", "/health"):
                ok, report = await self.metrics.health()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(report).encode() + b"\n"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def serve_metrics(worker: Worker, port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Attach metrics to ``worker`` and serve them on ``port`` (0: a free port)."""
    metrics = WorkerMetrics(worker)
    worker.observer = metrics
    server = MetricsServer(metrics)
    await server.start(port, host)
    return server
