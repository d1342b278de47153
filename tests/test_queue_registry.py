"""A queue no task declares is findable: the queue registry in Redis.

``send_email.options(task_id="welcome-42", queue="high").enqueue(...)`` puts
a task on a queue that only that call names. The registry (one set, one
SADD per process and queue) lets ``app.result(id)``, ``aqueue status``,
``inspect`` and ``check`` find it, and the worker's banner warns that no
worker reads it.
"""

from __future__ import annotations

import json

import redis

import aqueue

from .conftest import redis_server
from .ops_support import cli


def declared(url: str, prefix: str) -> aqueue.App:
    """An App that declares ``basic.add`` on the default queue only (like tests/apps/basic.py)."""
    app = aqueue.App(url, prefix=prefix)

    @app.task(name="basic.add")
    async def add(x: int, y: int) -> int:
        return x + y

    return app


async def test_a_task_on_an_undeclared_queue_is_found_everywhere(
    redis_url: str, prefix: str
) -> None:
    async with declared(redis_url, prefix) as producer:
        add = producer.tasks["basic.add"]
        await add.options(task_id="welcome-42", queue="high").enqueue(1, 2)
    # Another process, with the same code: it never enqueued to "high".
    async with declared(redis_url, prefix) as other:
        assert other.queues == ["default"]
        handle = other.result("welcome-42")
        assert await handle.status() is aqueue.TaskStatus.QUEUED
        assert (await handle.info()).queue == "high"

    status = cli(redis_url, prefix, "status", "-A", "basic:app", "welcome-42")
    assert status.stdout.startswith("welcome-42: queued"), status.stdout + status.stderr

    inspected = cli(redis_url, prefix, "inspect", "-A", "basic:app", "--json")
    assert inspected.returncode == 0, inspected.stderr
    waiting = {q["queue"]: q["waiting"] for q in json.loads(inspected.stdout)["queues"]}
    assert waiting == {"default": 0, "high": 1}

    check = cli(redis_url, prefix, "check", "-A", "basic:app")
    assert "warning: queue 'high' has 1 waiting task(s) and no live worker" in check.stderr

    # A worker of the default queue says so in its banner, and still runs only its queue.
    worker = cli(redis_url, prefix, "worker", "-A", "basic:app", "--burst")
    assert worker.returncode == 0, worker.stderr
    assert "queue high has 1 waiting task(s) and no live worker" in worker.stderr
    # Once a worker reads "high", the task runs and nothing is stranded any more.
    ran = cli(redis_url, prefix, "worker", "-A", "basic:app", "--burst", "-q", "high")
    assert "worker stopped: 1 succeeded" in ran.stderr, ran.stderr
    check = cli(redis_url, prefix, "check", "-A", "basic:app", "--queues", "default")
    assert "warning" not in check.stderr
    async with declared(redis_url, prefix) as other:
        assert await other.result("welcome-42").get(timeout=5) == 3


async def test_the_registry_costs_one_command_per_process_and_queue() -> None:
    with redis_server() as server:
        async with declared(server.url, "reg") as producer:
            add = producer.tasks["basic.add"]
            for i in range(200):
                await add.options(queue="high").enqueue(i, i)
            await add.enqueue_many([(i, i) for i in range(300)])
            await add.options(queue="low").enqueue_many([(i, i) for i in range(300)])
        client = redis.Redis(port=server.port)
        try:
            sadd = client.info("commandstats").get("cmdstat_sadd", {}).get("calls", 0)
            assert sadd == 3  # high, default, low: once each
            assert client.smembers("reg:queues") == {b"high", b"default", b"low"}
        finally:
            client.close()
