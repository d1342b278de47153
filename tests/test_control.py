"""Abort, task context, progress and worker lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aqueue
from aqueue import Context, TaskStatus

from .conftest import ROOT, running_worker, start_cli_worker, wait_until, worker_env

# -- abort ------------------------------------------------------------------------


async def test_abort_queued_task_never_starts(app: aqueue.App) -> None:
    ran: list[int] = []

    @app.task
    async def work(n: int) -> int:
        ran.append(n)
        return n

    doomed = await work.enqueue(1)
    kept = await work.enqueue(2)
    assert await doomed.abort() is True
    assert await doomed.status() is TaskStatus.ABORTED
    async with running_worker(app):
        assert await kept.get(timeout=10) == 2
        with pytest.raises(aqueue.TaskAborted) as err:
            await doomed
    assert isinstance(err.value, aqueue.TaskFailed)
    assert ran == [2]
    assert await doomed.status() is TaskStatus.ABORTED


async def test_abort_scheduled_task_never_starts(app: aqueue.App) -> None:
    ran: list[int] = []

    @app.task
    async def work() -> None:
        ran.append(1)

    r = await work.options(delay=0.3).enqueue()
    assert await r.status() is TaskStatus.SCHEDULED
    assert await r.abort() is True
    keys = app.broker.keys(app.settings.default_queue)
    assert await app.broker.client.zcard(keys.delayed) == 0
    async with running_worker(app):
        with pytest.raises(aqueue.TaskAborted):
            await r.get(timeout=10)
        await asyncio.sleep(0.5)  # well past the ETA
    assert ran == []
    assert await r.status() is TaskStatus.ABORTED


async def test_abort_wakes_a_waiter_of_a_waiting_task(app: aqueue.App) -> None:
    @app.task
    async def work() -> None: ...

    for r in (await work.enqueue(), await work.options(delay=3600).enqueue()):
        waiter = asyncio.create_task(r.get(timeout=3))  # less than the 5 s fallback poll
        await asyncio.sleep(0.1)
        assert not waiter.done()
        assert await r.abort() is True
        with pytest.raises(aqueue.TaskAborted):
            await waiter


async def test_abort_running_coroutine_is_cancelled_promptly(app: aqueue.App) -> None:
    started = asyncio.Event()
    cancelled_at: list[float] = []

    @app.task
    async def crawl() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled_at.append(time.monotonic())
            raise
        return "done"

    async with running_worker(app):
        r = await crawl.enqueue()
        await asyncio.wait_for(started.wait(), 10)
        asked = time.monotonic()
        assert await r.abort() is True
        with pytest.raises(aqueue.TaskAborted, match="aborted"):
            await r.get(timeout=10)
        await wait_until(lambda: cancelled_at)
    latency = cancelled_at[0] - asked
    print(f"\nabort of a running coroutine: cancelled {latency * 1000:.1f} ms after abort()")
    assert latency < 2.0  # sanity bound; pushed over the control channel, not polled
    assert await r.status() is TaskStatus.ABORTED


async def test_abort_running_plain_def_discards_its_outcome(app: aqueue.App) -> None:
    entered = threading.Event()
    release = threading.Event()
    finished: list[str] = []

    @app.task
    def convert(path: str) -> str:
        entered.set()
        release.wait(30)
        finished.append(path)
        return path

    async with running_worker(app, threads=2):
        r = await convert.enqueue("a.wav")
        await asyncio.to_thread(entered.wait, 10)
        assert await r.abort() is True
        with pytest.raises(aqueue.TaskAborted):
            await r.get(timeout=10)
        release.set()  # the thread runs to its end; its result must not count
        await wait_until(lambda: finished == ["a.wav"])
        after = await convert.enqueue("b.wav")
        assert await after.get(timeout=10) == "b.wav"
    assert await r.status() is TaskStatus.ABORTED
    with pytest.raises(aqueue.TaskAborted):
        await r


async def test_abort_finished_task_is_a_no_op(app: aqueue.App) -> None:
    @app.task
    async def quick() -> int:
        return 7

    async with running_worker(app):
        r = await quick.enqueue()
        assert await r == 7
    assert await r.abort() is False
    assert await r.status() is TaskStatus.SUCCEEDED
    assert await r == 7
    assert await app.result("no-such-task").abort() is False


async def test_abort_from_another_app(app: aqueue.App) -> None:
    started = asyncio.Event()

    @app.task(queue="crawl")
    async def crawl() -> None:
        started.set()
        await asyncio.sleep(60)

    other = aqueue.App(app.settings.redis_url, prefix=app.settings.prefix)
    try:
        async with running_worker(app):
            r = await crawl.enqueue()
            await asyncio.wait_for(started.wait(), 10)
            # Another process knows only the id (and, here, the queue).
            remote = other.result(r.id, queue="crawl")
            assert await remote.status() is TaskStatus.RUNNING
            assert await remote.abort() is True
            with pytest.raises(aqueue.TaskAborted):
                await remote.get(timeout=10)
            with pytest.raises(aqueue.TaskAborted):
                await r.get(timeout=10)
    finally:
        await other.close()


async def test_cli_abort(app: aqueue.App, redis_url: str, prefix: str) -> None:
    @app.task(name="control_app.long_sleep")
    async def long_sleep(seconds: float) -> str:
        return "slept"

    task_id = (await long_sleep.options(delay=3600).enqueue(1.0)).id

    def abort() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aqueue", "abort", "control_app:app", task_id],
            env=worker_env(redis_url, prefix),
            cwd=str(ROOT / "tests" / "apps"),
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = abort()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "abort requested (was scheduled)" in first.stdout
    second = abort()
    assert second.returncode == 1
    assert "nothing to abort (status aborted)" in second.stdout


# -- context and progress -----------------------------------------------------------


async def test_context_fields_and_progress(app: aqueue.App) -> None:
    step = asyncio.Event()
    seen: list[Context] = []

    @app.task(queue="media", timeout=30)
    async def transcode(ctx: Context, path: str, fps: int = 30) -> str:
        seen.append(ctx)
        await ctx.progress(0.5, "half way")
        await step.wait()
        await ctx.progress({"frames": 900}, "done soon")
        return f"{path}@{fps}"

    before = time.time()
    async with running_worker(app):
        r = await transcode.enqueue("a.mp4", fps=24)
        await wait_until(lambda: seen)
        await wait_until(r.progress)
        assert await r.progress() == (0.5, "half way")
        step.set()
        assert await r.get(timeout=10) == "a.mp4@24"
    assert await r.progress() == ({"frames": 900}, "done soon")
    ctx = seen[0]
    assert ctx.id == r.id
    assert ctx.task == transcode.name
    assert ctx.queue == "media"
    assert ctx.attempt == 1
    assert before - 1 <= ctx.enqueued_at <= time.time()
    assert ctx.deadline is not None and 25 < ctx.deadline - ctx.enqueued_at < 35
    assert ctx.state == {}


async def test_context_attempt_counts_retries(app: aqueue.App) -> None:
    attempts: list[int] = []

    @app.task(retries=2, retry_delay=0.05, retry_jitter=False)
    async def flaky(ctx: Context, n: int) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return n

    async with running_worker(app):
        assert await (await flaky.enqueue(5)).get(timeout=10) == 5
    assert attempts == [1, 2, 3]


async def test_context_in_plain_def_and_positional_args(app: aqueue.App) -> None:
    @app.task
    def where(ctx: Context, a: int, b: int = 0) -> str:
        assert ctx.deadline is None
        return f"{ctx.task}:{a + b}"

    @app.task
    async def later_param(a: int, ctx: Context, *, b: int) -> str:
        return f"{ctx.id}:{a}:{b}"

    async with running_worker(app):
        assert await (await where.enqueue(1, 2)).get(timeout=10) == f"{where.name}:3"
        assert await (await where.enqueue(a=4)).get(timeout=10) == f"{where.name}:4"
        r = await later_param.enqueue(1, b=2)
        assert await r.get(timeout=10) == f"{r.id}:1:2"
    with pytest.raises(aqueue.EnqueueError):
        await where.enqueue(1, 2, 3)  # the context is not an enqueue argument


async def test_progress_from_a_plain_def_task(app: aqueue.App) -> None:
    reported = threading.Event()
    release = threading.Event()

    @app.task
    def resize(ctx: Context, n: int) -> int:
        ctx.progress_sync(n // 2, "resized half")
        reported.set()
        release.wait(30)
        return n

    @app.task
    async def misuse(ctx: Context) -> str:
        try:
            ctx.progress_sync(1)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    async with running_worker(app):
        r = await resize.enqueue(10)
        await asyncio.to_thread(reported.wait, 10)
        assert await r.progress() == (5, "resized half")
        release.set()
        assert await r.get(timeout=10) == 10
        assert "await ctx.progress" in await (await misuse.enqueue()).get(timeout=10)


# -- lifespan -----------------------------------------------------------------------


async def test_lifespan_resources_reach_tasks(app: aqueue.App) -> None:
    events: list[str] = []

    @app.lifespan
    @contextlib.asynccontextmanager
    async def resources(the_app: aqueue.App) -> AsyncIterator[dict[str, Any]]:
        assert the_app is app
        events.append("startup")
        yield {"pool": "db-pool-1"}
        events.append("shutdown")

    @app.task
    async def query(ctx: Context, sql: str) -> str:
        return f"{ctx.state['pool']}: {sql}"

    async with running_worker(app):
        await wait_until(lambda: events)
        assert events == ["startup"]
        assert await (await query.enqueue("select 1")).get(timeout=10) == "db-pool-1: select 1"
    assert events == ["startup", "shutdown"]


async def test_lifespan_as_a_bare_async_generator(app: aqueue.App) -> None:
    @app.lifespan
    async def resources(_: aqueue.App) -> AsyncIterator[dict[str, Any]]:
        yield {"client": "http"}

    @app.task
    async def fetch(ctx: Context) -> str:
        return str(ctx.state["client"])

    async with running_worker(app):
        assert await (await fetch.enqueue()).get(timeout=10) == "http"


async def test_lifespan_startup_failure_stops_the_worker(app: aqueue.App) -> None:
    ran: list[int] = []

    @app.lifespan
    async def broken(_: aqueue.App) -> AsyncIterator[dict[str, Any]]:
        raise ConnectionRefusedError("db.invalid:5432 refused the connection")
        yield {}

    @app.task
    async def work() -> None:
        ran.append(1)

    await work.enqueue()
    worker = aqueue.Worker(app)
    with pytest.raises(aqueue.AqueueError, match="lifespan failed during startup") as err:
        await asyncio.wait_for(worker.run(), 10)
    assert "ConnectionRefusedError: db.invalid:5432" in str(err.value)
    assert isinstance(err.value.__cause__, ConnectionRefusedError)
    assert ran == []


def test_cli_worker_exits_non_zero_when_lifespan_fails(redis_url: str, prefix: str) -> None:
    proc = start_cli_worker(redis_url, prefix, "control_app:app", AQUEUE_TEST_LIFESPAN_FAIL="1")
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode()
    assert proc.returncode == 1, text
    assert "lifespan failed during startup" in text
    assert "db.invalid:5432 refused the connection" in text
    assert "Traceback" not in text


def test_cli_worker_lifespan_state(redis_url: str, prefix: str) -> None:
    proc = start_cli_worker(redis_url, prefix, "control_app:app")
    app = aqueue.App(redis_url, prefix=prefix)

    async def greet() -> Any:
        try:
            handle = await app.task(name="control_app.greet")(_greet).enqueue()
            return await handle.get(timeout=30)
        finally:
            await app.close()

    try:
        assert asyncio.run(greet()) == "hello from the lifespan"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


async def _greet(ctx: Context) -> str:
    return ""


async def test_get_with_a_timeout_never_hangs_on_a_fresh_app(redis_url: str, prefix: str) -> None:
    """The first get() opens the App's result subscription; a timeout that fires while
    it connects must still end the wait (redis-py swallows that cancellation)."""
    producer = aqueue.App(redis_url, prefix=prefix)

    @producer.task
    async def never() -> None: ...

    try:
        r = await never.options(delay=3600).enqueue()
        # Timeouts from 0.25 ms to 30 ms land in every phase of connecting.
        for step in range(1, 121):
            fresh = aqueue.App(redis_url, prefix=prefix)
            try:
                with pytest.raises(aqueue.ResultTimeout):
                    await asyncio.wait_for(fresh.result(r.id, "default").get(step / 4000), 5)
            finally:
                await fresh.close()
    finally:
        await producer.close()
