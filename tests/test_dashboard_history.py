"""What the dashboard knows of the time before it started, a task's attempts and its
workflow neighbours, against a real Redis and a real worker.

With events on, the finished lists and the charts are filled from the event
stream's last minutes (one bounded read); without, the pages say the figures
start with the dashboard. A task's page lists every attempt from its events
(the record keeps only the last), and a workflow step links the steps after
it, the group members and the chord's callback.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

import aqueue
from aqueue.dashboard import Dashboard, asgi_app, history, serve
from aqueue.dashboard.history import History
from aqueue.dashboard.listing import RecentOutcomes

from .conftest import running_worker, wait_until


@pytest.fixture
async def events_app(redis_url: str, prefix: str) -> AsyncIterator[aqueue.App]:
    application = aqueue.App(redis_url, prefix=prefix, events=True)
    try:
        yield application
    finally:
        await application.close()


async def _serve(app: aqueue.App) -> tuple[Dashboard, Any, httpx.AsyncClient]:
    web = asgi_app(app)
    server = await serve(web, "127.0.0.1", 0)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}")
    await http.get("/")  # starts the background reads
    return web, server, http


async def _close(web: Dashboard, server: Any, http: httpx.AsyncClient) -> None:
    await http.aclose()
    await server.close()
    await web.close()


def _ids(html: str) -> set[str]:
    return set(re.findall(r'href="/tasks/([0-9a-f]{32})', html))


async def test_a_dashboard_opened_after_a_burst_shows_it(events_app: aqueue.App) -> None:
    app = events_app

    @app.task(name="burst.ok")
    async def ok(n: int) -> int:
        return n

    @app.task(name="burst.boom")
    async def boom() -> None:
        raise ValueError("no")

    async with running_worker(app, concurrency=8):
        done = [await ok.enqueue(n) for n in range(20)]
        failed = await boom.enqueue()
        for handle in done:
            await handle.get(timeout=10)
        with pytest.raises(aqueue.TaskFailed):
            await failed.get(timeout=10)
    web, server, http = await _serve(app)  # after the burst
    try:
        await wait_until(lambda: "default" in web.readings.history.reach, timeout=10)
        succeeded = await http.get("/tasks", params={"state": "succeeded"})
        assert _ids(succeeded.text) == {h.id for h in done}
        assert "read back from the event stream" in succeeded.text
        assert _ids((await http.get("/tasks", params={"state": "failed"})).text) == {failed.id}
        overview = (await http.get("/")).text
        assert "charts go back to" in overview
        latency = overview[overview.index('class="chart latency"') :]
        assert "<rect" in latency[: latency.index("</svg>")]  # drawn from the read-back
        throughput = overview[overview.index('class="chart"') :]
        assert "<rect" in throughput[: throughput.index("</svg>")]
        # The throughput samples before the dashboard's first count back from it:
        # every run that ended (20 successes, 1 failure) once, each at its time.
        samples = list(web.readings.sampler.history["default"].samples)
        counts = [f for _, f in samples if f is not None]
        assert counts == sorted(counts) and counts[-1] - counts[0] == 21
        assert samples[0][0] >= web.readings.history.reach["default"]
    finally:
        await _close(web, server, http)


async def test_without_events_the_pages_say_where_their_figures_start(
    app: aqueue.App,
) -> None:
    web, server, http = await _serve(app)
    try:
        overview = (await http.get("/")).text
        assert "charts start when the dashboard started" in overview
        assert "with events on" in overview
        listed = (await http.get("/tasks", params={"state": "succeeded"})).text
        assert "heard of since the dashboard started" in listed
        assert "reads back the five minutes before it started" in listed
        assert web.readings.history.reach == {}  # nothing read from a stream that isn't there
    finally:
        await _close(web, server, http)


async def test_the_read_back_is_bounded(
    events_app: aqueue.App, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = events_app

    @app.task
    async def noop() -> None:
        return None

    for _ in range(10):  # one stream entry per enqueue call
        await noop.enqueue()
    monkeypatch.setattr(history, "HISTORY_ENTRIES", 4)
    monkeypatch.setattr(history, "PAGE", 3)
    stream = app.client.broker.events.key("default")
    entries = await app.client.broker.client.xrevrange(stream, count=4)
    fourth = int(entries[-1][0].decode().partition("-")[0]) / 1000
    server = aioredis.Redis.from_url(redis_url)
    try:
        before = (await server.info("commandstats"))["cmdstat_xrevrange"]["calls"]
        samples: deque[tuple[float, int | None]] = deque(maxlen=302)
        outcomes = RecentOutcomes(app.client, lambda: ["default"])
        past = History(app.client, outcomes, lambda queue: samples)
        await past.load(["default"])
        calls = (await server.info("commandstats"))["cmdstat_xrevrange"]["calls"] - before
    finally:
        await server.aclose()
    assert calls == 2  # 3 entries, then the last 1: never more than HISTORY_ENTRIES
    # Cut short: it knows only as far back as the oldest entry it read.
    assert past.reach["default"] == fourth
    assert past.charts_from() == (fourth, True)


async def test_a_task_page_lists_every_attempt_from_its_events(events_app: aqueue.App) -> None:
    app = events_app
    runs: dict[str, int] = {}

    @app.task(name="flaky.fetch", retries=2, retry_delay=0.05, retry_jitter=False)
    async def fetch(url: str) -> str:
        runs[url] = runs.get(url, 0) + 1
        if runs[url] < 3:
            raise ConnectionError(f"refused, run {runs[url]}")
        return "page"

    async with running_worker(app, concurrency=2) as worker:
        handle = await fetch.enqueue("https://example.invalid")
        assert await handle.get(timeout=20) == "page"
    web, server, http = await _serve(app)
    try:
        page = await web.readings.task(handle.id)
        assert page is not None and page.attempts is not None
        assert page.attempts.from_events and page.attempts.complete
        rows = [(a.number, a.worker, a.outcome, a.error) for a in page.attempts.rows]
        assert rows == [
            (1, worker.name, "retrying", "ConnectionError: refused, run 1"),
            (2, worker.name, "retrying", "ConnectionError: refused, run 2"),
            (3, worker.name, "succeeded", None),
        ]
        for attempt in page.attempts.rows:
            assert attempt.started is not None and attempt.ended is not None
            assert attempt.started <= attempt.ended and attempt.duration is not None
        html = (await http.get(f"/tasks/{handle.id}")).text
        section = html[html.index('id="attempts"') :]
        assert section.count("<tr>") == 4  # the header and three attempts
        assert "refused, run 2" in section and "every attempt, from the event stream" in section
    finally:
        await _close(web, server, http)


async def test_without_events_the_record_gives_the_last_attempt(app: aqueue.App) -> None:
    runs: list[int] = []

    @app.task(name="flaky.once", retries=1, retry_delay=0.05, retry_jitter=False)
    async def once() -> int:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("first run refused")
        return len(runs)

    async with running_worker(app) as worker:
        handle = await once.enqueue()
        assert await handle.get(timeout=20) == 2
    web, server, http = await _serve(app)
    try:
        page = await web.readings.task(handle.id)
        assert page is not None and page.attempts is not None
        assert not page.attempts.from_events
        assert [(a.number, a.worker, a.outcome) for a in page.attempts.rows] == [
            (2, worker.name, "succeeded")
        ]
        html = (await http.get(f"/tasks/{handle.id}")).text
        assert "the record keeps only the last attempt" in html
    finally:
        await _close(web, server, http)


async def test_a_workflow_step_links_what_comes_after_it(app: aqueue.App) -> None:
    @app.task(name="wf.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="wf.total")
    async def total(values: list[int]) -> int:
        return sum(values)

    # No worker: the first steps wait, so their messages (and what they carry) are read.
    last = await aqueue.chain(add.s(1, 2), add.s(3), add.s(4)).enqueue()
    assert last.parent is not None and last.parent.parent is not None
    first, second = last.parent.parent, last.parent
    fanned = await aqueue.chain(add.s(1, 1), aqueue.group(add.s(5), add.s(6)), total).enqueue()
    assert fanned.parent is not None
    head = fanned.parent
    made = aqueue.chord(aqueue.group(add.s(1, 1), add.s(2, 2)), total)
    callback = await made.enqueue()
    assert made.members is not None
    member = made.members.results[1]
    web, server, http = await _serve(app)
    try:
        page = await web.readings.task(first.id)
        assert page is not None
        assert [(how, tid) for how, _, tid in page.follows] == [
            ("next step (wf.add)", second.id),
            ("step +2 (wf.add)", last.id),
        ]
        html = (await http.get(f"/tasks/{first.id}")).text
        assert f'href="/tasks/{second.id}?queue=default"' in html
        # A group inside a chain: its members, then the chord's callback.
        page = await web.readings.task(head.id)
        assert page is not None
        hows = [how for how, _, _ in page.follows]
        assert hows[:2] == [
            "next step, group member 0 (wf.add)",
            "next step, group member 1 (wf.add)",
        ]
        assert hows[2] == "step +2: wf.total (0 of 2 members ended)"
        assert page.follows[2][2] == fanned.id
        assert all(tid for _, _, tid in page.follows)
        # A chord member: the chord it counts in and its callback.
        page = await web.readings.task(member.id)
        assert page is not None
        assert page.follows == [
            (f"member 1 of chord {made.id}", "default", None),
            ("chord callback: wf.total (0 of 2 members ended)", "default", callback.id),
        ]
    finally:
        await _close(web, server, http)


async def test_a_running_task_lists_its_earlier_attempts_and_the_current_one(
    events_app: aqueue.App,
) -> None:
    app = events_app
    release = asyncio.Event()

    @app.task(name="flaky.slow", retries=1, retry_delay=0.05, retry_jitter=False)
    async def slow(ctx: aqueue.Context) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("first run refused")
        await release.wait()
        return ctx.attempt

    web, server, http = await _serve(app)
    try:
        async with running_worker(app) as worker:
            handle = await slow.enqueue()
            await wait_until(lambda: _attempt_running(web, handle.id, 2), timeout=20)
            page = await web.readings.task(handle.id)
            assert page is not None and page.attempts is not None
            assert [(a.number, a.outcome) for a in page.attempts.rows] == [
                (1, "retrying"),
                (2, None),
            ]
            assert page.attempts.rows[1].worker == worker.name
            assert "(no outcome yet)" in (await http.get(f"/tasks/{handle.id}")).text
            release.set()
            assert await handle.get(timeout=20) == 2
    finally:
        await _close(web, server, http)


async def _attempt_running(web: Dashboard, task_id: str, number: int) -> bool:
    page = await web.readings.task(task_id)
    return (
        page is not None
        and page.info.status is aqueue.TaskStatus.RUNNING
        and page.info.attempt == number
    )
