"""The dashboard's live updates: server-sent events that push a page's fresh figures.

Every :data:`PUSH_INTERVAL` a fragment of the open page is read again and
pushed; with events on, also as soon as an event shows a change.
"""

from __future__ import annotations

import asyncio
import contextlib

from .._redis.connection import ANY_REDIS_ERROR
from ..app import App
from ..core.errors import AqueueError
from . import pages
from .layout import Links
from .readings import Readings
from .request import Request, Response, send_response, wait_disconnect
from .server import Receive, Send

__all__ = ["PUSH_INTERVAL", "stream_updates"]

#: Seconds between two pushes of fresh figures to an open page.
PUSH_INTERVAL = 1.0


async def stream_updates(
    app: App, readings: Readings, request: Request, links: Links, receive: Receive, send: Send
) -> None:
    """Push a fresh fragment every :data:`PUSH_INTERVAL` until the browser leaves;
    with events on, also as soon as an event shows a change (for a task page:
    one of that task's)."""
    what = request.path.removeprefix("/events/")
    task_id = what.removeprefix("tasks/") if what.startswith("tasks/") else None
    if task_id is None and what != "overview":
        await send_response(send, Response(404, b"no such stream\n", "text/plain"))
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ],
        }
    )
    left = asyncio.create_task(wait_disconnect(receive))
    changed = asyncio.Event()
    watcher = (
        asyncio.create_task(_watch_events(app, task_id, changed)) if app.settings.events else None
    )
    try:
        while not left.done():
            try:
                if task_id is None:
                    fragment = pages.overview_live(links, await readings.overview())
                else:
                    page = await readings.task(task_id, request.query.get("queue"))
                    fragment = pages.task_live(links, page) if page else ""
            except ANY_REDIS_ERROR as exc:
                fragment = f'<p class="error">Redis did not answer: {exc}</p>'
            data = "".join(f"data: {line}\n" for line in fragment.splitlines() or [""])
            await send(
                {
                    "type": "http.response.body",
                    "body": (data + "\n").encode(),
                    "more_body": True,
                }
            )
            changed.clear()
            waiting = asyncio.create_task(changed.wait())
            await asyncio.wait(
                {left, waiting}, timeout=PUSH_INTERVAL, return_when="FIRST_COMPLETED"
            )
            waiting.cancel()
    except (ConnectionError, OSError):
        pass  # the browser went away
    finally:
        if watcher is not None:
            watcher.cancel()
        left.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await left


async def _watch_events(app: App, task_id: str | None, changed: asyncio.Event) -> None:
    """Set ``changed`` on every new event (of ``task_id`` only, when given); a
    Redis error just leaves the page on its regular pushes."""
    with contextlib.suppress(AqueueError, *ANY_REDIS_ERROR):
        async for event in app.events():
            if task_id is None or event.task_id == task_id:
                changed.set()
