"""The web dashboard: live queues and workers, tasks, dead letters, schedules, actions.

``aqueue dashboard`` serves it (see ``docs/observability.md``); in a web app,
mount :func:`asgi_app` (plain ASGI, no framework needed)::

    from aqueue.dashboard import asgi_app

    web.mount("/aqueue", asgi_app(queue_app))

Pages are rendered on the server; open pages are kept fresh with server-sent
events; the stylesheet and script ship inside the package, so it works
offline. Modules: :mod:`.asgi` (routes, actions, live streams),
:mod:`.readings` (what is read from Redis), :mod:`.listing` (tasks by
state, recent outcomes), :mod:`.pages` and :mod:`.tasks_html` (HTML),
:mod:`.redaction` (a task's ``redact=``), :mod:`.retry` (run a failed task again),
:mod:`.auth` (the auth hook, basic auth), :mod:`.server` (the small HTTP
server ``aqueue dashboard`` runs).
"""

from __future__ import annotations

from .asgi import Dashboard, asgi_app
from .auth import AuthHook, BasicAuth
from .request import Request
from .server import DashboardServer, serve

__all__ = ["AuthHook", "BasicAuth", "Dashboard", "DashboardServer", "Request", "asgi_app", "serve"]
