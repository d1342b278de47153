"""Worker recycling with real processes: a child at its limit drains and is replaced."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import pytest
import redis.asyncio as aioredis

import aqueue

from .conftest import start_cli_worker


async def _ran(redis_url: str, prefix: str, key: str) -> list[tuple[int, str]]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        rows = await client.lrange(f"{prefix}:ran:{key}", 0, -1)
    finally:
        await client.aclose()
    return [(int(pid), tid) for pid, tid in (r.decode().split() for r in rows)]


async def _where(ctx: aqueue.Context, key: str, leak_mb: int = 0, seconds: float = 0.0) -> int:
    del ctx, key, leak_mb, seconds  # ops_app.where's signature
    return 0


@pytest.mark.parametrize("processes", [None, "2"])
async def test_max_tasks_per_child_replaces_children_and_loses_nothing(
    redis_url: str, prefix: str, processes: str | None
) -> None:
    app = aqueue.App(redis_url, prefix=prefix)
    where = app.task(name="ops_app.where")(_where)
    extra = ["--processes", processes] if processes else []
    supervisor = start_cli_worker(
        redis_url, prefix, "ops_app:app", "--max-tasks-per-child", "5", "-c", "3", *extra
    )
    try:
        handles = await where.enqueue_many([("tasks", 0, 0.05)] * 43)
        pids = [await h.get(timeout=60) for h in handles]
        ran = await _ran(redis_url, prefix, "tasks")
        # Every task ran exactly once, though children kept leaving mid-stream.
        assert sorted(tid for _, tid in ran) == sorted(h.id for h in handles)
        per_child = Counter(pid for pid, _ in ran)
        assert max(per_child.values()) <= 5
        assert len(per_child) >= 9  # 43 tasks, at most 5 per child
        assert set(pids) == set(per_child)
        assert supervisor.returncode is None  # the supervisor stays
    finally:
        supervisor.send_signal(signal.SIGTERM)
        out = await asyncio.to_thread(supervisor.communicate, timeout=60)
        await app.close()
    assert supervisor.returncode == 0, out[0].decode()[-3000:]
    assert b"recycled; starting a fresh one" in out[0]


async def test_max_memory_per_child_replaces_a_leaking_child(redis_url: str, prefix: str) -> None:
    app = aqueue.App(redis_url, prefix=prefix)
    where = app.task(name="ops_app.where")(_where)
    supervisor = start_cli_worker(
        redis_url, prefix, "ops_app:app", "--max-memory-per-child", "200", "-c", "1"
    )
    try:
        # Each run keeps 40 MiB: a child passes 200 MiB after a few and is replaced.
        handles = [await where.enqueue("leak", 40, 0.3) for _ in range(12)]
        for h in handles:
            await h.get(timeout=60)
        ran = await _ran(redis_url, prefix, "leak")
        assert sorted(tid for _, tid in ran) == sorted(h.id for h in handles)
        per_child = Counter(pid for pid, _ in ran)
        assert len(per_child) >= 2
        assert max(per_child.values()) < 12
    finally:
        supervisor.send_signal(signal.SIGTERM)
        out = await asyncio.to_thread(supervisor.communicate, timeout=60)
        await app.close()
    log = out[0].decode()
    assert supervisor.returncode == 0, log[-3000:]
    assert "over --max-memory-per-child 200" in log


async def test_recycling_limits_are_checked(redis_url: str, prefix: str) -> None:
    bad = start_cli_worker(redis_url, prefix, "ops_app:app", "--max-tasks-per-child", "0")
    out = await asyncio.to_thread(bad.communicate, timeout=60)
    assert bad.returncode == 1 and b"--max-tasks-per-child must be at least 1" in out[0]
