"""Helpers for web frameworks; each module imports its framework only when used.

- :mod:`aqueue.integrations.django`: ``autodiscover_tasks`` (also ``app.autodiscover_tasks()``);
- :mod:`aqueue.integrations.fastapi`: ``lifespan(app)`` for FastAPI / Starlette;
- :mod:`aqueue.integrations.aiohttp`: ``cleanup_ctx(app)`` for aiohttp.web;
- :mod:`aqueue.integrations.otel`: ``OpenTelemetryMiddleware`` (``aqueue[otel]``).
"""
