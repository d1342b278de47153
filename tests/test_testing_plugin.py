"""The pytest plugin, as a user meets it: a small project run by pytest in a subprocess.

Each project below uses only the plugin's fixtures. It runs in a pytest
subprocess (``pytester.runpytest_subprocess``) so the plugin is loaded
through its entry point, exactly as in a user's checkout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

TASKS = """
import asyncio

import msgspec

import aqueue

app = aqueue.App()


class Order(msgspec.Struct):
    id: int
    total: float


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task
async def place(order: Order) -> str:
    await add.enqueue(order.id, 1)
    return f"order {order.id}: {order.total:.2f}"


@app.task(queue="slow")
async def stuck() -> None:
    await asyncio.sleep(3600)


@app.task
async def broken() -> None:
    raise ValueError("no such customer")


ATTEMPTS = []


@app.task(retries=2, retry_delay=0, retry_jitter=False)
async def flaky(ctx: aqueue.Context, n: int) -> int:
    ATTEMPTS.append(ctx.attempt)
    if ctx.attempt < 3:
        raise ConnectionError("provider busy")
    return n


@app.task(unique=True)
async def rebuild_index(shop: int) -> int:
    return shop


@app.periodic(every=86400)
async def weekly_report() -> str:
    return "report"
"""

TESTS = """
import pytest

import aqueue
from aqueue.testing import WorkStuck
from tasks import Order, add, app, broken, place, stuck

PREFIXES = []


@pytest.mark.asyncio
async def test_run_until_idle_runs_what_tasks_enqueue(aqueue_app, aqueue_worker):
    PREFIXES.append(aqueue_app.settings.prefix)
    r = await place.enqueue(Order(41, 9.5))
    ran = await aqueue_worker.run_until_idle()
    assert await r == "order 41: 9.50"
    assert sorted((f.task, f.value) for f in ran) == [
        ("tasks.add", 42), ("tasks.place", "order 41: 9.50")
    ]
    assert [f.status for f in aqueue_worker.results()] == [aqueue.TaskStatus.SUCCEEDED] * 2
    assert await aqueue_worker.enqueued() == []


@pytest.mark.asyncio
async def test_enqueued_lists_typed_arguments(aqueue_app, aqueue_worker):
    PREFIXES.append(aqueue_app.settings.prefix)
    await place.enqueue(Order(7, 1.25))
    await add.options(delay=3600).enqueue(1, 2)
    waiting = await aqueue_worker.enqueued(place)
    assert [w.args for w in waiting] == [(Order(7, 1.25),)]
    assert isinstance(waiting[0].args[0], Order)
    later = await aqueue_worker.enqueued(add)
    assert later[0].args == (1, 2) and later[0].due_at is not None
    await aqueue_worker.assert_enqueued(add, 1, 2)
    with pytest.raises(AssertionError) as failed:
        await aqueue_worker.assert_enqueued(add, 1, 3)
    print("ASSERT-MESSAGE", failed.value)
    assert "tasks.add(1, 3)" in str(failed.value) and "tasks.add(1, 2)" in str(failed.value)


@pytest.mark.asyncio
async def test_run_one_runs_a_single_task(aqueue_app, aqueue_worker):
    await add.enqueue(1, 1)
    await add.enqueue(2, 2)
    first = await aqueue_worker.run_one()
    assert first is not None and first.value == 2
    assert len(await aqueue_worker.enqueued(add)) == 1
    second = await aqueue_worker.run_one()
    assert second is not None and second.value == 4
    assert await aqueue_worker.run_one() is None


@pytest.mark.asyncio
async def test_failures_are_readable(aqueue_app, aqueue_worker):
    r = await broken.enqueue()
    (run,) = await aqueue_worker.run_until_idle()
    assert run.status is aqueue.TaskStatus.FAILED
    assert run.error == "ValueError: no such customer"
    with pytest.raises(aqueue.TaskFailed):
        await r


@pytest.mark.asyncio
async def test_stuck_work_raises_naming_the_task(aqueue_app, aqueue_worker):
    await stuck.enqueue()
    with pytest.raises(WorkStuck) as raised:
        await aqueue_worker.run_until_idle(timeout=1.0)
    print("STUCK-MESSAGE", raised.value)
    assert "tasks.stuck" in str(raised.value)
    assert isinstance(raised.value, aqueue.AqueueError)


@pytest.mark.asyncio
async def test_retries_unique_delays_and_periodic(aqueue_app, aqueue_worker):
    import tasks

    r = await tasks.flaky.enqueue(7)
    first = await tasks.rebuild_index.enqueue(1)
    again = await tasks.rebuild_index.enqueue(1)
    assert again.id == first.id
    later = await add.options(delay=3 * 86400).enqueue(5, 5)
    report = await tasks.weekly_report.enqueue()
    await aqueue_worker.run_until_idle()
    assert await r == 7 and tasks.ATTEMPTS == [1, 2, 3]
    assert [f.status.value for f in aqueue_worker.results() if f.task == "tasks.flaky"] == [
        "retrying", "retrying", "succeeded"
    ]
    assert await first == 1 and await report == "report"
    (waiting,) = await aqueue_worker.enqueued()
    assert waiting.id == later.id and waiting.args == (5, 5)


@pytest.mark.asyncio
async def test_eager_mode_needs_no_redis(aqueue_eager):
    r = await place.enqueue(Order(1, 2.0))
    assert await r == "order 1: 2.00"
    assert await r.status() is aqueue.TaskStatus.SUCCEEDED


def test_each_test_had_its_own_prefix_and_the_app_is_restored():
    assert len(set(PREFIXES)) == 2
    assert app.settings.prefix == "aqueue"
"""

INI = """
[pytest]
aqueue_app = tasks:app
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(tasks=TASKS, test_user=TESTS)
    pytester.makeini(INI)
    return pytester


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_a_user_project_passes_with_only_the_plugin(
    user_project: pytest.Pytester, mode: str
) -> None:
    started = time.perf_counter()
    result = user_project.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--asyncio-mode={mode}", "-s", "-q"
    )
    print(f"user project ({mode} mode) took {time.perf_counter() - started:.2f}s")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*STUCK-MESSAGE*run_until_idle() gave up after 1s*"])


@pytest.fixture
def sentinel(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.set("users-own-key", "kept")
    yield client
    client.delete("users-own-key")
    client.close()


def test_a_users_redis_is_used_and_never_flushed(
    user_project: pytest.Pytester, redis_url: str, sentinel: redis.Redis
) -> None:
    user_project.makepyfile(
        test_user="""
import pytest
from tasks import add

@pytest.mark.asyncio
async def test_uses_the_given_server(aqueue_app, aqueue_redis, aqueue_worker):
    assert aqueue_redis == aqueue_app.settings.redis_url
    r = await add.enqueue(2, 3)
    await aqueue_worker.run_until_idle()
    assert await r == 5
"""
    )
    result = user_project.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--aqueue-redis-url={redis_url}", "-q"
    )
    result.assert_outcomes(passed=1)
    assert sentinel.get("users-own-key") == b"kept"
    leftovers = [k for k in sentinel.scan_iter(count=1000) if k.startswith(b"aqueue-test-")]
    assert leftovers == []


def test_without_an_app_the_fixture_says_how_to_name_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
async def test_needs_app(aqueue_app):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--asyncio-mode=auto")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*aqueue_app = MODULE:APP*"])


def doc_files(section: str) -> dict[str, str]:
    """The files of one section of docs/testing.md (each block after ``<!-- file: PATH -->``)."""
    text = (ROOT / "docs" / "testing.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", body, flags=re.S)
    return dict(found)


def test_the_fastapi_example_of_the_docs_passes(pytester: pytest.Pytester) -> None:
    files = doc_files("FastAPI")
    assert {"shop/tasks.py", "shop/api.py", "tests/test_orders.py"} <= set(files)
    for path, content in files.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    started = time.perf_counter()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "tests")
    print(f"FastAPI example took {time.perf_counter() - started:.2f}s")
    result.assert_outcomes(passed=2)


def test_the_django_example_of_the_docs_passes(pytester: pytest.Pytester) -> None:
    shared = doc_files("FastAPI")
    files = {p: shared[p] for p in ("shop/__init__.py", "shop/tasks.py")} | doc_files("Django")
    assert {"shop/views.py", "conftest.py", "tests/test_views.py"} <= set(files)
    for path, content in files.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    started = time.perf_counter()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "tests")
    print(f"Django example took {time.perf_counter() - started:.2f}s")
    result.assert_outcomes(passed=1)


def test_the_virtual_time_example_of_the_docs_passes(pytester: pytest.Pytester) -> None:
    """Days of delays, backoff and weekly cron ticks, run by the plugin alone."""
    files = doc_files("Virtual time")
    assert {"billing/tasks.py", "pyproject.toml", "tests/test_time.py"} <= set(files)
    for path, content in files.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    started = time.perf_counter()
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "--durations=0", "--durations-min=0", "tests"
    )
    print(f"virtual time example took {time.perf_counter() - started:.2f}s in all")
    print("\n".join(line for line in result.outlines if "call" in line or "setup" in line))
    result.assert_outcomes(passed=4)
