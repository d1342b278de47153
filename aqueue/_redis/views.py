"""Reads that change no task's state: queue figures, the worker registry, lookups.

What ``aqueue inspect``, ``check``, metrics, the dead-letter listing and
``schedule`` show comes from here. The worker registry is the one write:
each worker keeps a short JSON description of itself under
``<prefix>:worker:<name>`` with a TTL of a few heartbeats, and deletes it
when it stops. Workers are found through the per-queue heartbeat sets, so
nothing scans the keyspace, except :meth:`RedisViews.discover_queues` for an
operator command run without an App.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..core.keys import (
    CONSUMER_GROUP,
    QueueKeys,
    queue_registry_key,
    schedule_keys,
    worker_info_key,
)

__all__ = ["WAITING_COUNT_CAP", "RedisViews"]

#: Most waiting entries counted one by one when Redis can't say (after a purge).
WAITING_COUNT_CAP = 10_000
_QUEUE_KEY_SUFFIXES = (":stream", ":delayed", ":dead", ":workers")


class RedisViews:
    """Read-only views of one App's keys (one prefix)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def keys(self, queue: str) -> QueueKeys:
        return QueueKeys(self.prefix, queue)

    # -- tasks -------------------------------------------------------------------

    async def find_queue(self, task_id: str, queues: Sequence[str]) -> str | None:
        """The first of ``queues`` holding a record for ``task_id`` (None: none does)."""
        if not queues:
            return None
        if len(queues) == 1:
            return (
                queues[0] if await self.client.exists(self.keys(queues[0]).task(task_id)) else None
            )
        async with self.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.exists(self.keys(queue).task(task_id))
            found = await pipe.execute()
        for queue, exists in zip(queues, found, strict=True):
            if exists:
                return queue
        return None

    async def last_tick(self, queue: str, schedule: str) -> float | None:
        """The last tick claimed for a periodic schedule (epoch seconds; None: never)."""
        raw = await self.client.get(self.keys(queue).periodic(schedule))
        return int(raw) / 1000 if raw is not None else None

    async def schedules_version(self) -> int:
        """Bumped on every change to the schedules kept in Redis (0: never changed)."""
        raw = await self.client.get(schedule_keys(self.prefix)[1])
        return int(raw) if raw is not None else 0

    async def stored_schedules(self) -> dict[str, bytes]:
        """The schedules kept in Redis: name -> encoded schedule."""
        raw: Any = await self.client.hgetall(schedule_keys(self.prefix)[0])
        return {_text(name): value for name, value in raw.items()}

    async def claimed_ticks(self) -> list[tuple[str, str, float]]:
        """(queue, schedule, last tick) of every periodic schedule with keys here.

        Scans the keyspace: for ``aqueue schedule`` without an App.
        """
        head = f"{self.prefix}:{{"
        found: list[tuple[str, str, float]] = []
        async for raw in self.client.scan_iter(match=f"{self.prefix}:{{*}}:periodic:*", count=1000):
            key = _text(raw)
            queue, sep, rest = key[len(head) :].partition("}:periodic:")
            if not sep:
                continue
            tick = await self.client.get(raw)
            if tick is not None:
                found.append((queue, rest, int(tick) / 1000))
        return sorted(found)

    async def dead_entries(
        self, queue: str, limit: int, before: str = "+"
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Dead-letter entries of a queue, newest first, up to ``before`` (inclusive)."""
        reply: Any = await self.client.xrevrange(self.keys(queue).dead, before, "-", count=limit)
        return [(_text(entry), dict(fields)) for entry, fields in reply]

    async def waiting_messages(
        self, queue: str, limit: int = 1000
    ) -> list[tuple[bytes, float | None]]:
        """Messages of a queue no worker has read yet: (payload, due time or None).

        Stream entries past the consumer group's last delivered id come first
        (due now), then the delayed set in due order. For the test kit and
        inspection, never for a hot path.
        """
        keys = self.keys(queue)
        client = self.client
        last_delivered = "0-0"
        if await client.exists(keys.stream):
            for group in await client.xinfo_groups(keys.stream):
                if _text(group.get("name")) == CONSUMER_GROUP:
                    last_delivered = _text(group.get("last-delivered-id")) or "0-0"
        entries: Any = await client.xrange(keys.stream, f"({last_delivered}", "+", count=limit)
        found: list[tuple[bytes, float | None]] = [
            (bytes(fields[b"m"]), None) for _, fields in entries if b"m" in fields
        ]
        delayed: Any = await client.zrange(keys.delayed, 0, limit - 1, withscores=True)
        if delayed:
            payloads: Any = await client.hmget(keys.delayed_payloads, [tid for tid, _ in delayed])
            found += [
                (payload, score / 1000)
                for (_, score), payload in zip(delayed, payloads, strict=True)
                if payload is not None
            ]
        return found

    # -- queues ------------------------------------------------------------------

    async def registered_queues(self) -> list[str]:
        """Every queue in the queue registry (enqueued to, or read by a worker), sorted."""
        members: Any = await self.client.smembers(queue_registry_key(self.prefix))
        return sorted(_text(m) for m in members)

    async def discover_queues(self) -> list[str]:
        """Every queue with keys under this prefix (for operator commands without an App).

        The registry, plus a scan of the keyspace for queues written before
        there was one: for the CLI, never for a hot path.
        """
        found: set[str] = set(await self.registered_queues())
        head = f"{self.prefix}:{{"
        async for raw in self.client.scan_iter(match=f"{self.prefix}:{{*}}:*", count=1000):
            key = _text(raw)
            if key.endswith(_QUEUE_KEY_SUFFIXES) and key.startswith(head):
                queue, sep, _ = key[len(head) :].partition("}:")
                if sep:
                    found.add(queue)
        return sorted(found)

    async def queue_figures(self, queue: str) -> dict[str, Any]:
        """Depths of one queue: waiting, running (pending), delayed, dead, lag, oldest age.

        ``waiting`` counts urgent tasks (a priority above 0) and tasks waiting for
        a concurrency token too; ``urgent`` and ``over_limit`` count them apart.
        """
        keys = self.keys(queue)
        client = self.client
        async with client.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.stream)
            pipe.zcard(keys.delayed)
            pipe.xlen(keys.dead)
            pipe.zcard(keys.workers)
            # Flow control: urgent tasks and tasks waiting for a concurrency token.
            pipe.zcard(keys.urgent)
            pipe.hlen(keys.held)
            pipe.exists(keys.urgent_stream)
            length, delayed, dead, consumers, urgent, held, has_urgent = await pipe.execute()
        pending = 0
        lag: int | None = None
        last_delivered = "0-0"
        if length:
            for group in await client.xinfo_groups(keys.stream):
                if _text(group.get("name")) == CONSUMER_GROUP:
                    pending = int(group.get("pending") or 0)
                    raw_lag = group.get("lag")
                    lag = int(raw_lag) if raw_lag is not None else None
                    last_delivered = _text(group.get("last-delivered-id")) or "0-0"
        oldest_age: float | None = None
        first = await client.xrange(keys.stream, f"({last_delivered}", "+", count=1)
        if first:
            entry_ms = int(_text(first[0][0]).split("-")[0])
            oldest_age = round(max(0.0, time.time() - entry_ms / 1000), 3)
        # Acknowledged entries are trimmed in batches, so the stream's length is not
        # the backlog: what waits is what comes after the group's last delivered id.
        # Redis tracks that count as the group's lag, unless deletions past that id
        # (a purge) make it unknown; then count, up to a cap.
        if lag is not None:
            waiting = lag
        elif first:
            after = await client.xrange(
                keys.stream, f"({last_delivered}", "+", count=WAITING_COUNT_CAP
            )
            waiting = len(after or [])
        else:
            waiting = 0
        if has_urgent:
            for group in await client.xinfo_groups(keys.urgent_stream):
                if _text(group.get("name")) == CONSUMER_GROUP:
                    pending += int(group.get("pending") or 0)
        waiting += int(urgent) + int(held)
        return {
            "queue": queue,
            "stream_length": int(length),
            "waiting": waiting,
            "pending": pending,
            "lag": waiting,
            "delayed": int(delayed),
            "dead": int(dead),
            "heartbeats": int(consumers),
            "oldest_waiting_age": oldest_age,
            "urgent": int(urgent),
            "over_limit": int(held),
        }

    # -- the worker registry -------------------------------------------------------

    async def publish_worker(self, name: str, description: dict[str, Any], ttl_ms: int) -> None:
        """Write one worker's description with a TTL (on every heartbeat)."""
        await self.client.set(
            worker_info_key(self.prefix, name), json.dumps(description), px=ttl_ms
        )

    async def delete_worker(self, name: str) -> None:
        await self.client.delete(worker_info_key(self.prefix, name))

    async def live_workers(self, queues: Sequence[str]) -> list[dict[str, Any]]:
        """Descriptions of the workers alive on ``queues``, by node then name."""
        client = self.client
        names: set[str] = set()
        for queue in queues:
            members: list[Any] = await client.zrange(self.keys(queue).workers, 0, -1)
            names.update(_text(m) for m in members)
        if not names:
            return []
        ordered = sorted(names)
        async with client.pipeline(transaction=False) as pipe:
            for name in ordered:
                pipe.get(worker_info_key(self.prefix, name))
            raw = await pipe.execute()
        found = [json.loads(r) for r in raw if r]
        return sorted(found, key=lambda w: (w.get("node") or "", w["name"]))

    # -- what the dashboard shows (each read bounded by ``limit``) --------------------

    async def group_progress(self, queue: str) -> tuple[int | None, int, str]:
        """(entries read by the consumer group so far, pending, last delivered id).

        Entries read minus pending is how many entries were finished: its change
        over time is the queue's throughput. The count is None when Redis can't
        say (after deletions in the middle of the stream).
        """
        try:
            groups: list[dict[Any, Any]] = await self.client.xinfo_groups(self.keys(queue).stream)
        except ResponseError:  # no stream yet
            return 0, 0, "0-0"
        for group in groups:
            if _text(group.get("name")) == CONSUMER_GROUP:
                raw = group.get("entries-read")
                read = int(raw) if raw is not None else None
                last = _text(group.get("last-delivered-id")) or "0-0"
                return read, int(group.get("pending") or 0), last
        return 0, 0, "0-0"

    async def waiting_entries(self, queue: str, limit: int) -> list[tuple[str, dict[bytes, bytes]]]:
        """The next ``limit`` stream entries no worker has read yet, oldest first."""
        _, _, last_delivered = await self.group_progress(queue)
        reply: Any = await self.client.xrange(
            self.keys(queue).stream, f"({last_delivered}", "+", count=limit
        )
        return [(_text(entry), dict(fields)) for entry, fields in reply]

    async def delayed_tasks(self, queue: str, limit: int) -> list[tuple[str, float]]:
        """(task id, due time in epoch seconds) of the ``limit`` soonest delayed tasks."""
        reply: Any = await self.client.zrange(
            self.keys(queue).delayed, 0, limit - 1, withscores=True
        )
        return [(_text(tid), float(score) / 1000) for tid, score in reply]

    async def task_message(self, queue: str, task_id: str, entry: str | None) -> bytes | None:
        """The encoded message of a task while Redis still holds it (None: it doesn't).

        A delayed or retrying task's message waits beside the delayed set; a
        running one is its stream entry (``entry``, from the task's record).
        A finished task's message is gone.
        """
        keys = self.keys(queue)
        payload: Any = await self.client.hget(keys.delayed_payloads, task_id)
        if payload is not None:
            return bytes(payload)
        if not entry:
            return None
        reply: Any = await self.client.xrange(keys.stream, entry, entry, count=1)
        if not reply:
            return None
        fields = dict(reply[0][1])
        found: bytes | None = fields.get(b"m")
        return found if fields.get(b"id", b"").decode() == task_id else None

    async def record_times(
        self, queue: str, task_ids: Sequence[str]
    ) -> list[tuple[int | None, int | None]]:
        """(enqueued, finished) in ms of each task's record, in one round trip
        (None where unknown); for the dashboard's latency chart."""
        keys = self.keys(queue)
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(keys.task(task_id), ["enq", "finished"])
            replies: Any = await pipe.execute()
        return [(int(enq) if enq else None, int(fin) if fin else None) for enq, fin in replies]

    async def task_record(self, queue: str, task_id: str) -> dict[bytes, bytes]:
        """The hash under the task's id (empty when there is none)."""
        record: Any = await self.client.hgetall(self.keys(queue).task(task_id))
        return dict(record)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
