"""The dashboard's tasks pages over HTTP against a real Redis and a real worker.

Tasks by state with filters, the latency chart, running a failed task again
(confirmation + session token, hidden when read-only), per-task redaction,
a task's timeline, stream chunks and next workflow step.
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
from aqueue.dashboard import Dashboard, asgi_app, serve

from .conftest import ROOT, free_port, running_worker, wait_until, worker_env

ATTEMPTS: dict[str, int] = {}


def _register(app: aqueue.App) -> dict[str, Any]:
    @app.task(name="shop.charge")
    async def charge(card: str, cents: int) -> str:
        return f"charged {cents}"

    @app.task(name="shop.refund")
    async def refund(order: int) -> None:
        ATTEMPTS[f"refund-{order}"] = ATTEMPTS.get(f"refund-{order}", 0) + 1
        if ATTEMPTS[f"refund-{order}"] == 1:
            raise ValueError(f"refund {order} refused by the bank")

    @app.task(name="vault.store", redact=True)
    async def store(secret: str) -> str:
        return f"stored {secret}"

    @app.task(name="vault.mask", redact=lambda v: "***" if isinstance(v, tuple) else v)
    async def mask(secret: str) -> str:
        return "visible result"

    @app.task(name="feed.tick")
    async def ticks(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield {"tick": i}

    return {
        "charge": charge,
        "refund": refund,
        "store": store,
        "mask": mask,
        "ticks": ticks,
    }


@pytest.fixture
async def served(app: aqueue.App) -> AsyncIterator[tuple[Dashboard, httpx.AsyncClient]]:
    web = asgi_app(app)
    server = await serve(web, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            await http.get("/")  # the dashboard starts listening for outcomes
            await wait_until(lambda: "default" in web.readings.outcomes.listening, timeout=10)
            yield web, http
    finally:
        await server.close()
        await web.close()


def _ids(html: str) -> list[str]:
    return re.findall(r'href="/tasks/([0-9a-f]{32})', html)


async def _listed(http: httpx.AsyncClient, task_id: str, **params: str) -> bool:
    return task_id in (await http.get("/tasks", params=params)).text


async def test_tasks_by_state_with_filters(
    app: aqueue.App, served: tuple[Dashboard, httpx.AsyncClient]
) -> None:
    tasks = _register(app)
    _, http = served
    async with running_worker(app, concurrency=4):
        paid = await tasks["charge"].enqueue("4242", 500)
        assert await paid.get(timeout=10) == "charged 500"
        failed = await tasks["refund"].enqueue(7)
        with pytest.raises(aqueue.TaskFailed):
            await failed.get(timeout=10)
        await wait_until(lambda: _listed(http, failed.id, state="failed"), timeout=10)
    waiting = await tasks["charge"].enqueue("1111", 1)
    other = await tasks["refund"].enqueue(8)
    later = await tasks["charge"].options(delay=3600).enqueue("2222", 2)

    queued = await http.get("/tasks")  # queued is the first tab
    assert queued.status_code == 200
    assert set(_ids(queued.text)) == {waiting.id, other.id}
    by_name = await http.get("/tasks", params={"state": "queued", "name": "CHARGE"})
    assert _ids(by_name.text) == [waiting.id]
    by_queue = await http.get("/tasks", params={"state": "queued", "queue": "nowhere"})
    assert _ids(by_queue.text) == [] and "matches these filters" in by_queue.text
    assert _ids((await http.get("/tasks", params={"state": "scheduled"})).text) == [later.id]
    assert _ids((await http.get("/tasks", params={"state": "succeeded"})).text) == [paid.id]
    failed_page = await http.get("/tasks", params={"state": "failed"})
    assert _ids(failed_page.text) == [failed.id] and "ValueError" in failed_page.text
    assert "bank" not in failed_page.text  # the list shows the type; the task page the message
    bad = await http.get("/tasks", params={"state": "nonsense"})
    assert bad.status_code == 400 and "not a state" in bad.text
    assert (await http.get("/tasks", params={"id": paid.id})).status_code == 303


async def test_a_failed_task_runs_again_behind_a_confirmation(
    app: aqueue.App, served: tuple[Dashboard, httpx.AsyncClient]
) -> None:
    tasks = _register(app)
    _, http = served
    async with running_worker(app, concurrency=2):
        failed = await tasks["refund"].enqueue(41)
        with pytest.raises(aqueue.TaskFailed):
            await failed.get(timeout=10)
    page = await http.get(f"/tasks/{failed.id}")
    assert "Run this task again" in page.text
    assert "[41]" in page.text  # a failed task's arguments, from its kept message
    assert "refund 41 refused by the bank" in page.text
    refused = await http.post("/actions/retry", data={"queue": "default", "task": failed.id})
    assert refused.status_code == 403
    confirm = await http.get(
        "/confirm", params={"action": "retry", "queue": "default", "task": failed.id}
    )
    assert "Run failed task" in confirm.text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', confirm.text)
    assert token
    form = {"queue": "default", "task": failed.id, "csrf": token[1]}
    done = await http.post("/actions/retry", data=form)
    assert done.status_code == 303 and "back+in+queue" in done.headers["location"]
    assert await failed.status() is aqueue.TaskStatus.QUEUED
    async with running_worker(app, concurrency=2):
        assert await failed.get(timeout=10) is None  # the second run succeeds
    assert ATTEMPTS["refund-41"] == 2
    # Once it succeeded, there is nothing to run again.
    again = await http.post("/actions/retry", data=form)
    assert "only+a+failed+task" in again.headers["location"]
    assert await failed.status() is aqueue.TaskStatus.SUCCEEDED


async def test_read_only_hides_the_retry_button(app: aqueue.App) -> None:
    tasks = _register(app)
    async with running_worker(app, concurrency=2):
        failed = await tasks["refund"].enqueue(99)
        with pytest.raises(aqueue.TaskFailed):
            await failed.get(timeout=10)
    web = asgi_app(app, read_only=True)
    server = await serve(web, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            page = await http.get(f"/tasks/{failed.id}")
            assert "Run this task again" not in page.text and "read-only" in page.text
            confirm = await http.get(
                "/confirm", params={"action": "retry", "queue": "default", "task": failed.id}
            )
            assert confirm.status_code == 403
            posted = await http.post(
                "/actions/retry", data={"queue": "default", "task": failed.id, "csrf": "0"}
            )
            assert posted.status_code == 403
    finally:
        await server.close()
        await web.close()
    assert await failed.status() is aqueue.TaskStatus.FAILED


async def test_redacted_tasks_show_neither_arguments_nor_results(
    app: aqueue.App, served: tuple[Dashboard, httpx.AsyncClient]
) -> None:
    tasks = _register(app)
    _, http = served
    hidden = await tasks["store"].options(delay=600).enqueue("hunter2")
    masked = await tasks["mask"].options(delay=600).enqueue("hunter3")
    plain = await tasks["charge"].options(delay=600).enqueue("4242", 5)
    for handle, secret in ((hidden, "hunter2"), (masked, "hunter3")):
        page = await http.get(f"/tasks/{handle.id}")
        assert secret not in page.text
    assert "(redacted)" in (await http.get(f"/tasks/{hidden.id}")).text
    assert "***" in (await http.get(f"/tasks/{masked.id}")).text
    assert "4242" in (await http.get(f"/tasks/{plain.id}")).text
    await app.client.purge("default")
    async with running_worker(app, concurrency=2):
        stored = await tasks["store"].enqueue("hunter4")
        assert await stored.get(timeout=10) == "stored hunter4"
        shown = await tasks["mask"].enqueue("hunter5")
        await shown.get(timeout=10)
    assert "hunter4" not in (await http.get(f"/tasks/{stored.id}")).text
    assert "visible result" in (await http.get(f"/tasks/{shown.id}")).text
    # redact=True on the dashboard hides every task's values.
    web = asgi_app(app, redact=True)
    server = await serve(web, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as other:
            page = await other.get(f"/tasks/{shown.id}")
            assert "visible result" not in page.text and "(redacted)" in page.text
    finally:
        await server.close()
        await web.close()


async def test_a_task_page_shows_its_timeline_chunks_and_next_step(
    app: aqueue.App, served: tuple[Dashboard, httpx.AsyncClient]
) -> None:
    tasks = _register(app)
    _, http = served
    async with running_worker(app, concurrency=2):
        streamed = await tasks["ticks"].enqueue(3)
        assert await streamed.get(timeout=10) == [{"tick": 0}, {"tick": 1}, {"tick": 2}]
    page = await http.get(f"/tasks/{streamed.id}")
    assert "Stream (3 chunks)" in page.text and "{&quot;tick&quot;:2}" in page.text
    assert "Timeline" in page.text and "attempt 1 started" in page.text
    flow = await aqueue.chain(
        tasks["charge"].s("4242", 1).options(delay=600), tasks["refund"].si(1)
    ).enqueue()
    assert flow.parent is not None
    first = await http.get(f"/tasks/{flow.parent.id}")
    assert "next step (shop.refund)" in first.text and flow.id in first.text


async def test_the_overview_draws_latency_from_finished_tasks(
    app: aqueue.App, served: tuple[Dashboard, httpx.AsyncClient]
) -> None:
    tasks = _register(app)
    web, http = served
    async with running_worker(app, concurrency=4):
        handles = [await tasks["charge"].enqueue("4242", i) for i in range(20)]
        for h in handles:
            await h.get(timeout=10)

        async def sampled() -> bool:
            return bool(web.readings.outcomes.latency.get("default"))

        await wait_until(sampled, timeout=10)
    overview = await http.get("/")
    assert "enqueue to finish" in overview.text
    latency = re.search(r'<span class="chart latency">(.*?)</span></span>', overview.text)
    assert latency and "<rect" in latency.group(1)
    assert await asyncio.wait_for(http.get("/tasks", params={"state": "succeeded"}), 10)


async def test_with_only_the_url_finished_tasks_are_listed_too(
    app: aqueue.App, redis_url: str, prefix: str
) -> None:
    tasks = _register(app)
    await app.client.broker.ensure_group("default")  # the queue exists before the search
    web = Dashboard(aqueue.App(redis_url, prefix=prefix), from_code=False)
    await web.start()
    server = await serve(web, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            # Found by a search of the keyspace at start: listened to soon after.
            await wait_until(lambda: "default" in web.readings.outcomes.listening, timeout=10)
            async with running_worker(app, concurrency=2):
                done = await tasks["charge"].enqueue("4242", 3)
                await done.get(timeout=10)
                await wait_until(lambda: _listed(http, done.id, state="succeeded"), timeout=10)
            page = await http.get("/tasks", params={"state": "succeeded", "name": "shop"})
            assert _ids(page.text) == [done.id]
    finally:
        await server.close()
        await web.close()
        await web.app.close()


@pytest.mark.parametrize("from_code", [True, False])
async def test_no_tasks_page_scans_the_keyspace(app: aqueue.App, from_code: bool) -> None:
    tasks = _register(app)
    async with running_worker(app, concurrency=2):
        failed = await tasks["refund"].enqueue(501 if from_code else 502)
        with pytest.raises(aqueue.TaskFailed):
            await failed.get(timeout=10)
    await tasks["charge"].enqueue("4242", 1)
    web = Dashboard(app, from_code=from_code)
    await web.start()  # without an App: the one search for queues, before listening
    server = await serve(web, "127.0.0.1", 0)
    client = app.client.broker.client

    async def scans() -> int:
        stats = await client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("scan", "keys"))

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            before = await scans()
            for state in ("queued", "running", "scheduled", "retrying", "succeeded", "failed"):
                for params in (
                    {"state": state},
                    {"state": state, "name": "shop", "queue": "default"},
                ):
                    assert (await http.get("/tasks", params=params)).status_code == 200
            assert "Run this task again" in (await http.get(f"/tasks/{failed.id}")).text
            assert await scans() == before
    finally:
        await server.close()
        await web.close()


async def test_the_cli_dashboard_redacts_every_task_with_redact(
    redis_url: str, prefix: str
) -> None:
    # refund() declares no redaction: only the flag hides its argument.
    producer = aqueue.App(redis_url, prefix=prefix)
    refund = producer.task(name="dashboard_tasks_app.refund")(_refund_signature)
    waiting = await refund.options(delay=600).enqueue(424242)
    port = free_port()
    command = ["dashboard", "-A", "dashboard_tasks_app:app", "--port", str(port), "--redact"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aqueue", *command],
        env=worker_env(redis_url, prefix),
        cwd=str(ROOT / "tests" / "apps"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def answers() -> bool:
                try:
                    return (await http.get("/static/dashboard.css")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(answers, 30)
            page = await http.get(f"/tasks/{waiting.id}")
            assert page.status_code == 200
            assert "424242" not in page.text and "(redacted)" in page.text
    finally:
        proc.terminate()
        proc.wait(10)
        await producer.close()


async def _refund_signature(order: int) -> str:
    raise AssertionError("runs on the worker")
