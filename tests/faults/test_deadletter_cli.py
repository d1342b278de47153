"""``aqueue dead list | replay | purge`` against a real Redis and a real worker."""

from __future__ import annotations

import asyncio
import json
import re
import signal

import aqueue
from aqueue import AsyncResult, TaskStatus

from ..conftest import wait_until
from .conftest import Counts, Workers, producer, run_cli

DEAD_ON_FAILURE = {"AQUEUE_DEAD_LETTER_ON_FAILURE": "1"}


async def test_list_replay_purge(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    dead_key = f"{prefix}:{{default}}:dead"
    workers.start("-c", "4", **DEAD_ON_FAILURE)
    async with producer(redis_url, prefix) as app:
        needs_flag = app.tasks["faults.needs_flag"]
        handles = [await needs_flag.enqueue(f"f{i}") for i in range(3)]
        await wait_until(lambda: counts.client.xlen(dead_key) == 3, 30)
        assert {await h.status() for h in handles} == {TaskStatus.DEAD}

        code, out = await run_cli(redis_url, prefix, "dead", "list", "faults:app", "--json")
        assert code == 0, out
        listed = json.loads(out)
        assert {d["task_id"] for d in listed} == {h.id for h in handles}
        for d in listed:
            assert d["task_name"] == "faults.needs_flag"
            assert d["reason"] == "failed"
            assert "RuntimeError: flag f" in d["error"]
            assert d["attempts"] == 1 and d["queue"] == "default" and d["at"]

        code, out = await run_cli(redis_url, prefix, "dead", "list", "faults:app")
        assert code == 0 and "3 message(s)" in out and "needs_flag" in out, out

        # Fix the cause, then replay one message by id.
        by_task = {d["task_id"]: d["entry_id"] for d in listed}
        counts.client.set(f"{prefix}:flag:f0", 1)
        code, out = await run_cli(
            redis_url, prefix, "dead", "replay", "faults:app", by_task[handles[0].id]
        )
        assert code == 0 and "1 message(s) back" in out, out
        assert await asyncio.wait_for(handles[0].get(), 20) == "f0"
        assert counts.client.xlen(dead_key) == 2

        # An unknown id is reported and changes nothing.
        code, out = await run_cli(redis_url, prefix, "dead", "replay", "faults:app", "1-1")
        assert code == 1 and "not found: 1-1" in out, out

        # Replay everything else.
        counts.client.set(f"{prefix}:flag:f1", 1)
        counts.client.set(f"{prefix}:flag:f2", 1)
        code, out = await run_cli(
            redis_url, prefix, "dead", "replay", "faults:app", "--all", "--queue", "default"
        )
        assert code == 0 and "2 message(s) back" in out, out
        assert await asyncio.wait_for(asyncio.gather(handles[1].get(), handles[2].get()), 20) == [
            "f1",
            "f2",
        ]
        assert counts.done(["f0", "f1", "f2"]) == [1, 1, 1]
        assert counts.client.xlen(dead_key) == 0

        # Purge: refuses without --yes when not interactive, then deletes.
        failing = await needs_flag.enqueue("never")
        await wait_until(lambda: counts.client.xlen(dead_key) == 1, 30)
        code, out = await run_cli(redis_url, prefix, "dead", "purge", "faults:app")
        assert code == 2 and "--yes" in out, out
        assert counts.client.xlen(dead_key) == 1
        code, out = await run_cli(redis_url, prefix, "dead", "purge", "faults:app", "--yes")
        assert code == 0 and "deleted 1" in out, out
        assert counts.client.xlen(dead_key) == 0
        assert await failing.status() is TaskStatus.DEAD
        code, out = await run_cli(redis_url, prefix, "dead", "list", "faults:app")
        assert code == 0 and "no dead-lettered messages" in out


async def test_replay_of_a_max_deliveries_message_runs_it_again(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    """Python API: a message that crashed its workers can be replayed once fixed."""
    env = {
        "AQUEUE_HEARTBEAT_INTERVAL": "0.5",
        "AQUEUE_DEAD_WORKER_AFTER": "1",
        "AQUEUE_MAX_DELIVERIES": "1",
    }
    async with producer(redis_url, prefix) as app:
        # attempt 1 hangs "forever" in a worker we SIGSTOP; the reclaim dead-letters it.
        handle = await app.tasks["faults.attempt_of"].enqueue("a", 600.0, 0.0)
        stalled = workers.start("-c", "1", **env)
        await wait_until(lambda: counts.started(["a"]) == [1], 30)
        stalled.signal(signal.SIGSTOP)
        workers.start("-c", "4", **env)
        await wait_until(lambda: _is_dead(handle), 30)
        [letter] = await app.dead_letters()
        assert letter.reason == "max_deliveries" and letter.task_name == "faults.attempt_of"

        assert await app.replay_dead([letter.entry_id]) == [("default", letter.entry_id)]
        assert await asyncio.wait_for(handle.get(), 20) >= 2
        assert await app.dead_letters() == []
        stalled.signal(signal.SIGKILL)


async def _is_dead(handle: AsyncResult[int]) -> bool:
    return await handle.status() is TaskStatus.DEAD


async def test_replay_by_task_id_or_by_the_entry_id_the_worker_logged(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    dead_key = f"{prefix}:{{default}}:dead"
    worker = workers.start("-c", "4")
    # A producer that disagrees with the worker about the argument's type: the
    # worker refuses the message and dead-letters it.
    async with aqueue.App(redis_url, prefix=prefix) as app:

        @app.task(name="faults.takes_int")
        async def takes_int(x: str) -> int:
            raise NotImplementedError

        first, second = await takes_int.enqueue("one"), await takes_int.enqueue("two")
        await wait_until(lambda: counts.client.xlen(dead_key) == 2, 30)
        logged = re.search(rf"message (\S+) \(task id {second.id}\)", worker.output())
        assert logged is not None, worker.output()

        code, out = await run_cli(redis_url, prefix, "dead", "replay", "faults:app", first.id)
        assert code == 0 and f"replayed {first.id}" in out, out
        code, out = await run_cli(
            redis_url, prefix, "dead", "replay", "faults:app", logged.group(1)
        )
        assert code == 0 and f"replayed {logged.group(1)}" in out, out
        assert "Traceback" not in out
        # Back in the queue, refused again: two more dead-letter lines in the log.
        await wait_until(lambda: worker.output().count("moved to the dead-letter stream") == 4, 30)
