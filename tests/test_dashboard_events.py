"""The dashboard's live updates with events on: a change is pushed when its event
arrives, not only at the regular interval."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

import aqueue
from aqueue.dashboard import asgi_app, live, serve

from .conftest import running_worker


async def _next_fragment(lines: AsyncIterator[str]) -> str:
    """The next server-sent event's data."""
    data: list[str] = []
    async for line in lines:
        if line:
            data.append(line.removeprefix("data: "))
        elif data:
            return "\n".join(data)
    raise AssertionError("the stream ended")


async def _until_succeeded(lines: AsyncIterator[str]) -> str:
    while True:
        fragment = await _next_fragment(lines)
        if "succeeded" in fragment:
            return fragment


async def test_a_task_page_is_pushed_when_its_event_arrives(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The regular push is far off: only the task's event can bring the next one.
    monkeypatch.setattr(live, "PUSH_INTERVAL", 120.0)
    app = aqueue.App(redis_url, prefix=prefix, events=True)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    web = asgi_app(app)
    server = await serve(web, "127.0.0.1", 0)
    try:
        handle = await add.enqueue(2, 3)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as http,
            http.stream("GET", f"/events/tasks/{handle.id}?queue=default") as events,
        ):
            lines = events.aiter_lines()
            first = await _next_fragment(lines)
            assert "succeeded" not in first
            await asyncio.sleep(0.2)  # the page's event reader has taken its position
            async with running_worker(app):
                assert await handle.get(timeout=10) == 5
                # Within the deadline only because the event pushed it (the
                # regular push is 120 s away).
                await asyncio.wait_for(_until_succeeded(lines), 30)
    finally:
        await server.close()
        await web.close()
        await app.close()
