"""Finishing: outcomes recorded in batches, fenced, and logged once each.

An outcome frees its task slot as soon as it is handed over, but its message
stays held until the finish script has recorded it (result or error, XACK,
retry or dead-letter, completion push: one script call per queue per round,
at most ``FINISH_CHUNK`` outcomes each). Outcomes waiting to be recorded are
bounded too (backpressure): at most ``concurrency`` of them, so a worker
holds at most running + read-ahead + one batch of messages. An outcome whose
lease was lost meanwhile is *fenced*: the script refuses it, because another
worker owns the task now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .._redis.broker import Broker
from .._redis.connection import RETRYABLE
from ..core.protocol import FinishItem, decode_error
from ..core.status import TaskStatus
from .executor import Job
from .running import Observer, Running
from .slots import Backoff, Capacity, WorkerStats

__all__ = ["FINISH_CHUNK", "Finisher"]

# Everything a worker says goes to one logger, which users filter on.
logger = logging.getLogger("aqueue.worker")

#: Largest number of outcomes recorded in one script call.
FINISH_CHUNK = 500

_WARN = (TaskStatus.FAILED, TaskStatus.DEAD)


class Finisher:
    """Records a worker's outcomes in batches; one per worker process."""

    def __init__(
        self,
        broker: Callable[[], Broker],
        consumer: str,
        concurrency: int,
        capacity: Capacity,
        stats: WorkerStats,
        backoff: Backoff,
        forget: Callable[[Job], None],
    ) -> None:
        self._broker = broker
        self.consumer = consumer
        self.concurrency = concurrency
        self.capacity = capacity
        self.stats = stats
        self.backoff = backoff
        self.forget = forget
        self.observer: Observer | None = None
        #: Workflows: told the queue of a recorded outcome that handed steps on.
        self.handed_off: Callable[[str], None] | None = None
        self.unrecorded = 0
        """Outcomes handed over and not yet recorded (their messages are still held)."""
        self._queued: dict[str, list[tuple[FinishItem, Running | None]]] = {}
        self._wanted = asyncio.Event()
        self._recorded = asyncio.Event()

    @property
    def idle(self) -> bool:
        """True when every outcome handed over has been recorded."""
        return not self._queued and not self.unrecorded

    def submit(self, queue: str, item: FinishItem, running: Running | None) -> None:
        """Hand an outcome over for recording; its task slot is free from now on."""
        self._queued.setdefault(queue, []).append((item, running))
        self.unrecorded += 1
        self.capacity.release()
        self._wanted.set()

    async def room(self) -> None:
        """Wait while ``concurrency`` outcomes are still unrecorded (backpressure)."""
        while self.unrecorded >= self.concurrency:
            self._recorded.clear()
            await self._recorded.wait()

    async def drain(self, seconds: float) -> None:
        """Wait (up to ``seconds``) until every outcome is recorded."""
        deadline = time.monotonic() + seconds
        while not self.idle and time.monotonic() < deadline:
            self._wanted.set()
            await asyncio.sleep(0.01)

    async def loop(self) -> None:
        """Record outcomes in batches: one script call per queue per round."""
        broker = self._broker()
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            pending, self._queued = self._queued, {}
            for queue, batch in pending.items():
                for start in range(0, len(batch), FINISH_CHUNK):
                    chunk = batch[start : start + FINISH_CHUNK]
                    while True:
                        try:
                            fenced = await broker.finish(
                                queue, self.consumer, [item for item, _ in chunk]
                            )
                            break
                        except RETRYABLE as exc:
                            await self.backoff.failed(exc)
                    self.backoff.succeeded()
                    self._recorded_chunk(chunk, set(fenced))
                    if self.handed_off is not None and any(item.follow for item, _ in chunk):
                        self.handed_off(queue)

    def _recorded_chunk(
        self, chunk: list[tuple[FinishItem, Running | None]], fenced: set[str]
    ) -> None:
        self.unrecorded -= len(chunk)
        self._recorded.set()
        info = logger.isEnabledFor(logging.INFO)
        now = time.perf_counter()
        stats = self.stats
        for item, running in chunk:
            if running is not None:
                self.forget(running.job)
            if item.entry_id in fenced:
                stats.fenced += 1
                logger.warning(
                    "task %s: result discarded, its lease was lost and another worker ran it again",
                    item.task_id,
                )
                continue
            state = item.state
            if state is TaskStatus.SUCCEEDED:
                stats.succeeded += 1
            else:
                stats.count(state)
            if self.observer is not None:
                self.observer.finished(item, running)
            if running is not None and (info or state in _WARN):
                log_outcome(item, running.job, (now - running.started) * 1000)


def log_outcome(item: FinishItem, job: Job, ms: float) -> None:
    """The one line logged per task run, with its timing and structured fields."""
    state = item.state
    extra = {
        "task_id": item.task_id,
        "task_name": job.task.name,
        "queue": job.delivery.queue,
        "attempt": job.attempt,
        "duration_ms": round(ms, 3),
        "outcome": state.value,
    }
    if state is TaskStatus.SUCCEEDED:
        logger.info("%s[%s] succeeded in %.2f ms", job.display_name, item.task_id, ms, extra=extra)
        return
    error = decode_error(item.error)
    if state is TaskStatus.RETRYING:
        logger.info(
            "%s[%s] failed (%s: %s), retry in %.1fs (attempt %d)",
            job.display_name,
            item.task_id,
            error.type,
            error.message,
            item.retry_delay_ms / 1000,
            job.attempt,
            extra=extra,
        )
        return
    logger.log(
        logging.WARNING if state in _WARN else logging.INFO,
        "%s[%s] %s in %.2f ms: %s: %s",
        job.display_name,
        item.task_id,
        state.value,
        ms,
        error.type,
        error.message,
        extra=extra,
    )


def log_refused(item: FinishItem, queue: str, entry_id: str) -> None:
    """The line for a message that never ran (dead-lettered, expired)."""
    error = decode_error(item.error)
    if item.state is TaskStatus.DEAD:
        logger.error(
            "message %s (task id %s) moved to the dead-letter stream: %s. "
            "Inspect it with `aqueue dead list --queue %s`",
            entry_id,
            item.task_id,
            error.message,
            queue,
            extra={"task_id": item.task_id, "queue": queue, "reason": item.reason},
        )
    else:
        logger.info("task %s %s: %s", item.task_id, item.state.value, error.message)
