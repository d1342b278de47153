"""The dashboard as a plain ASGI application: routes, live streams, actions behind a confirmation.

Routes (under wherever it is mounted)::

    GET  /                      overview, live
    GET  /queues/<queue>        next waiting, running and delayed tasks of one queue
    GET  /tasks?state=&queue=&name=   tasks in one state, filtered; ?id=<id> finds one
    GET  /tasks/<id>[?queue=]   one task, live
    GET  /dead[?queue=]         dead letters
    GET  /schedules             periodic tasks, last and next run
    GET  /events/overview       server-sent events: the overview's figures every second
    GET  /events/tasks/<id>     server-sent events: the task's state every second
    GET  /confirm?action=...    the confirmation step of an action
    POST /actions/<action>      abort, retry, replay, purge-dead, purge-queue

Actions change state, so they take two steps: a confirmation page whose form
carries a token bound to the browser's session cookie, then a POST that is
refused without that token (cross-site request forgery) or from another
origin. With ``read_only`` the buttons are not shown and both steps are
refused. With an auth hook or basic auth, every request (assets and event
streams too) is checked before anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from importlib import resources
from urllib.parse import parse_qsl, quote, urlsplit

from .._redis.connection import ANY_REDIS_ERROR
from ..app import App
from ..core.status import TaskStatus
from ..deadletter import purge_dead, replay_dead
from . import pages
from .auth import AuthHook, BasicAuth, allowed, parse_credentials
from .layout import Links
from .live import stream_updates
from .readings import Readings
from .request import Request, Response, read_body, send_response
from .retry import run_again
from .server import Receive, Scope, Send
from .tasks_html import tasks_page

__all__ = ["Dashboard", "Request", "asgi_app"]

logger = logging.getLogger(__name__)

#: Dead letters listed per page.
DEAD_LIMIT = 200
SESSION_COOKIE = "aqueue_session"

_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_ACTIONS = {
    "abort": ("queue", "task"),
    "replay": ("queue", "entry"),
    "purge-dead": ("queue",),
    "purge-queue": ("queue",),
    "retry": ("queue", "task"),
}
#: Tasks listed on the tasks page.
TASKS_LIMIT = 100


class Dashboard:
    """The ASGI application (see the module docstring for its routes)."""

    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        read_only: bool = False,
        auth: AuthHook | None = None,
        basic_auth: str | tuple[str, str] | None = None,
        from_code: bool = True,
        redact: bool = False,
    ) -> None:
        self.app = app
        self.read_only = read_only
        if isinstance(basic_auth, str):
            basic_auth = parse_credentials(basic_auth)
        self.basic = BasicAuth(*basic_auth) if basic_auth else None
        self.auth = auth
        self.readings = Readings(app, from_code, queues, redact_all=redact)
        # Tokens are bound to a session cookie with a secret of this process:
        # a restart only asks for one more confirmation.
        self._secret = secrets.token_bytes(32)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request.from_scope(scope)
        refusal = await self._refusal(request)
        if refusal is not None:
            await read_body(receive)
            await send_response(send, refusal)
            return
        session = request.cookies.get(SESSION_COOKIE) or secrets.token_urlsafe(24)
        links = Links(request.root, self.read_only)
        if request.path.startswith("/events/"):
            await self._stream(request, links, receive, send)
            return
        try:
            response = await self._route(request, links, session, receive)
        except ANY_REDIS_ERROR as exc:
            logger.warning("dashboard: Redis error answering %s: %s", request.path, exc)
            text = f"Redis did not answer ({exc}). The page will work again once it does."
            response = Response(503, pages.message_page(links, "Redis unreachable", text).encode())
        if SESSION_COOKIE not in request.cookies:
            cookie_path = request.root or "/"
            response.headers.append(
                (
                    "set-cookie",
                    f"{SESSION_COOKIE}={session}; Path={cookie_path}; HttpOnly; SameSite=Strict",
                )
            )
        await send_response(send, response, head=request.method == "HEAD")

    async def _refusal(self, request: Request) -> Response | None:
        """A 401/403 answer when the request may not pass, else None."""
        if self.basic is not None and not self.basic(request):
            return Response(
                401,
                b"sign in to see the aqueue dashboard\n",
                "text/plain; charset=utf-8",
                [("www-authenticate", 'Basic realm="aqueue", charset="UTF-8"')],
            )
        if self.auth is not None and not await allowed(self.auth, request):
            return Response(403, b"not allowed\n", "text/plain; charset=utf-8")
        return None

    async def start(self) -> list[str]:
        """Start the background reads and wait for the queues to be known; returns them.

        Without an App that means one search of the keyspace, which can take
        seconds on a big Redis: ``aqueue dashboard`` does it before it listens,
        so no page ever waits for it.
        """
        self.readings.sampler.start()
        self.readings.outcomes.start()
        self.readings.history.start()
        await self.readings.sampler.wait_discovered(timeout=None)
        return await self.readings.queues()

    async def close(self) -> None:
        """Stop the background sampling (a mounted dashboard: at the web app's shutdown)."""
        await self.readings.sampler.stop()
        await self.readings.outcomes.stop()
        await self.readings.history.stop()

    def csrf_token(self, session: str) -> str:
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()

    # -- routing -------------------------------------------------------------------

    async def _route(
        self, request: Request, links: Links, session: str, receive: Receive
    ) -> Response:
        path, method, query = request.path, request.method, request.query
        notice = query.get("notice")
        if method == "POST" and path.startswith("/actions/"):
            return await self._act(request, path.removeprefix("/actions/"), session, receive)
        if method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", "text/plain; charset=utf-8")
        if path == "/":
            data = await self.readings.overview()
            return _html(pages.overview_page(links, data, notice))
        if path.startswith("/static/"):
            return _static(path.removeprefix("/static/"))
        if path == "/tasks":
            task_id = query.get("id", "").strip()
            if task_id:
                return _redirect(links.task(task_id))
            return await self._tasks(links, query)
        if path.startswith("/tasks/"):
            task_id = path.removeprefix("/tasks/")
            page = await self.readings.task(task_id, query.get("queue"))
            if page is None:
                text = f"No queue holds a record of task {task_id} (unknown, or expired)."
                return _html(pages.message_page(links, "Task not found", text), 404)
            return _html(pages.task_page(links, page, notice))
        if path.startswith("/queues/"):
            queue = path.removeprefix("/queues/")
            return _html(pages.queue_page(links, await self.readings.queue_page(queue), notice))
        if path == "/dead":
            wanted = query.get("queue") or None
            letters = await self.readings.dead(wanted, DEAD_LIMIT)
            queues = await self.readings.queues()
            return _html(pages.dead_page(links, letters, queues, wanted, notice))
        if path == "/schedules":
            return _html(pages.schedules_page(links, await self.readings.schedules()))
        if path == "/confirm":
            action = query.get("action", "")
            if self.read_only:
                return _refused(links, "This dashboard is read-only.")
            if action not in _ACTIONS or any(not query.get(k) for k in _ACTIONS[action]):
                return _html(pages.message_page(links, "Unknown action", action), 400)
            fields = {k: query[k] for k in _ACTIONS[action]}
            token = self.csrf_token(session)
            return _html(pages.confirm_page(links, action, fields, token))
        return _html(pages.message_page(links, "Not found", f"Nothing at {path}."), 404)

    async def _tasks(self, links: Links, query: dict[str, str]) -> Response:
        known = await self.readings.queues()
        queue = query.get("queue") or None
        name = query.get("name") or None
        try:
            state = TaskStatus(query.get("state") or "queued")
        except ValueError:
            text = f"{query.get('state')!r} is not a state a task can be listed in."
            return _html(pages.message_page(links, "Unknown state", text), 400)
        rows = await self.readings.tasks(state, [queue] if queue else known, name, TASKS_LIMIT)
        heard_from = self.readings.history.charts_from()
        return _html(tasks_page(links, rows, state, known, queue, name, TASKS_LIMIT, heard_from))

    # -- actions ---------------------------------------------------------------------

    async def _act(self, request: Request, action: str, session: str, receive: Receive) -> Response:
        links = Links(request.root, self.read_only)
        if self.read_only:
            return _refused(links, "This dashboard is read-only.")
        if action not in _ACTIONS:
            return _html(pages.message_page(links, "Unknown action", action), 404)
        form = dict(parse_qsl((await read_body(receive)).decode("utf-8", "replace")))
        if not _same_origin(request):
            return _refused(links, "The request came from another site.")
        cookie = request.cookies.get(SESSION_COOKIE)
        token = form.get("csrf", "")
        if not cookie or not hmac.compare_digest(token, self.csrf_token(cookie)):
            return _refused(
                links, "The confirmation token is missing or stale: open the action again."
            )
        if any(not form.get(k) for k in _ACTIONS[action]):
            return _html(pages.message_page(links, "Missing fields", action), 400)
        client = self.app.client
        queue = form["queue"]
        if action == "abort":
            task_id = form["task"]
            changed = await client.abort(queue, task_id)
            notice = "abort requested" if changed else "nothing to abort: the task had finished"
            logger.info("dashboard: abort %s in %s (%s)", task_id, queue, notice)
            return _redirect(
                links.to(f"/tasks/{quote(task_id, safe='')}", queue=queue, notice=notice)
            )
        if action == "retry":
            task_id = form["task"]
            notice = await run_again(client, queue, task_id)
            logger.info("dashboard: run %s of %s again (%s)", task_id, queue, notice)
            return _redirect(
                links.to(f"/tasks/{quote(task_id, safe='')}", queue=queue, notice=notice)
            )
        if action == "replay":
            replayed = await replay_dead(client, [queue], [form["entry"]])
            notice = (
                f"dead letter {form['entry']} is back in queue {queue}"
                if replayed
                else f"dead letter {form['entry']} was not found (replayed or purged already?)"
            )
            logger.info("dashboard: replay %s of %s (%d)", form["entry"], queue, len(replayed))
            return _redirect(links.to("/dead", queue=queue, notice=notice))
        if action == "purge-dead":
            count = await purge_dead(client, [queue])
            logger.info("dashboard: purged %d dead letters of %s", count, queue)
            notice = f"deleted {count} dead-lettered message(s) of {queue}"
            return _redirect(links.to("/dead", queue=queue, notice=notice))
        from_stream, from_delayed = await client.purge(queue)
        logger.info("dashboard: purged %d+%d tasks of %s", from_stream, from_delayed, queue)
        notice = f"purged {from_stream} waiting and {from_delayed} delayed task(s)"
        return _redirect(links.to(f"/queues/{quote(queue, safe='')}", notice=notice))

    # -- live updates ------------------------------------------------------------------

    async def _stream(self, request: Request, links: Links, receive: Receive, send: Send) -> None:
        await stream_updates(self.app, self.readings, request, links, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def asgi_app(
    app: App,
    *,
    queues: Sequence[str] | None = None,
    read_only: bool = False,
    auth: AuthHook | None = None,
    basic_auth: str | tuple[str, str] | None = None,
    redact: bool = False,
) -> Dashboard:
    """The dashboard of ``app`` as an ASGI application, to mount in a web app.

    ``queues`` limits it to those queues (default: the App's). ``read_only``
    hides and refuses every action. ``auth`` is a hook that sees every
    request (see :mod:`aqueue.dashboard.auth`); ``basic_auth`` (``"user:password"``
    or a pair) asks for HTTP basic credentials. With both, both must pass.
    ``redact`` hides every task's arguments, results and chunks (a task's own
    ``@app.task(redact=...)`` setting does it for that task alone).
    """
    return Dashboard(
        app,
        queues=queues,
        read_only=read_only,
        auth=auth,
        basic_auth=basic_auth,
        redact=redact,
    )


# -- responses ---------------------------------------------------------------------


def _html(text: str, status: int = 200) -> Response:
    return Response(status, text.encode())


def _redirect(location: str) -> Response:
    return Response(303, b"", "text/plain", [("location", location)])


def _refused(links: Links, why: str) -> Response:
    return Response(403, pages.message_page(links, "Refused", why).encode())


def _static(name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or suffix not in _STATIC_TYPES:
        return Response(404, b"not found\n", "text/plain")
    try:
        body = resources.files(__package__).joinpath("static", name).read_bytes()
    except FileNotFoundError:
        return Response(404, b"not found\n", "text/plain")
    return Response(200, body, _STATIC_TYPES[suffix], [("cache-control", "max-age=300")])


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin.

    Behind a reverse proxy that rewrites ``Host``, the proxy's
    ``X-Forwarded-Host`` names the address the browser used.
    """
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin != "null"
    hosts = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")}
    return urlsplit(origin).netloc in hosts - {""}
