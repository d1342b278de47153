"""aiohttp.web + aqueue: endpoints enqueue work and return task ids; a status endpoint
awaits; an events endpoint relays a streaming task's chunks as server-sent events.

Run it (Redis at AQUEUE_REDIS_URL, default redis://localhost:6379/0)::

    cd examples
    aqueue worker aiohttp_app:queue &
    python aiohttp_app.py            # serves on port 8080 (or $PORT)
    curl -X POST localhost:8080/words -d 'a b c'
    curl 'localhost:8080/tasks/<task_id>?wait=5'
    curl -X POST localhost:8080/tokens -d 'a b c'
    curl -N localhost:8080/tasks/<task_id>/events   # or new EventSource(url) in a browser

Run as a script, this module is ``__main__``; aqueue names its tasks after
the import name the worker uses (``aiohttp_app.count_words``), so both sides
agree.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

from aiohttp import web

import aqueue
from aqueue.integrations.aiohttp import cleanup_ctx

queue = aqueue.App()  # AQUEUE_REDIS_URL, AQUEUE_PREFIX, ... from the environment


@queue.task
async def count_words(text: str) -> int:
    await asyncio.sleep(0.01)  # stands in for slow I/O
    return len(text.split())


@queue.task
async def tokens(text: str) -> AsyncIterator[str]:
    """A streaming task: each word is a chunk (an LLM's tokens, a crawl's rows...)."""
    for word in text.split():
        await asyncio.sleep(0.01)  # stands in for the time each chunk takes
        yield word


routes = web.RouteTableDef()


@routes.post("/words")
async def start_count(request: web.Request) -> web.Response:
    handle = await count_words.enqueue(await request.text())
    return web.json_response({"task_id": handle.id})


@routes.get("/tasks/{task_id}")
async def task_status(request: web.Request) -> web.Response:
    """The task's state; with ``?wait=SECONDS``, wait that long for it to finish."""
    task_id = request.match_info["task_id"]
    wait = float(request.query.get("wait", "0"))
    handle = queue.result(task_id)
    if wait > 0:
        try:
            value = await handle.get(timeout=min(wait, 30.0))
        except aqueue.ResultTimeout:
            pass
        except aqueue.TaskFailed as exc:
            return web.json_response({"task_id": task_id, "status": "failed", "error": str(exc)})
        else:
            return web.json_response({"task_id": task_id, "status": "succeeded", "result": value})
    info = await handle.info()
    if info.status is aqueue.TaskStatus.UNKNOWN:
        raise web.HTTPNotFound(text=f"no task {task_id}")
    return web.json_response({"task_id": task_id, "status": info.status.value})


@routes.post("/tokens")
async def start_tokens(request: web.Request) -> web.Response:
    handle = await tokens.enqueue(await request.text())
    return web.json_response({"task_id": handle.id})


@routes.get("/tasks/{task_id}/events")
async def task_events(request: web.Request) -> web.StreamResponse:
    """A streaming task's chunks as server-sent events, then how it ended.

    Each event's id is the chunk's position: a browser's ``EventSource`` that
    reconnects sends it back as ``Last-Event-ID`` and the relay resumes after
    it, so the page misses no chunk and sees none twice.
    """
    response = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
    )
    await response.prepare(request)
    handle = queue.result(request.match_info["task_id"])
    chunks = handle.stream(after=request.headers.get("last-event-id"))
    async for chunk in chunks:
        await response.write(f"id: {chunks.position}\ndata: {json.dumps(chunk)}\n\n".encode())
    try:
        await handle.get(timeout=30)
    except aqueue.TaskFailed as exc:
        failure = json.dumps(f"{exc.exc_type}: {exc.message}")
        await response.write(f"event: failed\ndata: {failure}\n\n".encode())
    else:
        await response.write(b"event: done\ndata: {}\n\n")
    await response.write_eof()
    return response


def make_app() -> web.Application:
    web_app = web.Application()
    web_app.add_routes(routes)
    web_app.cleanup_ctx.append(cleanup_ctx(queue))  # one connection pool for the app's life
    return web_app


if __name__ == "__main__":
    web.run_app(make_app(), port=int(os.environ.get("PORT", "8080")))
