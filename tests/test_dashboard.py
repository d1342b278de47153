"""The web dashboard over HTTP (its own server, a FastAPI mount, the CLI) against a real Redis.

Browser tests, which drive the same pages in headless Chromium, are in
``test_dashboard_browser.py``.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import aqueue
from aqueue.dashboard import Dashboard, Request, asgi_app, serve

from .conftest import ROOT, free_port, running_worker, wait_until, worker_env


def _register(app: aqueue.App) -> dict[str, aqueue.Task]:  # type: ignore[type-arg]
    @app.task(name="ok")
    async def ok(x: int) -> int:
        return x * 2

    @app.task(name="boom")
    async def boom(text: str) -> None:
        raise ValueError(f"bad input: {text}")

    @app.task(name="slow")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    return {"ok": ok, "boom": boom, "slow": slow}


@pytest.fixture
async def served(app: aqueue.App) -> AsyncIterator[tuple[Dashboard, httpx.AsyncClient]]:
    web = asgi_app(app)
    server = await serve(web, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            yield web, http
    finally:
        await server.close()
        await web.close()


async def test_pages_show_queues_tasks_errors_and_dead_letters(
    app: aqueue.App, served: tuple[Dashboard, httpx.AsyncClient]
) -> None:
    tasks = _register(app)
    _, http = served
    async with running_worker(app, concurrency=4):
        done = await tasks["ok"].enqueue(21)
        assert await done.get(timeout=10) == 42
        failed = await tasks["boom"].enqueue("<script>")
        with pytest.raises(aqueue.TaskFailed):
            await failed.get(timeout=10)
    waiting = [await tasks["ok"].enqueue(i) for i in range(3)]
    later = await tasks["slow"].options(delay=600).enqueue(1.5)
    await app.client.broker.client.xadd(
        f"{app.settings.prefix}:{{default}}:stream", {"id": "garbage-1", "m": b"\x00not"}
    )

    overview = await http.get("/")
    assert overview.status_code == 200
    assert "text/html" in overview.headers["content-type"]
    row = re.search(r"<tr><td><a [^>]*>default</a>.*?</tr>", overview.text)
    assert row, overview.text
    figures = dict(re.findall(r'data-figure="(\w+)"[^>]*>(\d+)<', row.group(0)))
    assert figures == {"waiting": "4", "running": "0", "delayed": "1", "dead": "0"}
    assert "<svg" in overview.text and "no live worker" in overview.text

    page = await http.get(f"/tasks/{failed.id}")
    assert page.status_code == 200
    assert "failed" in page.text and "ValueError" in page.text
    assert "Traceback (most recent call last)" in page.text
    assert "&lt;script&gt;" in page.text and "<script>" not in page.text.split("</head>")[1]
    assert "42" in (await http.get(f"/tasks/{done.id}")).text
    delayed = await http.get(f"/tasks/{later.id}")
    assert "scheduled" in delayed.text and "[1.5]" in delayed.text  # its arguments
    assert (await http.get("/tasks", params={"id": done.id})).status_code == 303
    assert (await http.get("/tasks/no-such-task")).status_code == 404

    queue = await http.get("/queues/default")
    assert all(h.id in queue.text for h in waiting) and later.id in queue.text

    async with running_worker(app, concurrency=4):
        await wait_until(lambda: _dead_count(http), timeout=10)
    dead = await http.get("/dead")
    assert "garbage-1" in dead.text and "undecodable" in dead.text

    schedules = await http.get("/schedules")
    assert schedules.status_code == 200 and "no periodic tasks" in schedules.text
    await app.schedules.add("nightly", tasks["ok"], cron="0 3 * * *", args=(1,))
    await app.schedules.pause("nightly")
    stored = (await http.get("/schedules")).text
    assert "nightly" in stored and "(kept in Redis, paused)" in stored
    css = await http.get("/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await http.get("/static/../asgi.py")).status_code == 404


async def _dead_count(http: httpx.AsyncClient) -> bool:
    return "garbage-1" in (await http.get("/dead")).text


async def test_open_pages_receive_fresh_figures_as_server_sent_events(
    app: aqueue.App, served: tuple[Dashboard, httpx.AsyncClient]
) -> None:
    tasks = _register(app)
    _, http = served
    await tasks["ok"].enqueue(1)
    async with http.stream("GET", "/events/overview") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        seen: list[str] = []
        async for line in events.aiter_lines():
            seen.append(line)
            if seen.count("") == 2:  # a blank line ends an event
                break
    events_text = "\n".join(seen).split("\n\n")
    assert all(e.startswith("data: ") for e in events_text[:2])
    assert all('data-figure="waiting">1<' in e for e in events_text[:2])


async def test_actions_take_a_confirmation_with_a_session_token(
    app: aqueue.App, served: tuple[Dashboard, httpx.AsyncClient]
) -> None:
    tasks = _register(app)
    _, http = served
    handle = await tasks["slow"].options(delay=600).enqueue(1.0)

    # Without the confirmation page's token, nothing happens.
    refused = await http.post("/actions/abort", data={"queue": "default", "task": handle.id})
    assert refused.status_code == 403
    forged = await http.post(
        "/actions/abort", data={"queue": "default", "task": handle.id, "csrf": "0" * 64}
    )
    assert forged.status_code == 403
    assert await handle.status() is aqueue.TaskStatus.SCHEDULED

    confirm = await http.get(
        "/confirm", params={"action": "abort", "queue": "default", "task": handle.id}
    )
    assert confirm.status_code == 200 and "Abort task" in confirm.text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', confirm.text)
    assert token
    form = {"queue": "default", "task": handle.id, "csrf": token.group(1)}
    other_site = await http.post(
        "/actions/abort", data=form, headers={"origin": "http://evil.example"}
    )
    assert other_site.status_code == 403
    assert await handle.status() is aqueue.TaskStatus.SCHEDULED
    done = await http.post("/actions/abort", data=form)
    assert done.status_code == 303 and "abort+requested" in done.headers["location"]
    assert await handle.status() is aqueue.TaskStatus.ABORTED

    # A token belongs to its session: another browser can't reuse it.
    async with httpx.AsyncClient(base_url=str(http.base_url)) as stranger:
        assert (await stranger.post("/actions/abort", data=form)).status_code == 403

    purge = await http.get("/confirm", params={"action": "purge-queue", "queue": "default"})
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', purge.text)
    assert token
    await tasks["ok"].enqueue(1)
    done = await http.post("/actions/purge-queue", data={"queue": "default", "csrf": token[1]})
    assert done.status_code == 303
    assert (await app.client.views.queue_figures("default"))["waiting"] == 0


async def test_read_only_hides_and_refuses_every_action(app: aqueue.App) -> None:
    tasks = _register(app)
    handle = await tasks["slow"].options(delay=600).enqueue(1.0)
    web = asgi_app(app, read_only=True)
    server = await serve(web, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            page = await http.get(f"/tasks/{handle.id}")
            assert page.status_code == 200 and "read-only" in page.text
            assert "/confirm" not in page.text
            assert "/confirm" not in (await http.get("/dead")).text
            confirm = await http.get(
                "/confirm", params={"action": "abort", "queue": "default", "task": handle.id}
            )
            assert confirm.status_code == 403
            post = await http.post("/actions/abort", data={"queue": "default", "task": handle.id})
            assert post.status_code == 403
    finally:
        await server.close()
        await web.close()
    assert await handle.status() is aqueue.TaskStatus.SCHEDULED


async def test_mounted_in_fastapi_links_stay_under_the_mount(app: aqueue.App) -> None:
    fastapi = pytest.importorskip("fastapi")
    tasks = _register(app)
    handle = await tasks["ok"].enqueue(3)
    web = fastapi.FastAPI()
    dashboard = asgi_app(app)
    web.mount("/ops/aqueue", dashboard)
    transport = httpx.ASGITransport(app=web)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            page = await http.get("/ops/aqueue/")
            assert page.status_code == 200
            assert 'href="/ops/aqueue/queues/default"' in page.text
            assert "href='/ops/aqueue/static/dashboard.css'" in page.text
            task = await http.get(f"/ops/aqueue/tasks/{handle.id}")
            assert task.status_code == 200 and "queued" in task.text
    finally:
        await dashboard.close()


async def test_cli_dashboard_needs_only_the_redis_url(redis_url: str, prefix: str) -> None:
    app = aqueue.App(redis_url, prefix=prefix)
    tasks = _register(app)
    await tasks["ok"].options(queue="reports").enqueue(5)
    await app.close()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aqueue",
            "dashboard",
            "--url",
            redis_url,
            "--prefix",
            prefix,
            "--port",
            str(port),
        ],
        env=worker_env(redis_url, "unused-prefix"),
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def answers() -> bool:
                try:
                    return (await http.get("/")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(answers, timeout=20, interval=0.1)
            page = (await http.get("/")).text
            assert ">reports</a>" in page
            assert 'data-figure="waiting">1<' in page
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output
    assert f"serving http://127.0.0.1:{port}/" in output


PAGES = [
    "/",
    "/queues/default",
    "/tasks/{id}",
    "/tasks?id={id}",
    "/dead",
    "/schedules",
    "/events/overview",
    "/events/tasks/{id}",
    "/static/dashboard.css",
    "/static/dashboard.js",
    "/confirm?action=abort&queue=default&task={id}",
    "/no-such-page",
]
ACTIONS = {
    "abort": {"queue": "default", "task": "{id}"},
    "replay": {"queue": "default", "entry": "0-1"},
    "purge-dead": {"queue": "default"},
    "purge-queue": {"queue": "default"},
}


async def test_with_basic_auth_every_page_and_action_is_refused_without_credentials(
    app: aqueue.App,
) -> None:
    tasks = _register(app)
    handle = await tasks["slow"].options(delay=600).enqueue(1.0)
    waiting = await tasks["ok"].enqueue(1)
    web = asgi_app(app, basic_auth="ops:s3cret")
    server = await serve(web, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        for auth in (None, ("ops", "wrong"), ("someone", "s3cret")):
            async with httpx.AsyncClient(base_url=base, auth=auth) as http:
                for path in PAGES:
                    response = await http.get(path.format(id=handle.id))
                    assert response.status_code == 401, (auth, path)
                    assert response.headers["www-authenticate"].startswith("Basic")
                    assert handle.id not in response.text
                for action, form in ACTIONS.items():
                    fields = {k: v.format(id=handle.id) for k, v in form.items()}
                    response = await http.post(f"/actions/{action}", data=fields)
                    assert response.status_code == 401, (auth, action)
        assert await handle.status() is aqueue.TaskStatus.SCHEDULED
        assert await waiting.status() is aqueue.TaskStatus.QUEUED

        async with httpx.AsyncClient(base_url=base, auth=("ops", "s3cret")) as http:
            assert (await http.get("/")).status_code == 200
            page = await http.get(f"/tasks/{handle.id}")
            assert page.status_code == 200 and handle.id in page.text
    finally:
        await server.close()
        await web.close()


async def test_an_auth_hook_sees_each_request_and_a_failing_hook_refuses(
    app: aqueue.App,
) -> None:
    seen: list[str] = []

    async def only_ops(request: Request) -> bool:
        seen.append(request.path)
        if request.headers.get("x-broken") == "1":
            raise RuntimeError("the session store is down")
        return request.headers.get("x-team") == "ops"

    web = asgi_app(app, auth=only_ops)
    server = await serve(web, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/")).status_code == 403
            assert (await http.get("/dead", headers={"x-team": "dev"})).status_code == 403
            assert (await http.get("/", headers={"x-team": "ops"})).status_code == 200
            broken = await http.get("/", headers={"x-team": "ops", "x-broken": "1"})
            assert broken.status_code == 403
            refused = await http.post("/actions/purge-queue", data={"queue": "default"})
            assert refused.status_code == 403
    finally:
        await server.close()
        await web.close()
    assert seen[:3] == ["/", "/dead", "/"] and "/actions/purge-queue" in seen


async def test_cli_dashboard_takes_basic_auth_from_the_environment(
    redis_url: str, prefix: str
) -> None:
    port = free_port()
    env = worker_env(redis_url, prefix, AQUEUE_DASHBOARD_AUTH="ops:s3cret")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aqueue", "dashboard", "--url", redis_url, "--port", str(port)],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def answers() -> bool:
                try:
                    return (await http.get("/")).status_code == 401
                except httpx.TransportError:
                    return False

            await wait_until(answers, timeout=20, interval=0.1)
            assert (await http.get("/", auth=("ops", "s3cret"))).status_code == 200
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output

    bad = subprocess.run(
        [sys.executable, "-m", "aqueue", "dashboard", "--url", redis_url, "--basic-auth", "ops"],
        env=worker_env(redis_url, prefix),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1 and "USER:PASSWORD" in bad.stderr


async def test_head_requests_and_a_proxy_that_rewrites_the_host(
    app: aqueue.App, served: tuple[Dashboard, httpx.AsyncClient]
) -> None:
    tasks = _register(app)
    _, http = served
    head = await http.head("/")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0

    handle = await tasks["slow"].options(delay=600).enqueue(1.0)
    confirm = await http.get(
        "/confirm", params={"action": "abort", "queue": "default", "task": handle.id}
    )
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', confirm.text)
    assert token
    form = {"queue": "default", "task": handle.id, "csrf": token[1]}
    proxied = {"origin": "https://ops.example.com", "x-forwarded-host": "ops.example.com"}
    done = await http.post("/actions/abort", data=form, headers=proxied)
    assert done.status_code == 303
    assert await handle.status() is aqueue.TaskStatus.ABORTED


async def _scans(app: aqueue.App) -> int:
    stats = await app.client.broker.client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("scan", "keys"))


@pytest.mark.parametrize("from_code", [True, False])
async def test_no_page_load_scans_the_keyspace(app: aqueue.App, from_code: bool) -> None:
    tasks = _register(app)
    handle = await tasks["ok"].enqueue(1)
    web = Dashboard(app, from_code=from_code)
    await web.start()  # without an App: the one search for queues, before listening
    server = await serve(web, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            before = await _scans(app)
            for path in PAGES:
                if path.startswith("/events/"):
                    async with http.stream("GET", path.format(id=handle.id)) as events:
                        async for line in events.aiter_lines():
                            if not line:  # the end of the first event
                                break
                else:
                    await http.get(path.format(id=handle.id))
            assert "default" in (await http.get("/")).text
            assert await _scans(app) == before
    finally:
        await server.close()
        await web.close()


async def test_beside_an_aiohttp_app_as_docs_observability_shows(app: aqueue.App) -> None:
    aiohttp_web = pytest.importorskip("aiohttp.web")
    port = free_port()

    async def aqueue_dashboard(web_app: Any) -> AsyncIterator[None]:
        dashboard = asgi_app(app, basic_auth="ops:s3cret")
        server = await serve(dashboard, "127.0.0.1", port)
        yield
        await server.close()
        await dashboard.close()

    web_app = aiohttp_web.Application()
    web_app.cleanup_ctx.append(aqueue_dashboard)
    runner = aiohttp_web.AppRunner(web_app)
    await runner.setup()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/")).status_code == 401
            page = await http.get("/", auth=("ops", "s3cret"))
            assert page.status_code == 200 and "Overview" in page.text
    finally:
        await runner.cleanup()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/")
