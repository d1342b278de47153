"""FastAPI + aqueue: endpoints enqueue work and return task ids; a status endpoint
awaits; an events endpoint relays a streaming task's chunks as server-sent events.

Run it (Redis at AQUEUE_REDIS_URL, default redis://localhost:6379/0)::

    cd examples
    aqueue worker fastapi_app:queue &
    uvicorn fastapi_app:web --port 8000
    curl -X POST localhost:8000/words -H 'content-type: application/json' -d '{"text": "a b c"}'
    curl 'localhost:8000/tasks/<task_id>?wait=5'
    curl -X POST localhost:8000/tokens -H 'content-type: application/json' -d '{"text": "a b c"}'
    curl -N localhost:8000/tasks/<task_id>/events   # or new EventSource(url) in a browser
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import aqueue
from aqueue.integrations.fastapi import lifespan

queue = aqueue.App()  # AQUEUE_REDIS_URL, AQUEUE_PREFIX, ... from the environment


@queue.task
async def count_words(text: str) -> int:
    await asyncio.sleep(0.01)  # stands in for slow I/O
    return len(text.split())


@queue.task
async def fail(message: str) -> None:
    raise ValueError(message)


@queue.task
async def tokens(text: str) -> AsyncIterator[str]:
    """A streaming task: each word is a chunk (an LLM's tokens, a crawl's rows...)."""
    for word in text.split():
        await asyncio.sleep(0.01)  # stands in for the time each chunk takes
        yield word


web = FastAPI(lifespan=lifespan(queue))  # one Redis connection pool for the app's life


class Text(BaseModel):
    text: str


@web.post("/words")
async def start_count(body: Text) -> dict[str, str]:
    handle = await count_words.enqueue(body.text)
    return {"task_id": handle.id}


@web.post("/fail")
async def start_failure(body: Text) -> dict[str, str]:
    handle = await fail.enqueue(body.text)
    return {"task_id": handle.id}


@web.get("/tasks/{task_id}")
async def task_status(task_id: str, wait: float = 0.0) -> dict[str, Any]:
    """The task's state; with ``?wait=SECONDS``, wait that long for it to finish."""
    handle = queue.result(task_id)
    if wait > 0:
        try:
            value = await handle.get(timeout=min(wait, 30.0))
        except aqueue.ResultTimeout:
            pass
        except aqueue.TaskFailed as exc:
            return {
                "task_id": task_id,
                "status": "failed",
                "error": f"{exc.exc_type}: {exc.message}",
            }
        else:
            return {"task_id": task_id, "status": "succeeded", "result": value}
    info = await handle.info()
    if info.status is aqueue.TaskStatus.UNKNOWN:
        raise HTTPException(404, f"no task {task_id}")
    return {"task_id": task_id, "status": info.status.value, "error": info.error}


@web.post("/tokens")
async def start_tokens(body: Text) -> dict[str, str]:
    handle = await tokens.enqueue(body.text)
    return {"task_id": handle.id}


@web.get("/tasks/{task_id}/events")
async def task_events(task_id: str, request: Request) -> StreamingResponse:
    """A streaming task's chunks as server-sent events, then how it ended.

    Each event's id is the chunk's position: a browser's ``EventSource`` that
    reconnects sends it back as ``Last-Event-ID`` and the relay resumes after
    it, so the page misses no chunk and sees none twice.
    """
    return StreamingResponse(
        relay(task_id, request.headers.get("last-event-id")),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def relay(task_id: str, after: str | None) -> AsyncIterator[str]:
    handle = queue.result(task_id)
    chunks = handle.stream(after=after)
    async for chunk in chunks:
        yield f"id: {chunks.position}\ndata: {json.dumps(chunk)}\n\n"
    try:
        await handle.get(timeout=30)
    except aqueue.TaskFailed as exc:
        yield f"event: failed\ndata: {json.dumps(f'{exc.exc_type}: {exc.message}')}\n\n"
    else:
        yield "event: done\ndata: {}\n\n"
