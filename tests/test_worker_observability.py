"""``aqueue worker --log-format json`` and ``--metrics-host``, on a real worker process."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

import aqueue

from .conftest import free_port, start_cli_worker, wait_until
from .ops_support import stop


async def test_json_logs_are_one_object_per_line_with_the_task_fields(
    redis_url: str, prefix: str, app: aqueue.App
) -> None:
    @app.task(name="dashboard_app.parse_invoice")
    async def parse_invoice(text: str) -> int:
        return 0

    worker = start_cli_worker(redis_url, prefix, "dashboard_app:app", "--log-format", "json")
    try:
        ok = await parse_invoice.enqueue("invoice:12")
        bad = await parse_invoice.enqueue("no colon")
        assert await ok.get(timeout=20) == 12
        with pytest.raises(aqueue.TaskFailed):
            await bad.get(timeout=20)
    finally:
        assert stop(worker) == 0
    assert worker.stdout is not None
    lines = [line for line in worker.stdout.read().decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    by_task = {r["task_id"]: r for r in records if "task_id" in r}
    done, failed = by_task[ok.id], by_task[bad.id]
    assert done["outcome"] == "succeeded" and done["level"] == "INFO"
    assert done["task_name"] == "dashboard_app.parse_invoice"
    assert done["queue"] == "default" and done["attempt"] == 1
    assert isinstance(done["duration_ms"], float) and done["duration_ms"] >= 0
    assert ok.id in done["message"]
    assert failed["outcome"] == "failed" and "IndexError" in failed["message"]


def _outside_address() -> str | None:
    """An address of this host other than the loopback, when it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address: str = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_metrics_host_chooses_the_address_the_metrics_server_listens_on(
    redis_url: str, prefix: str
) -> None:
    pytest.importorskip("prometheus_client")
    port = free_port()
    worker = start_cli_worker(
        redis_url, prefix, "basic:app", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"
    )
    try:
        async with httpx.AsyncClient() as http:

            async def healthy() -> bool:
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/healthz")
                except httpx.TransportError:
                    return False
                return response.status_code == 200

            await wait_until(healthy, timeout=20, interval=0.1)
            outside = _outside_address()
            if outside is not None:
                with pytest.raises(httpx.ConnectError):
                    await http.get(f"http://{outside}:{port}/healthz")
    finally:
        assert stop(worker) == 0
    assert worker.stdout is not None
    output = worker.stdout.read().decode()
    assert f"serving /metrics and /healthz on 127.0.0.1:{port}" in output
