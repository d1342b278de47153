"""What the dashboard's pages show, read from Redis, and each queue's recent throughput.

Every read on a page load is bounded: a few commands per queue, lists capped
at a limit, never ``KEYS`` or a keyspace ``SCAN``. Without an App (only a
Redis URL) the queues and schedules have to be found by scanning, so a
background :class:`Sampler` does that once a minute and pages use what it
found. The sampler also records, every second, how many entries each queue's
consumer group has finished, which gives the throughput charts; that history
starts when the dashboard starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .._redis.connection import ANY_REDIS_ERROR
from ..app import App
from ..client import Client
from ..core.errors import TaskFailed
from ..core.frames import decode_progress
from ..core.protocol import MessageError
from ..core.records import TaskInfo, value_of
from ..core.status import TaskStatus
from ..deadletter import DeadLetter, list_dead
from ..runtime.monitor import snapshot
from .attempts import Attempts, read_attempts
from .background import BackgroundLoop
from .history import History
from .listing import RecentOutcomes, TaskRow, list_tasks, waiting_message
from .redaction import Redactor
from .workflow_links import record_links, workflow_links

__all__ = ["QueuePage", "Readings", "Sampler", "ScheduleRow", "TaskPage"]

logger = logging.getLogger(__name__)

#: Seconds between two throughput samples.
SAMPLE_INTERVAL = 1.0
#: Seconds of throughput history kept and drawn.
HISTORY_SECONDS = 300
#: Width of one bar of the throughput chart, in seconds.
CHART_BUCKET = 5
#: Seconds between two searches for queues and schedules (without an App only).
DISCOVERY_INTERVAL = 60.0
_any = msgspec.msgpack.Decoder()


@dataclass
class TaskPage:
    """Everything known about one task."""

    info: TaskInfo
    progress: tuple[Any, str] | None = None
    result: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    args: str | None = None
    kwargs: str | None = None
    can_abort: bool = False
    can_retry: bool = False
    """A failed task whose message its record kept: it can be run again."""
    chunks: list[str] = field(default_factory=list)
    """A streaming task's first chunks (see ``chunk_count``)."""
    chunk_count: int = 0
    follows: list[tuple[str, str, str | None]] = field(default_factory=list)
    """Workflows: (how, queue, task id or None) of the step that handed this task on
    and of what comes after it."""
    attempts: Attempts | None = None
    """Each attempt (from the event stream when events are on), else the last one."""
    timeline: list[tuple[str, float]] = field(default_factory=list)
    """(what happened, when), oldest first, as far as the record tells."""


@dataclass
class QueuePage:
    """One queue: its figures, the next waiting and delayed tasks, what runs."""

    figures: dict[str, Any]
    waiting: list[tuple[str, str, str | None, float]]
    """(stream entry, task id, task name, enqueued at)."""
    delayed: list[tuple[str, float]]
    """(task id, due at)."""
    running: list[dict[str, Any]]


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    queue: str
    schedule: str
    last: float | None
    next: float | None


@dataclass
class _History:
    samples: deque[tuple[float, int | None]] = field(
        default_factory=lambda: deque(maxlen=int(HISTORY_SECONDS / SAMPLE_INTERVAL) + 2)
    )


class Sampler(BackgroundLoop):
    """Background reads: throughput samples every second, discovery once a minute."""

    task_name = "aqueue-dashboard-sampler"

    def __init__(self, app: App, from_code: bool, queues: Sequence[str] | None = None) -> None:
        self.app = app
        #: Given queues, or an App's, are known; otherwise they are found in Redis.
        self.from_code = from_code or bool(queues)
        self.queues: list[str] = list(queues or (app.queues if from_code else []))
        self.claimed: list[tuple[str, str, float]] = []
        self.history: dict[str, _History] = {}
        self._discovered = asyncio.Event()
        if self.from_code:
            self._discovered.set()

    async def wait_discovered(self, timeout: float | None = 10.0) -> None:  # noqa: ASYNC109
        """Wait for the first search for queues (at most ``timeout`` seconds; None: no limit)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._discovered.wait()

    async def _run(self) -> None:
        next_discovery = 0.0
        while True:
            try:
                if not self.from_code and time.monotonic() >= next_discovery:
                    views = self.app.client.views
                    found = await views.discover_queues()
                    self.queues = found or [self.app.settings.default_queue]
                    self.claimed = await views.claimed_ticks()
                    next_discovery = time.monotonic() + DISCOVERY_INTERVAL
                    self._discovered.set()
                await self.sample()
            except ANY_REDIS_ERROR as exc:
                logger.warning("dashboard: can't read Redis (%s); trying again", exc)
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def sample(self) -> None:
        """Record how many entries each queue has finished so far."""
        views = self.app.client.views
        now = time.time()
        for queue in self.queues:
            read, pending, _ = await views.group_progress(queue)
            finished = read - pending if read is not None else None
            self.history.setdefault(queue, _History()).samples.append((now, finished))

    def throughput(self, queue: str, now: float | None = None) -> list[float | None]:
        """Tasks finished per second in each :data:`CHART_BUCKET` of the history, oldest first.

        None where nothing was sampled (before the dashboard started).
        """
        now = time.time() if now is None else now
        buckets = HISTORY_SECONDS // CHART_BUCKET
        samples = list(self.history.get(queue, _History()).samples)
        rates: list[float | None] = []
        for n in range(buckets):
            start = now - HISTORY_SECONDS + n * CHART_BUCKET
            end = start + CHART_BUCKET
            inside = [(t, f) for t, f in samples if start <= t < end and f is not None]
            before = [(t, f) for t, f in samples if t < start and f is not None]
            points = before[-1:] + inside
            if len(points) < 2:
                rates.append(None)
                continue
            (t0, f0), (t1, f1) = points[0], points[-1]
            assert f0 is not None and f1 is not None
            rates.append(max(0, f1 - f0) / (t1 - t0) if t1 > t0 else 0.0)
        return rates


class Readings:
    """The data behind each page, for one App."""

    def __init__(
        self,
        app: App,
        from_code: bool,
        queues: Sequence[str] | None = None,
        redact_all: bool = False,
    ) -> None:
        self.app = app
        self.sampler = Sampler(app, from_code, queues)
        #: What may be shown of a task's values (its ``redact=`` setting).
        self.redactor = Redactor(app, redact_all)
        #: Outcomes heard since the dashboard started; the latency samples.
        self.outcomes = RecentOutcomes(app.client, lambda: self.sampler.queues)
        #: With events on, the minutes before the dashboard started.
        self.history = History(
            app.client,
            self.outcomes,
            lambda q: self.sampler.history.setdefault(q, _History()).samples,
        )

    @property
    def client(self) -> Client:
        return self.app.client

    async def queues(self) -> list[str]:
        self.sampler.start()
        self.outcomes.start()
        self.history.start()
        await self.sampler.wait_discovered()
        return list(self.sampler.queues)

    async def tasks(
        self, state: TaskStatus, queues: Sequence[str], name: str | None, limit: int
    ) -> list[TaskRow]:
        """Tasks in ``state`` (bounded reads; see :mod:`.listing`)."""
        return await list_tasks(self.client, self.outcomes, queues, state, name, limit)

    async def overview(self) -> dict[str, Any]:
        """The ``aqueue inspect`` snapshot plus each queue's throughput history."""
        queues = await self.queues()
        data = await snapshot(self.client, queues, self.app.tasks.values())
        data["throughput"] = {q: self.sampler.throughput(q) for q in queues}
        data["charts_from"] = self.history.charts_from()
        buckets = HISTORY_SECONDS // CHART_BUCKET
        data["latency"] = {q: self.outcomes.latency_chart(q, buckets, CHART_BUCKET) for q in queues}
        return data

    async def find_queue(self, task_id: str) -> str | None:
        return await self.client.views.find_queue(task_id, await self.queues())

    async def task(self, task_id: str, queue: str | None = None) -> TaskPage | None:
        """The task's page, or None when no queue holds a record of it."""
        queue = queue or await self.find_queue(task_id)
        if queue is None:
            return None
        views = self.client.views
        rec = await views.task_record(queue, task_id)
        if not rec:
            return None
        info = TaskInfo.from_record(task_id, queue, rec)
        show = self.redactor.show
        page = TaskPage(info=info, can_abort=not info.status.is_final)
        page.timeline = _timeline(info)
        if rec.get(b"progress"):
            page.progress = decode_progress(rec[b"progress"])
        if info.status is TaskStatus.SUCCEEDED:
            try:
                page.result = show(info.name, value_of(task_id, rec))
            except Exception as exc:  # a value this process can't decode
                page.result = f"(can't decode the result: {exc})"
        elif info.status.is_final:
            try:
                value_of(task_id, rec)
            except TaskFailed as failure:
                page.error_type = failure.exc_type
                page.error_message = failure.message
                page.traceback = failure.traceback or None
        elif info.error:  # retrying: the last attempt's error
            page.error_type, _, page.error_message = info.error.partition(": ")
        entry = rec.get(b"entry", b"").decode() or None
        # A failed task's record keeps its message (see finish.lua).
        payload = rec.get(b"msg") or await views.task_message(queue, task_id, entry)
        if payload is None and info.status is TaskStatus.QUEUED:
            payload = await waiting_message(self.client, queue, task_id)
        page.can_retry = info.status is TaskStatus.FAILED and b"msg" in rec
        # Workflows: the record names the step's parent and, once its message is
        # gone (it succeeded), what it handed on.
        handed = await record_links(self.client, queue, rec, with_next=payload is None)
        page.follows = [(link.how, link.queue, link.task_id) for link in handed]
        if payload is not None:
            try:
                envelope = self.client.codec.unpack(payload)
                page.args = show(info.name, tuple(_any.decode(envelope.args)))
                page.kwargs = show(info.name, _any.decode(envelope.kwargs))
                links = await workflow_links(self.client, envelope)
                page.follows += [(link.how, link.queue, link.task_id) for link in links]
            except (MessageError, msgspec.DecodeError) as exc:
                page.args = f"(can't read the message: {exc})"
        await self._chunks(page, queue)
        page.attempts = await read_attempts(self.client, info)
        return page

    async def _chunks(self, page: TaskPage, queue: str, shown_at_most: int = 50) -> None:
        """A streaming task's first chunks (one bounded read)."""
        chunks = await self.client.broker.read_chunks(queue, page.info.id, "0-0", None)
        page.chunk_count = len(chunks)
        for _, raw in chunks[:shown_at_most]:
            try:
                value = _any.decode(raw)
            except msgspec.DecodeError:
                value = "(can't decode this chunk)"
            page.chunks.append(self.redactor.show(page.info.name, value))

    async def queue_page(self, queue: str, limit: int = 50) -> QueuePage:
        views = self.client.views
        figures = await views.queue_figures(queue)
        waiting: list[tuple[str, str, str | None, float]] = []
        for entry, fields in await views.waiting_entries(queue, limit):
            name: str | None
            try:
                name = self.client.codec.unpack(fields.get(b"m", b"")).task
            except MessageError:
                name = None
            task_id = fields.get(b"id", b"").decode("utf-8", "replace")
            waiting.append((entry, task_id, name, int(entry.split("-")[0]) / 1000))
        delayed = await views.delayed_tasks(queue, limit)
        workers = await views.live_workers([queue])
        running = [
            dict(task, worker=w["name"])
            for w in workers
            for task in w["running"]
            if task["queue"] == queue
        ][:limit]
        return QueuePage(figures, waiting, delayed, running)

    async def dead(self, queue: str | None, limit: int) -> list[DeadLetter]:
        queues = [queue] if queue else await self.queues()
        letters = await list_dead(self.client, queues, limit)
        return sorted(letters, key=lambda d: d.at or 0, reverse=True)[:limit]

    async def schedules(self) -> list[ScheduleRow]:
        """Periodic tasks with their last claimed and next tick (without an App: claimed
        only), then the schedules kept in Redis."""
        stored = [
            ScheduleRow(
                info.name,
                info.queue or self.app.settings.default_queue,
                f"{info.describe} \u2192 {info.task} (kept in Redis"
                + (", paused)" if info.paused else ")"),
                info.last_tick,
                info.next_run,
            )
            for info in await self.app.schedules.list(code=False)
        ]
        kept = {row.name for row in stored}
        if not self.app.periodic_tasks:
            await self.queues()
            return [
                ScheduleRow(name, queue, "(declared in code: give -A MODULE:APP)", tick, None)
                for queue, name, tick in self.sampler.claimed
                if name not in kept
            ] + stored
        views = self.client.views
        now = time.time()
        rows = []
        for name, periodic in sorted(self.app.periodic_tasks.items()):
            rows.append(
                ScheduleRow(
                    name,
                    periodic.queue,
                    periodic.schedule.describe(),
                    await views.last_tick(periodic.queue, name),
                    periodic.schedule.next_after(now),
                )
            )
        return rows + stored


def _timeline(info: TaskInfo) -> list[tuple[str, float]]:
    """What the record tells of a task's life: it keeps the last attempt's times."""
    moments = [("enqueued", info.enqueued_at)]
    if info.eta is not None:
        moments.append(("due" if info.status is not TaskStatus.RETRYING else "retry due", info.eta))
    if info.started_at is not None:
        label = f"attempt {info.attempt} started" if info.attempt else "started"
        moments.append((label, info.started_at))
    if info.finished_at is not None:
        moments.append((info.status.value, info.finished_at))
    return sorted(((what, at) for what, at in moments if at is not None), key=lambda m: m[1])
