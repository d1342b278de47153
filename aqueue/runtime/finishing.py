"""Finishing: outcomes recorded in batches, fenced, and logged once each.

An outcome frees its task slot as soon as it is handed over, but its message
stays held until the finish script has recorded it (result or error, XACK,
retry or dead-letter, completion push: one script call per queue per round,
at most ``FINISH_CHUNK`` outcomes each). Outcomes waiting to be recorded are
bounded too (backpressure): fetching waits while as many are unrecorded as
the worker has slots (running + read-ahead), so a worker holds at most twice
its slots of messages. An outcome whose lease was lost meanwhile is *fenced*:
the script refuses it, because another worker owns the task now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator

from .._redis.broker import Broker
from .._redis.connection import ANY_REDIS_ERROR, RETRYABLE, is_out_of_memory
from ..core.protocol import ErrorInfo, FinishItem, decode_error, encode_error
from ..core.status import TaskStatus
from .executor import Job
from .running import Observer, Running
from .slots import Backoff, Capacity, WorkerStats

__all__ = ["FINISH_CHUNK", "Finisher"]

# Everything a worker says goes to one logger, which users filter on.
logger = logging.getLogger("aqueue.worker")

#: Largest number of outcomes recorded in one script call.
FINISH_CHUNK = 500
#: Largest number of bytes (results, errors, messages) sent in one script call;
#: a single larger outcome goes alone.
FINISH_CHUNK_BYTES = 32 * 1024 * 1024
#: Tries of an outcome Redis keeps refusing while it answers pings, before
#: it is recorded as a failure that says so.
REFUSED_TRIES = 3
#: Smallest request that Redis may refuse by closing the connection
#: (``proto-max-bulk-len`` is at least 1 MB).
REFUSABLE_BYTES = 1024 * 1024
_NOT_RECORDED_TYPE = "aqueue.errors.OutcomeNotRecorded"


def _size(item: FinishItem) -> int:
    return len(item.result) + len(item.error) + len(item.payload) + len(item.follow)


def _chunks(
    batch: list[tuple[FinishItem, Running | None]],
) -> Iterator[list[tuple[FinishItem, Running | None]]]:
    """The batch cut into script calls of at most FINISH_CHUNK outcomes and
    FINISH_CHUNK_BYTES bytes (one larger outcome goes alone)."""
    chunk: list[tuple[FinishItem, Running | None]] = []
    size = 0
    for pair in batch:
        n = _size(pair[0])
        if chunk and (len(chunk) == FINISH_CHUNK or size + n > FINISH_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(pair)
        size += n
    if chunk:
        yield chunk


def not_recorded(item: FinishItem, error: BaseException) -> FinishItem:
    """A small failure in place of an outcome Redis refused to record."""
    return FinishItem(
        entry_id=item.entry_id,
        task_id=item.task_id,
        state=TaskStatus.FAILED,
        error=encode_error(
            ErrorInfo(
                _NOT_RECORDED_TYPE,
                f"the task's outcome ({item.state.value}, {_size(item):,} bytes) could not be "
                f"recorded: Redis refused it ({type(error).__name__}: {error})",
            )
        ),
        unique=item.unique,
    )


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
        batch = self._queued.get(queue)
        if batch is None:  # the first since the loop took the last round: wake it
            batch = self._queued[queue] = []
            self._wanted.set()
        batch.append((item, running))
        self.unrecorded += 1
        self.capacity.release()

    async def room(self) -> None:
        """Wait while ``concurrency`` outcomes (the worker passes its slots) are
        still unrecorded (backpressure)."""
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
                for chunk in _chunks(batch):
                    await self._record(broker, queue, chunk)

    async def _record(
        self, broker: Broker, queue: str, chunk: list[tuple[FinishItem, Running | None]]
    ) -> None:
        """Record one chunk of outcomes, whatever it takes.

        Redis away is an outage: retry with backoff for as long as it lasts.
        But when Redis answers a ping and still refuses the chunk, the chunk
        itself is at fault (an error reply, or a request Redis won't take):
        its outcomes are recorded one by one, so one unrecordable outcome
        never holds back the others, and an outcome that still can't be
        recorded after a few tries is recorded as a failure that says so.
        """
        tries, replaced = 0, False
        if broker.settings.events:  # the outcome events' values: the script need not read them
            now = time.perf_counter()
            for item, running in chunk:
                if running is not None:
                    item.name, item.attempt = running.job.envelope.task, running.job.attempt
                    item.ran_ms = int((now - running.started) * 1000)
        while True:
            try:
                fenced = await broker.finish(queue, self.consumer, [item for item, _ in chunk])
                break
            except RETRYABLE as exc:
                # A small request is never what Redis refuses: a lost connection
                # then is an outage (or a killed client), ridden out as one; so
                # is a Redis out of memory, however large the request.
                big = sum(_size(item) for item, _ in chunk) >= REFUSABLE_BYTES
                if not big or is_out_of_memory(exc) or not await self._answers(broker):
                    await self.backoff.failed(exc)
                    continue
                error: BaseException = exc
            except ANY_REDIS_ERROR as exc:  # an error reply: not an outage
                error = exc
            if len(chunk) > 1:
                for one in chunk:
                    await self._record(broker, queue, [one])
                return
            tries += 1
            item, running = chunk[0]
            if tries < REFUSED_TRIES:
                await asyncio.sleep(0.1 * tries)
                continue
            if replaced:
                logger.error(
                    "task %s: not even its failure could be recorded (%s); its message stays "
                    "pending and is dead-lettered after max_deliveries",
                    item.task_id,
                    error,
                )
                self._recorded_chunk(chunk, {item.entry_id}, quiet=True)
                return
            chunk = [(not_recorded(item, error), running)]
            tries, replaced = 0, True
        self.backoff.succeeded()
        self._recorded_chunk(chunk, set(fenced))
        if self.handed_off is not None and any(item.follow for item, _ in chunk):
            self.handed_off(queue)

    async def _answers(self, broker: Broker) -> bool:
        """After a lost connection: True when Redis is up (it answers a ping), so
        the request itself was refused rather than Redis being away."""
        try:
            await broker.ping()
        except ANY_REDIS_ERROR:
            return False
        return True

    def _recorded_chunk(
        self, chunk: list[tuple[FinishItem, Running | None]], fenced: set[str], quiet: bool = False
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
                if quiet:
                    continue
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
