"""Prometheus /metrics and /healthz of a worker, after a known workload."""

from __future__ import annotations

import httpx
import pytest

import aqueue
from aqueue.runtime.metrics import serve_metrics

from .conftest import free_port, running_worker, start_cli_worker, wait_until
from .ops_support import stop

pytest.importorskip("prometheus_client")


def _value(text: str, sample: str) -> float:
    """The value of one sample line (name with labels) in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in metrics:\n{text}")


async def test_metrics_count_a_known_workload(app: aqueue.App) -> None:
    @app.task(name="ok")
    async def ok(x: int) -> int:
        return x

    @app.task(name="flaky", retries=1, retry_delay=0.05, retry_jitter=False)
    async def flaky() -> None:
        raise RuntimeError("always")

    async with running_worker(app, concurrency=10) as worker:
        assert worker.observer is None  # nothing is counted unless metrics are on
        server = await serve_metrics(worker, 0, host="127.0.0.1")
        try:
            base = f"http://127.0.0.1:{server.port}"
            handles = [await ok.enqueue(i) for i in range(5)]
            assert [await h.get(timeout=10) for h in handles] == list(range(5))
            with pytest.raises(aqueue.TaskFailed):
                await (await flaky.enqueue()).get(timeout=10)
            later = await ok.options(delay=600).enqueue(99)
            async with httpx.AsyncClient(base_url=base) as http:
                response = await http.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                text = response.text
                health = await http.get("/healthz")
                missing = await http.get("/nope")
        finally:
            await server.close()
    assert _value(text, 'aqueue_tasks_started_total{task="ok"}') == 5
    assert _value(text, 'aqueue_tasks_succeeded_total{task="ok"}') == 5
    assert _value(text, 'aqueue_tasks_started_total{task="flaky"}') == 2
    assert _value(text, 'aqueue_tasks_retried_total{task="flaky"}') == 1
    assert _value(text, 'aqueue_tasks_failed_total{task="flaky"}') == 1
    assert _value(text, 'aqueue_task_duration_seconds_count{task="ok"}') == 5
    assert _value(text, 'aqueue_queue_delayed{queue="default"}') == 1
    assert _value(text, 'aqueue_queue_waiting{queue="default"}') == 0
    assert _value(text, 'aqueue_queue_lag{queue="default"}') == 0
    assert _value(text, "aqueue_event_loop_lag_seconds") >= 0
    assert health.status_code == 200
    assert health.json()["redis"] == "ok" and health.json()["status"] == "ok"
    assert missing.status_code == 404
    assert later.id


async def test_cli_worker_serves_metrics_and_health(
    redis_url: str, prefix: str, app: aqueue.App
) -> None:
    @app.task(name="basic.add")
    async def add(x: int, y: int) -> int:
        return x + y

    port = free_port()
    worker = start_cli_worker(redis_url, prefix, "basic:app", "--metrics-port", str(port))
    try:
        results = [await add.enqueue(i, 1) for i in range(3)]
        assert [await r.get(timeout=20) for r in results] == [1, 2, 3]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def counted() -> bool:
                text = (await http.get("/metrics")).text
                return 'aqueue_tasks_succeeded_total{task="basic.add"} 3.0' in text

            await wait_until(counted, timeout=10)
            assert (await http.get("/healthz")).status_code == 200
    finally:
        assert stop(worker) == 0


def _two_free_ports() -> int:
    """A port P such that P and P+1 are both free right now."""
    import socket

    for _ in range(50):
        base = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise AssertionError("no two consecutive free ports")


async def test_supervised_children_serve_metrics_on_consecutive_ports(
    redis_url: str, prefix: str
) -> None:
    from .ops_support import spawn

    base = _two_free_ports()
    sup = spawn(
        redis_url, prefix, "worker", "basic:app", "--processes", "2", "--metrics-port", str(base)
    )
    try:
        async with httpx.AsyncClient() as http:

            async def both_healthy() -> bool:
                try:
                    codes = [
                        (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code
                        for port in (base, base + 1)
                    ]
                except httpx.TransportError:
                    return False
                return codes == [200, 200]

            await wait_until(both_healthy, timeout=30, interval=0.2)
    finally:
        assert stop(sup, timeout=40) == 0
