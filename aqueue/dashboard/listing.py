"""Tasks by state for the dashboard, with bounded reads, and the latency samples.

Redis keeps no index of finished tasks (a record is a hash under its id, with
a TTL), and a page load may not scan the keyspace. Waiting, delayed,
retrying, running and dead tasks are read where they live (the stream past
the group's cursor, the delayed set, the workers' reports, the dead-letter
stream), each capped. Succeeded, failed, aborted and expired tasks are those
:class:`RecentOutcomes` heard about on the queues' completion channels since
the dashboard started (the last :data:`RECENT_PER_QUEUE` of each queue); the
same pushes, with the records of a bounded sample, give the latency chart
(enqueue to finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._redis.connection import ANY_REDIS_ERROR
from ..client import Client
from ..core.frames import parse_push
from ..core.keys import QueueKeys
from ..core.protocol import MessageError, decode_error
from ..core.status import TaskStatus
from ..deadletter import list_dead
from .background import BackgroundLoop

__all__ = ["LISTED_STATES", "RecentOutcomes", "TaskRow", "list_tasks", "waiting_message"]

logger = logging.getLogger(__name__)

#: Finished tasks remembered per queue (newest kept).
RECENT_PER_QUEUE = 1000
#: Records read per second, at most, to sample latency.
LATENCY_SAMPLE = 100
#: Seconds of latency history kept (as for the throughput charts).
LATENCY_HISTORY = 300

#: Waiting entries searched for a queued task's message (its page's arguments).
WAITING_SEARCHED = 100

#: The states the tasks page lists, in the order of its tabs.
LISTED_STATES = (
    TaskStatus.QUEUED,
    TaskStatus.RUNNING,
    TaskStatus.SCHEDULED,
    TaskStatus.RETRYING,
    TaskStatus.SUCCEEDED,
    TaskStatus.FAILED,
    TaskStatus.DEAD,
    TaskStatus.ABORTED,
    TaskStatus.EXPIRED,
)
_FINISHED = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.ABORTED, TaskStatus.EXPIRED}


@dataclass(frozen=True)
class TaskRow:
    """One line of the tasks page."""

    id: str
    queue: str
    state: TaskStatus
    name: str | None
    at: float | None
    """When it entered that state, as far as known (due time for delayed ones)."""
    detail: str = ""


class RecentOutcomes(BackgroundLoop):
    """Listens to the queues' completion pushes: recent outcomes and latency samples."""

    task_name = "aqueue-dashboard-outcomes"

    def __init__(self, client: Client, queues: Callable[[], Sequence[str]]) -> None:
        self.client = client
        self._queues = queues
        #: Queue -> (task id, state or None when the push named only the id, heard at).
        self.recent: dict[str, deque[tuple[str, str | None, float]]] = {}
        #: Queue -> (finished at, seconds from enqueue to finish).
        self.latency: dict[str, deque[tuple[float, float]]] = {}
        self._to_sample: dict[str, list[str]] = {}
        #: The queues whose completion channel is listened to by now.
        self.listening: set[str] = set()

    async def _run(self) -> None:
        subscribed = self.listening
        subscription = self.client.broker.subscription()
        next_sample = time.monotonic() + 1.0
        try:
            while True:
                try:
                    wanted = [q for q in self._queues() if q not in subscribed]
                    if wanted:
                        keys = [QueueKeys(self.client.settings.prefix, q) for q in wanted]
                        await subscription.subscribe(*(k.done_channel for k in keys))
                        subscribed.update(wanted)
                    if not subscribed:  # no queue known yet (found by a search)
                        await asyncio.sleep(0.5)
                        continue
                    message = await subscription.next(0.5, confirmations=False)
                    if message is not None and message.kind == "message":
                        self.heard(_queue_of(message.channel), message.data)
                    if time.monotonic() >= next_sample:
                        next_sample = time.monotonic() + 1.0
                        await self._sample_latency()
                except ANY_REDIS_ERROR as exc:
                    logger.warning("dashboard: completion channel lost (%s); resubscribing", exc)
                    subscribed.clear()
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(*ANY_REDIS_ERROR):
                        await subscription.reconnect()
        finally:
            await subscription.close()

    def heard(self, queue: str, data: bytes) -> None:
        """Note the outcomes of one completion push of ``queue``."""
        now = time.time()
        recent = self.recent.setdefault(queue, deque(maxlen=RECENT_PER_QUEUE))
        sample = self._to_sample.setdefault(queue, [])
        if data[:1] == b"\0":
            try:
                pushed = parse_push(data)
            except Exception:  # a frame this version can't read: skip it, keep listening
                return
            for task_id, state, _ in pushed:
                recent.append((task_id, state.decode(), now))
                if len(sample) < LATENCY_SAMPLE:
                    sample.append(task_id)
        else:  # purged or reclaimed-to-dead: ids only
            for raw in data.split(b"\n"):
                if raw:
                    recent.append((raw.decode("utf-8", "replace"), None, now))

    async def _sample_latency(self) -> None:
        batches, self._to_sample = self._to_sample, {}
        for queue, ids in batches.items():
            if not ids:
                continue
            times = await self.client.views.record_times(queue, ids)
            history = self.latency.setdefault(queue, deque(maxlen=LATENCY_SAMPLE * LATENCY_HISTORY))
            for enq, fin in times:
                if enq is not None and fin is not None:
                    history.append((fin / 1000, max(0.0, (fin - enq) / 1000)))

    def latency_chart(self, queue: str, buckets: int, width: float) -> list[float | None]:
        """Median seconds from enqueue to finish in each ``width``-second bucket, oldest first."""
        now = time.time()
        history = list(self.latency.get(queue, ()))
        out: list[float | None] = []
        for n in range(buckets):
            start = now - buckets * width + n * width
            inside = sorted(lat for at, lat in history if start <= at < start + width)
            out.append(inside[len(inside) // 2] if inside else None)
        return out


def _queue_of(channel: bytes) -> str:
    # ``<prefix>:{<queue>}:done``: the queue is inside the hash tag.
    text = channel.decode("utf-8", "replace")
    return text[text.find("{") + 1 : text.rfind("}")]


async def list_tasks(
    client: Client,
    outcomes: RecentOutcomes,
    queues: Sequence[str],
    state: TaskStatus,
    name: str | None = None,
    limit: int = 100,
) -> list[TaskRow]:
    """Up to ``limit`` tasks in ``state`` (newest or soonest first), ``name`` a part of
    the task's name (case-insensitive)."""
    rows: list[TaskRow] = []
    views = client.views
    wanted = (name or "").strip().lower()

    def keep(row: TaskRow) -> bool:
        return not wanted or wanted in (row.name or "").lower()

    if state is TaskStatus.QUEUED:
        for queue in queues:
            for entry, fields in await views.waiting_entries(queue, limit):
                try:
                    task_name: str | None = client.codec.unpack(fields.get(b"m", b"")).task
                except MessageError:
                    task_name = None
                task_id = fields.get(b"id", b"").decode("utf-8", "replace")
                enqueued = int(entry.split("-")[0]) / 1000
                rows.append(TaskRow(task_id, queue, state, task_name, enqueued))
    elif state is TaskStatus.RUNNING:
        rows += [
            TaskRow(
                task["id"],
                task["queue"],
                state,
                task["name"],
                task.get("started_at"),
                f"attempt {task['attempt']} on {worker['name']}",
            )
            for worker in await views.live_workers(list(queues))
            for task in worker["running"]
            if task["queue"] in queues
        ]
    elif state in (TaskStatus.SCHEDULED, TaskStatus.RETRYING):
        for queue in queues:
            delayed = await views.delayed_tasks(queue, limit)
            records = await client.broker.records(queue, [tid for tid, _ in delayed])
            for (task_id, due), rec in zip(delayed, records, strict=True):
                if rec.get(b"state", b"").decode() == state.value:
                    rows.append(
                        TaskRow(
                            task_id,
                            queue,
                            state,
                            _text(rec.get(b"name")),
                            due,
                            f"attempt {_text(rec.get(b'attempt')) or 0} done"
                            if state is TaskStatus.RETRYING
                            else "",
                        )
                    )
    elif state is TaskStatus.DEAD:
        rows += [
            TaskRow(
                letter.task_id or letter.entry_id,
                letter.queue,
                state,
                letter.task_name,
                letter.at,
                letter.reason,
            )
            for letter in await list_dead(client, list(queues), limit)
        ]
    elif state in _FINISHED:
        for queue in queues:
            heard = [
                (tid, at)
                for tid, st, at in reversed(outcomes.recent.get(queue, ()))
                if st in (state.value, None)
            ][: limit * 2]
            records = await client.broker.records(queue, [tid for tid, _ in heard])
            seen: set[str] = set()
            for (task_id, at), rec in zip(heard, records, strict=True):
                if task_id in seen or rec.get(b"state", b"").decode() != state.value:
                    continue
                seen.add(task_id)
                finished = rec.get(b"finished")
                error = rec.get(b"error")
                rows.append(
                    TaskRow(
                        task_id,
                        queue,
                        state,
                        _text(rec.get(b"name")),
                        int(finished) / 1000 if finished else at,
                        _error_summary(error) if error else "",
                    )
                )
    rows = [r for r in rows if keep(r)]
    rows.sort(key=lambda r: r.at or 0.0, reverse=state not in _SOONEST_FIRST)
    return rows[:limit]


async def waiting_message(client: Client, queue: str, task_id: str) -> bytes | None:
    """A queued task's message when it is among the next :data:`WAITING_SEARCHED`
    waiting in its queue (one bounded read), else None."""
    wanted = task_id.encode()
    for _, fields in await client.views.waiting_entries(queue, WAITING_SEARCHED):
        if fields.get(b"id") == wanted:
            return fields.get(b"m")
    return None


_SOONEST_FIRST = {TaskStatus.SCHEDULED, TaskStatus.RETRYING, TaskStatus.QUEUED}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _error_summary(raw: bytes) -> str:
    # Only the type: the message may hold values a redacted task hides (its
    # page decides what to show).
    try:
        return decode_error(raw).type
    except Exception:  # an error this version can't read
        return "error"
