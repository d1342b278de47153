"""Tasks of ``aqueue demo``: a worker process imports this module.

The demo passes its Redis URL and its own key prefix through the
environment, so it never touches keys it did not create.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from ..app import App

app = App(
    os.environ.get("AQUEUE_DEMO_URL"),
    prefix=os.environ.get("AQUEUE_DEMO_PREFIX", "aqueue-demo"),
)


@app.task(queue="demo")
async def notify(user_id: int, message: str) -> str:
    """Stands in for a call to an external notification API."""
    await asyncio.sleep(0.005)
    return f"sent to user {user_id}: {message}"


@app.task(queue="demo")
def thumbnail(data: bytes, size: int) -> str:
    """Stands in for CPU-bound image work (runs in the worker's thread pool)."""
    return hashlib.sha256(data * size).hexdigest()[:16]


@app.task(queue="demo")
async def noop() -> None:
    """Nothing at all: measures aqueue's own overhead."""
