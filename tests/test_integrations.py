"""Sync enqueue, configuration from settings objects, and the three web
framework examples run end to end over HTTP with a real worker process."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import threading
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aqueue
from aqueue.sync import SyncResult, sync_result

from .conftest import ROOT, free_port, running_worker, start_cli_worker
from .ops_support import EXAMPLES, spawn, stop, wait_for


@pytest.fixture
def sync_app(redis_url: str, prefix: str) -> Iterator[aqueue.App]:
    app = aqueue.App(redis_url, prefix=prefix)
    yield app
    app.close_sync()


def _basic_tasks(app: aqueue.App) -> tuple[Any, Any]:
    @app.task(name="basic.add")
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="basic.blocking_sleep")
    def blocking_sleep(seconds: float) -> float:
        return seconds

    return add, blocking_sleep


# -- sync enqueue --------------------------------------------------------------------


def test_delay_and_get_from_sync_code_and_threads(
    redis_url: str, prefix: str, sync_app: aqueue.App
) -> None:
    add, _ = _basic_tasks(sync_app)
    worker = start_cli_worker(redis_url, prefix, "basic:app")
    try:
        handle = add.delay(1, 2)
        assert isinstance(handle, SyncResult)
        assert handle.get(timeout=20) == 3
        assert handle.ready() and handle.status() is aqueue.TaskStatus.SUCCEEDED
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(add.delay(i, i).get(timeout=20)))
            for i in range(16)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [2 * i for i in range(16)]
        # A handle made from the id alone (a status view) finds the queue itself.
        assert sync_result(sync_app, handle.id).get(timeout=5) == 3
        with pytest.raises(aqueue.EnqueueError):
            add.delay(1)  # type: ignore[call-arg]  # checked in the caller's thread
    finally:
        stop(worker)
    pending = add.delay(5, 5)
    with pytest.raises(aqueue.ResultTimeout):
        pending.get(timeout=0.2)
    assert pending.status() is aqueue.TaskStatus.QUEUED
    assert pending.abort() is True
    with pytest.raises(aqueue.TaskAborted):
        pending.get(timeout=5)
    assert pending.abort() is False  # already final


async def test_delay_from_a_thread_while_the_app_runs_on_an_event_loop(
    sync_app: aqueue.App,
) -> None:
    add, blocking_sleep = _basic_tasks(sync_app)
    async with running_worker(sync_app, concurrency=20):
        before = await add.enqueue(1, 1)
        values = await asyncio.gather(
            *(asyncio.to_thread(lambda i=i: add.delay(i, 1).get(timeout=20)) for i in range(10))
        )
        assert sorted(values) == list(range(1, 11))
        # The App's own connection on this loop is untouched by the sync thread.
        assert await before == 2
        assert await (await blocking_sleep.enqueue(0.01)).get(timeout=10) == 0.01


async def test_delay_with_an_injected_client_uses_a_client_of_its_own(
    redis_url: str, prefix: str
) -> None:
    """The injected client belongs to this loop; delay() reaches the same server
    through a client made from its settings on the private loop."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    app = aqueue.App(redis=client, prefix=prefix)
    add, _ = _basic_tasks(app)
    try:
        sent = await asyncio.to_thread(add.delay, 1, 2)
        assert await app.result(sent.id).status() is aqueue.TaskStatus.QUEUED
    finally:
        app.close_sync()
        await app.close()
        await client.aclose()


def test_delay_types_check_with_mypy() -> None:
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "tests/typing/check_sync.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- configuration -----------------------------------------------------------------


def test_config_from_mapping_object_and_namespace() -> None:
    app = aqueue.App("redis://localhost:6379/0")
    app.config_from_object({"prefix": "fromdict", "result_ttl": 60})
    assert (app.settings.prefix, app.settings.result_ttl) == ("fromdict", 60)

    class Config:
        prefix = "fromclass"
        visibility_timeout = 30.0
        SOMETHING_ELSE = "ignored"

    app.config_from_object(Config)
    assert (app.settings.prefix, app.settings.visibility_timeout) == ("fromclass", 30.0)
    assert app.settings.result_ttl == 60  # earlier options are kept

    django_like = types.SimpleNamespace(
        AQUEUE_REDIS_URL="redis://cache:6379/2",
        AQUEUE_PREFIX="shop",
        AQUEUE_SIGNING_KEY="s3cret",
        DEBUG=True,
        INSTALLED_APPS=["shop"],
    )
    app.config_from_object(django_like, namespace="AQUEUE")
    assert app.settings.redis_url == "redis://cache:6379/2"
    assert app.settings.prefix == "shop" and app.client.codec.signing_key == b"s3cret"

    typo = types.SimpleNamespace(AQUEUE_VISIBLITY_TIMEOUT=5)
    with pytest.raises(aqueue.ConfigError, match="did you mean 'AQUEUE_VISIBILITY_TIMEOUT'"):
        app.config_from_object(typo, namespace="AQUEUE")
    with pytest.raises(aqueue.ConfigError, match="did you mean 'result_ttl'"):
        app.config_from_object({"result_tll": 5})
    with pytest.raises(aqueue.ConfigError, match="positive"):
        app.config_from_object({"result_ttl": -1})
    module = types.ModuleType("aqueue_test_settings")
    module.AQUEUE_DEFAULT_QUEUE = "emails"  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        app.config_from_object("aqueue_test_settings", namespace="AQUEUE")
    finally:
        del sys.modules[module.__name__]
    assert app.settings.default_queue == "emails"


async def test_config_after_connecting_is_refused(app: aqueue.App) -> None:
    await app.connect()
    with pytest.raises(aqueue.ConfigError, match="before the App connects"):
        app.config_from_object({"prefix": "late"})


def test_autodiscover_imports_tasks_modules(tmp_path: Path, monkeypatch: Any) -> None:
    pkg = tmp_path / "discovered_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tasks.py").write_text(
        "import builtins\nbuiltins.__dict__.setdefault('_aqueue_seen', []).append(1)\n"
    )
    (tmp_path / "no_tasks_pkg").mkdir()
    (tmp_path / "no_tasks_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = aqueue.App("redis://localhost:6379/0")
    found = app.autodiscover_tasks(["discovered_pkg", "no_tasks_pkg"])
    assert found == ["discovered_pkg.tasks"]
    import builtins

    assert builtins.__dict__.pop("_aqueue_seen") == [1]


# -- web frameworks ---------------------------------------------------------------


def _fresh_example(name: str, monkeypatch: Any, redis_url: str, prefix: str) -> Any:
    monkeypatch.setenv("AQUEUE_REDIS_URL", redis_url)
    monkeypatch.setenv("AQUEUE_PREFIX", prefix)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def _example_worker(redis_url: str, prefix: str, spec: str, cwd: Path, **env: str) -> Any:
    return spawn(redis_url, prefix, "worker", spec, cwd=cwd, PYTHONPATH=str(cwd), **env)


async def test_fastapi_example_end_to_end(redis_url: str, prefix: str, monkeypatch: Any) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    example = _fresh_example("fastapi_app", monkeypatch, redis_url, prefix)
    worker = _example_worker(redis_url, prefix, "fastapi_app:queue", EXAMPLES)
    try:
        web = example.web
        async with web.router.lifespan_context(web):
            transport = httpx.ASGITransport(app=web)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                started = await http.post("/words", json={"text": "one two three"})
                assert started.status_code == 200
                task_id = started.json()["task_id"]
                done = await http.get(f"/tasks/{task_id}", params={"wait": 20})
                assert done.json() == {"task_id": task_id, "status": "succeeded", "result": 3}
                polled = await http.get(f"/tasks/{task_id}")
                assert polled.json()["status"] == "succeeded"
                failing = (await http.post("/fail", json={"text": "boom"})).json()["task_id"]
                failed = await http.get(f"/tasks/{failing}", params={"wait": 20})
                assert failed.json()["status"] == "failed"
                assert failed.json()["error"] == "ValueError: boom"
                assert (await http.get("/tasks/nope")).status_code == 404
    finally:
        stop(worker)


async def test_aiohttp_example_end_to_end(redis_url: str, prefix: str, monkeypatch: Any) -> None:
    pytest.importorskip("aiohttp")
    from aiohttp.test_utils import TestClient, TestServer

    example = _fresh_example("aiohttp_app", monkeypatch, redis_url, prefix)
    worker = _example_worker(redis_url, prefix, "aiohttp_app:queue", EXAMPLES)
    try:
        async with TestClient(TestServer(example.make_app())) as http:  # a real server
            started = await http.post("/words", data="a b c d")
            assert started.status == 200
            task_id = (await started.json())["task_id"]
            done = await http.get(f"/tasks/{task_id}", params={"wait": "20"})
            assert await done.json() == {"task_id": task_id, "status": "succeeded", "result": 4}
            assert (await http.get("/tasks/nope")).status == 404
    finally:
        stop(worker)


async def test_aiohttp_example_run_as_a_script(redis_url: str, prefix: str) -> None:
    """``python aiohttp_app.py`` + ``aqueue worker aiohttp_app:queue``, as its docs say."""
    pytest.importorskip("aiohttp")
    port = free_port()
    worker = _example_worker(redis_url, prefix, "aiohttp_app:queue", EXAMPLES)
    web = subprocess.Popen(
        [sys.executable, "aiohttp_app.py"],
        cwd=str(EXAMPLES),
        env={**_env(redis_url, prefix), "PYTHONPATH": str(ROOT), "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"

    def post_words() -> str | None:
        try:
            request = urllib.request.Request(f"{base}/words", data=b"one two three four five")
            with urllib.request.urlopen(request, timeout=5) as reply:
                return str(json.load(reply)["task_id"])
        except OSError:  # not listening yet
            return None

    try:
        task_id = await asyncio.to_thread(wait_for, post_words, 30)
        url = f"{base}/tasks/{task_id}?wait=20"
        with await asyncio.to_thread(urllib.request.urlopen, url, None, 30) as reply:
            done = json.load(reply)
        assert done == {"task_id": task_id, "status": "succeeded", "result": 5}
    finally:
        stop(web)
        stop(worker)
    assert web.stderr is not None
    assert b"__main__" not in web.stderr.read()


def test_django_example_end_to_end(redis_url: str, prefix: str, monkeypatch: Any) -> None:
    pytest.importorskip("django", reason="Django is not installed (pip install -e '.[dev]')")
    project = EXAMPLES / "django_project"
    env = {"DJANGO_SETTINGS_MODULE": "proj.settings"}
    worker = _example_worker(redis_url, prefix, "proj.aqueue_app:app", project, **env)
    # The web side runs in a process of its own too: Django's settings are global.
    script = """
import json, os, sys
import django
django.setup()
from django.test import Client
client = Client()
started = client.get("/greet/", {"name": "Ada"}).json()
done = client.get(f"/tasks/{started['task_id']}/", {"wait": "20"}).json()
print(json.dumps(done))
"""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script],
            cwd=str(project),
            env={**_env(redis_url, prefix), "PYTHONPATH": f"{project}:{ROOT}", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        import json

        done = json.loads(proc.stdout.strip().splitlines()[-1])
        assert done["status"] == "succeeded" and done["result"] == "Hello, Ada!"
    finally:
        stop(worker)
    wait_for(lambda: worker.poll() is not None)


def _env(redis_url: str, prefix: str) -> dict[str, str]:
    from .conftest import worker_env

    return worker_env(redis_url, prefix)
