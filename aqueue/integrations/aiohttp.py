"""aiohttp.web: open the aqueue connection once for the web app's life.

::

    from aiohttp import web
    from aqueue.integrations.aiohttp import cleanup_ctx

    web_app = web.Application()
    web_app.cleanup_ctx.append(cleanup_ctx(queue_app))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import App

__all__ = ["cleanup_ctx"]


def cleanup_ctx(app: App) -> Callable[[Any], AsyncIterator[None]]:
    """An ``aiohttp.web.Application.cleanup_ctx`` entry for ``app``."""

    async def ctx(web_app: Any) -> AsyncIterator[None]:
        await app.connect()  # fail fast at startup when Redis is unreachable
        try:
            yield
        finally:
            await app.close()

    return ctx
