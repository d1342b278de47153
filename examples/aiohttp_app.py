"""aiohttp.web + aqueue: endpoints enqueue work and return task ids; a status endpoint awaits.

Run it (Redis at AQUEUE_REDIS_URL, default redis://localhost:6379/0)::

    cd examples
    aqueue worker aiohttp_app:queue &
    python aiohttp_app.py            # serves on port 8080 (or $PORT)
    curl -X POST localhost:8080/words -d 'a b c'
    curl 'localhost:8080/tasks/<task_id>?wait=5'

Run as a script, this module is ``__main__``; aqueue names its tasks after
the import name the worker uses (``aiohttp_app.count_words``), so both sides
agree.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

import aqueue
from aqueue.integrations.aiohttp import cleanup_ctx

queue = aqueue.App()  # AQUEUE_REDIS_URL, AQUEUE_PREFIX, ... from the environment


@queue.task
async def count_words(text: str) -> int:
    await asyncio.sleep(0.01)  # stands in for slow I/O
    return len(text.split())


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


def make_app() -> web.Application:
    web_app = web.Application()
    web_app.add_routes(routes)
    web_app.cleanup_ctx.append(cleanup_ctx(queue))  # one connection pool for the app's life
    return web_app


if __name__ == "__main__":
    web.run_app(make_app(), port=int(os.environ.get("PORT", "8080")))
