"""Fetching: reading a queue's stream into free slots, and accepting what arrives.

One fetch loop per queue reserves free slots, then asks Redis for at most
that many entries: under load one script call reads a batch and marks it
running. Once the stream ran dry the same call first waits for an entry
(``BLOCK_MS``, well below the socket timeout), in the same round trip, so an
idle worker never polls and a task that arrives starts after one round trip.
What arrives is *accepted*: marked running (unless the fetch script did),
checked by the executor, then admitted to the runner or, when it must not
run, handed straight to the finisher (dead letter, expiry).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .._redis.broker import Broker
from .._redis.connection import RETRYABLE
from ..core.protocol import Delivery, FinishItem
from .executor import Executor
from .finishing import Finisher, log_refused
from .running import Inflight, Runner
from .slots import Backoff, Capacity, WorkerStats
from .workflow import refused_follow_ups

__all__ = ["BLOCK_MS", "Fetcher"]

# Everything a worker says goes to one logger, which users filter on.
logger = logging.getLogger("aqueue.worker")

#: How long a blocking read waits; well below any sane socket timeout.
BLOCK_MS = 2000


class Fetcher:
    """The fetch loops of one worker, and where every delivery is accepted."""

    def __init__(
        self,
        broker: Callable[[], Broker],
        consumer: str,
        queues: list[str],
        concurrency: int,
        capacity: Capacity,
        executor: Executor,
        runner: Runner,
        finisher: Finisher,
        stats: WorkerStats,
        backoff: Callable[[str], Backoff],
        orphan_idle: float,
        burst: bool,
    ) -> None:
        self._broker = broker
        self.consumer = consumer
        self.queues = queues
        self.concurrency = concurrency
        self.capacity = capacity
        self.executor = executor
        self.runner = runner
        self.inflight: Inflight = runner.inflight
        self.finisher = finisher
        self.stats = stats
        self._backoff = backoff
        self.burst = burst
        self.stopping = False
        #: Queue -> True once its last read came back empty (burst mode's test).
        self.idle: dict[str, bool] = dict.fromkeys(queues, False)
        self._orphan_idle = orphan_idle
        self._orphan_period = max(5.0, 2 * orphan_idle)
        self._orphans_due: dict[str, float] = {}

    async def loop(self, queue: str) -> None:
        """Read ``queue`` into free slots until the worker stops."""
        broker = self._broker()
        share = (
            max(1, self.concurrency // len(self.queues))
            if len(self.queues) > 1
            else (self.concurrency)
        )
        block = 200 if self.burst else BLOCK_MS
        backoff = self._backoff("reading from " + queue)
        while not self.stopping:
            await self.finisher.room()
            n = await self.capacity.reserve(share)
            try:
                deliveries = await self._take_orphans(queue, n)
                marked = waited = False
                if not deliveries:
                    # Under load one script call reads and marks a batch. Once the
                    # stream ran dry, the next call first waits for an entry, in
                    # the same round trip (wait_and_fetch); only where that can't
                    # be done does a blocking read come before marking running.
                    refused: list[Delivery] = []
                    fetched = await broker.wait_and_fetch(queue, self.consumer, n, block, refused)
                    if fetched is None:
                        fetched = await broker.fetch(queue, self.consumer, n, refused)
                        if not fetched and not refused:
                            fetched = await broker.wait_and_fetch(
                                queue, self.consumer, n, block, refused
                            )
                            waited = fetched is not None
                    else:
                        waited = True
                    self.log_refused(refused)
                    if fetched is not None:
                        deliveries, marked = fetched, True
                    else:
                        deliveries = await broker.read(queue, self.consumer, n, block)
            except asyncio.CancelledError:
                self.capacity.release(n)
                raise
            except RETRYABLE as exc:
                self.capacity.release(n)
                # A read whose reply was lost still delivered its entries to us.
                self.check_orphans_soon(queue)
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            if len(deliveries) < n:
                self.capacity.release(n - len(deliveries))
            self.idle[queue] = not deliveries
            if deliveries:
                await self.accept(queue, deliveries, marked)
                if (waited or not marked) and len(deliveries) < n:
                    # The queue was idle (a blocking read came back short): let the
                    # jobs just begun take their first step and the finisher send
                    # what they finished before asking for more, or the next fetch
                    # reaches Redis ahead of their outcomes, on a round trip's path.
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)

    def check_orphans_soon(self, queue: str) -> None:
        """Look for lost deliveries once they are idle long enough (after a Redis error)."""
        self._orphans_due[queue] = time.monotonic() + self._orphan_idle

    async def _take_orphans(self, queue: str, n: int) -> list[Delivery]:
        """Entries delivered to this worker in a reply it never saw (lost with its connection).

        Without this they would wait out the visibility timeout, since this
        worker's heartbeat says it is alive. Only entries idle for
        ``orphan_idle`` count: by then everything this worker really holds is
        in flight (until acknowledged) and skipped; a refused message taken
        twice is fenced off when it is dead-lettered the second time.
        """
        now = time.monotonic()
        due = self._orphans_due.get(queue)
        if due is None or now < due:
            if due is None:
                self._orphans_due[queue] = now + self._orphan_period
            return []
        deliveries = await self._broker().claim_own_stale(
            queue, self.consumer, int(self._orphan_idle * 1000), n, set(self.inflight.by_entry)
        )
        # Again soon when there may be more; else now and then, since a read the
        # Redis client retried by itself after a dropped connection raised nothing.
        self._orphans_due[queue] = now + (0 if len(deliveries) == n else self._orphan_period)
        if deliveries:
            logger.warning(
                "recovered %d task(s) of %s delivered to this worker in a reply its "
                "connection lost",
                len(deliveries),
                queue,
            )
        return deliveries

    async def accept(
        self, queue: str, deliveries: list[Delivery], marked: bool = False, first: bool = False
    ) -> None:
        """Mark deliveries running (unless ``marked``), check them, admit or refuse each.

        ``first``: they begin before every job read ahead (reclaimed work is the oldest).
        """
        if not marked:
            deliveries = await self._mark_running(queue, deliveries)
        now = self.executor.clock()
        for delivery in deliveries:
            prepared = self.executor.prepare(delivery, now)
            if isinstance(prepared, FinishItem):
                log_refused(prepared, queue, delivery.entry_id)
                # workflows: a refused or expired step still ends its chain / chord
                codec = self.executor.codec
                prepared.follow = refused_follow_ups(delivery.payload, prepared, codec)
                self.finisher.submit(queue, prepared, None)
            else:
                self.runner.admit(prepared, first)

    async def _mark_running(self, queue: str, deliveries: list[Delivery]) -> list[Delivery]:
        """Mark deliveries running; returns those not aborted while they waited."""
        backoff = self._backoff("marking tasks running")
        while True:
            try:
                await self._broker().start(queue, self.consumer, deliveries)
                break
            except RETRYABLE as exc:
                if self.stopping:
                    # Still pending for us: leaving hands them back.
                    self.capacity.release(len(deliveries))
                    return []
                await backoff.failed(exc)
        waiting = sum(1 for d in deliveries if d.attempt < 0 and not d.refused)
        if waiting:
            # Over a rate or concurrency limit: the task waits in Redis, not here.
            self.capacity.release(waiting)
            deliveries = [d for d in deliveries if d.attempt >= 0 or d.refused]
        dropped = [d for d in deliveries if d.attempt <= 0]
        if not dropped:
            return deliveries
        for d in dropped:
            if d.attempt == 0:
                logger.info("task %s aborted before it started", d.task_id)
                self.stats.aborted += 1
        self.log_refused([d for d in dropped if d.attempt < 0])
        self.capacity.release(len(dropped))
        return [d for d in deliveries if d.attempt > 0]

    def log_refused(self, refused: list[Delivery]) -> None:
        """One line per entry the scripts dead-lettered as it was delivered:
        replayed, filed under another task's id, an id that is not text, or
        over max_deliveries (see take_entry in ``_common.lua``)."""
        for d in refused:
            logger.warning(
                "stream entry %s (task %s) dead-lettered as it was delivered: %s",
                d.entry_id,
                d.task_id or "?",
                d.refused,
            )
        self.stats.dead += len(refused)
