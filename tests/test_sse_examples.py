"""The FastAPI and aiohttp examples relay a streaming task to the browser as
server-sent events: read over real HTTP, with a real worker process, and
resumed with ``Last-Event-ID`` as a browser's ``EventSource`` does."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aqueue.dashboard.server import DashboardServer

from .ops_support import EXAMPLES, spawn, stop

WORDS = " ".join(f"w{i}" for i in range(40))


def _fresh_example(name: str, monkeypatch: Any, redis_url: str, prefix: str) -> Any:
    monkeypatch.setenv("AQUEUE_REDIS_URL", redis_url)
    monkeypatch.setenv("AQUEUE_PREFIX", prefix)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def _worker(redis_url: str, prefix: str, spec: str) -> Any:
    return spawn(redis_url, prefix, "worker", spec, cwd=EXAMPLES, PYTHONPATH=str(EXAMPLES))


async def read_events(lines: AsyncIterator[str], limit: int | None = None) -> list[dict[str, str]]:
    """Server-sent events (``id``, ``event``, ``data``) as they come, up to ``limit``."""
    events: list[dict[str, str]] = []
    event: dict[str, str] = {}
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if line:
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")
            continue
        if event:
            events.append(event)
            event = {}
            if limit is not None and len(events) == limit:
                break
    return events


def check_relay(first: list[dict[str, str]], rest: list[dict[str, str]]) -> None:
    """Every word once, in order, across the two connections; then ``done``."""
    chunks = [json.loads(e["data"]) for e in first + rest if "id" in e]
    assert chunks == WORDS.split()
    ids = [e["id"] for e in first + rest if "id" in e]
    assert len(set(ids)) == len(ids)
    assert rest[-1] == {"event": "done", "data": "{}"}


async def test_fastapi_example_relays_a_stream_as_server_sent_events(
    redis_url: str, prefix: str, monkeypatch: Any
) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    example = _fresh_example("fastapi_app", monkeypatch, redis_url, prefix)
    worker = _worker(redis_url, prefix, "fastapi_app:queue")
    web = example.web
    # A real HTTP server on a free port: aqueue's own small ASGI server (the
    # example's docs run it under uvicorn; the relay is the same).
    server = DashboardServer(web)
    try:
        async with web.router.lifespan_context(web):
            await server.start("127.0.0.1", 0)
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                started = await http.post("/tokens", json={"text": WORDS})
                task_id = started.json()["task_id"]
                url = f"/tasks/{task_id}/events"
                async with http.stream("GET", url) as reply:
                    assert reply.status_code == 200
                    assert reply.headers["content-type"].startswith("text/event-stream")
                    first = await read_events(reply.aiter_lines(), limit=15)
                # The browser reconnects with the last id it saw.
                again = {"last-event-id": first[-1]["id"]}
                async with http.stream("GET", url, headers=again) as reply:
                    rest = await read_events(reply.aiter_lines())
                check_relay(first, rest)
    finally:
        await server.close()
        stop(worker)


async def test_aiohttp_example_relays_a_stream_as_server_sent_events(
    redis_url: str, prefix: str, monkeypatch: Any
) -> None:
    pytest.importorskip("aiohttp")
    from aiohttp.test_utils import TestClient, TestServer

    example = _fresh_example("aiohttp_app", monkeypatch, redis_url, prefix)
    worker = _worker(redis_url, prefix, "aiohttp_app:queue")

    async def lines(reply: Any) -> AsyncIterator[str]:
        async for line in reply.content:
            yield line.decode()

    try:
        async with TestClient(TestServer(example.make_app())) as http:  # a real server
            started = await http.post("/tokens", data=WORDS)
            task_id = (await started.json())["task_id"]
            url = f"/tasks/{task_id}/events"
            async with http.get(url) as reply:
                assert reply.status == 200
                assert reply.headers["content-type"].startswith("text/event-stream")
                first = await read_events(lines(reply), limit=15)
            async with http.get(url, headers={"last-event-id": first[-1]["id"]}) as reply:
                rest = await read_events(lines(reply))
            check_relay(first, rest)
    finally:
        stop(worker)
