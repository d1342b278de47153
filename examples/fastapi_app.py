"""FastAPI + aqueue: endpoints enqueue work and return task ids; a status endpoint awaits.

Run it (Redis at AQUEUE_REDIS_URL, default redis://localhost:6379/0)::

    cd examples
    aqueue worker fastapi_app:queue &
    uvicorn fastapi_app:web --port 8000
    curl -X POST localhost:8000/words -H 'content-type: application/json' -d '{"text": "a b c"}'
    curl 'localhost:8000/tasks/<task_id>?wait=5'
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, HTTPException
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
