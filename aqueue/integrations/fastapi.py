"""FastAPI / Starlette: open the aqueue connection once for the web app's life.

::

    from fastapi import FastAPI
    from aqueue.integrations.fastapi import lifespan

    web = FastAPI(lifespan=lifespan(queue_app))

``lifespan(queue_app, inner)`` wraps an existing lifespan of your own.
Nothing from FastAPI is imported: it is the plain ASGI lifespan protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import App

__all__ = ["lifespan"]

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]


def lifespan(app: App, inner: Lifespan | None = None) -> Lifespan:
    """A lifespan that connects ``app`` at startup and closes it at shutdown."""

    @contextlib.asynccontextmanager
    async def run(web_app: Any) -> AsyncIterator[Any]:
        await app.connect()  # fail fast at startup when Redis is unreachable
        try:
            if inner is None:
                yield None
            else:
                async with inner(web_app) as state:
                    yield state
        finally:
            await app.close()

    return run
