"""Maintenance: the loops that keep a worker's work safe while tasks run.

- **heartbeat**: renews the leases of long-running tasks well before they
  expire (a third of the visibility timeout), learns which it lost or must
  abort, and republishes the worker's description in the registry;
- **reclaim**: takes over entries of workers that died or stalled
  (dead-lettering those delivered too many times);
- **promote**: moves due delayed and retried tasks into the stream, sleeping
  until the next due time or a wake-up;
- **control**: listens for abort requests and delayed-task wake-ups.

Each loop rides out a Redis outage with its own backoff and one shared
"lost the connection" / "reconnected" pair of log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from .._redis.broker import Broker
from .._redis.connection import RETRYABLE
from ..core.config import Settings
from ..core.protocol import Delivery
from .fetching import Fetcher
from .running import Runner, Running
from .slots import Backoff, Capacity, WorkerStats

__all__ = ["Maintenance"]

# Everything a worker says goes to one logger, which users filter on.
logger = logging.getLogger("aqueue.worker")


class Maintenance:
    """Heartbeat, reclaim, promote and control loops of one worker."""

    def __init__(
        self,
        broker: Callable[[], Broker],
        settings: Settings,
        consumer: str,
        queues: list[str],
        concurrency: int,
        capacity: Capacity,
        runner: Runner,
        fetcher: Fetcher,
        stats: WorkerStats,
        backoff: Callable[[str], Backoff],
        describe: Callable[[], dict[str, Any]],
    ) -> None:
        self._broker = broker
        self.settings = settings
        self.consumer = consumer
        self.queues = queues
        self.concurrency = concurrency
        self.capacity = capacity
        self.runner = runner
        self.fetcher = fetcher
        self.stats = stats
        self._backoff = backoff
        self.describe = describe
        self.stopping = False
        self.wake_promoter: dict[str, asyncio.Event] = {q: asyncio.Event() for q in queues}
        #: Held while a heartbeat runs; see :meth:`end_heartbeats`.
        self._beating = asyncio.Lock()
        self._ended = False

    # -- heartbeat ------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Renew due leases, apply lost/aborted verdicts, republish this worker."""
        broker = self._broker()
        renew_after = self.settings.visibility_timeout / 3
        now = time.monotonic()
        by_queue: dict[str, list[tuple[str, str]]] = {q: [] for q in self.queues}
        renewed: list[Running] = []
        for entry, running in self.runner.inflight.by_entry.items():
            if now - running.leased_at >= renew_after:
                by_queue.setdefault(running.job.delivery.queue, []).append(
                    (entry, running.job.envelope.id)
                )
                renewed.append(running)
        for queue, pairs in by_queue.items():
            lost, aborted = await broker.renew(queue, self.consumer, pairs)
            for entry in lost:
                self.runner.cancel(entry, "lost")
            for entry in aborted:
                self.runner.cancel(entry, "abort")
        for running in renewed:
            running.leased_at = now
        s = self.settings
        ttl_ms = int(max(3 * s.heartbeat_interval, s.dead_worker_after) * 1000)
        await broker.views.publish_worker(self.consumer, self.describe(), ttl_ms)

    async def heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        backoff = self._backoff("renewing leases")
        while True:
            await asyncio.sleep(interval)
            async with self._beating:
                if self._ended:
                    return
                try:
                    await self.heartbeat()
                    backoff.succeeded()
                except RETRYABLE as exc:
                    await backoff.failed(exc, sleep=False)

    async def end_heartbeats(self) -> None:
        """Let the heartbeat under way finish and send no more: a worker leaving
        the queues must not be put back among their live workers (renew.lua adds
        it) after it left them."""
        async with self._beating:
            self._ended = True

    # -- reclaim ----------------------------------------------------------------------

    async def reclaim_loop(self) -> None:
        """Take over the entries of workers that died or stalled.

        Reclaimed work goes first: while a pass fills every slot it reserved
        (there may be more to take), the next pass follows at once, and its
        urgent reservation takes each slot that frees before any fetch loop
        does; reclaimed jobs begin before anything read ahead.
        """
        interval = max(0.5, self.settings.heartbeat_interval)
        backoff = self._backoff("reclaiming stalled tasks")
        while not self.stopping:
            more = False
            for queue in self.queues:
                more |= await self._reclaim_once(queue, backoff)
            if not more:
                await asyncio.sleep(interval)

    async def _reclaim_once(self, queue: str, backoff: Backoff) -> bool:
        """One reclaim pass over ``queue``; True when there may be more to take."""
        # Slots held by an idle blocking read count as free here.
        n = await self.capacity.reserve(self.concurrency, urgent=True)
        try:
            refused: list[Delivery] = []
            deliveries = await self._broker().reclaim(queue, self.consumer, n, refused)
            self.fetcher.log_refused(refused)
        except RETRYABLE as exc:
            self.capacity.release(n)
            self.fetcher.check_orphans_soon(queue)
            await backoff.failed(exc, sleep=False)
            return False
        except BaseException:
            self.capacity.release(n)
            raise
        backoff.succeeded()
        self.capacity.release(n - len(deliveries))
        if deliveries:
            self.stats.reclaimed += len(deliveries)
            logger.warning(
                "reclaimed %d task(s) from %s whose worker died or stalled",
                len(deliveries),
                queue,
            )
            await self.fetcher.accept(queue, deliveries, marked=True, first=True)
        return bool(deliveries) and len(deliveries) == n

    # -- delayed tasks ----------------------------------------------------------------

    async def promote_loop(self, queue: str) -> None:
        """Move due delayed tasks of ``queue`` into its stream, sleeping until the next."""
        broker = self._broker()
        wake = self.wake_promoter[queue]
        backoff = self._backoff("moving delayed tasks")
        while not self.stopping:
            wake.clear()
            try:
                moved, wait_ms = await broker.promote(queue)
            except RETRYABLE as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            if moved >= 1000:
                continue
            timeout = 5.0 if wait_ms < 0 else min(wait_ms / 1000, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    # -- control channel --------------------------------------------------------------

    async def control_loop(self) -> None:
        """Listen for aborts and delayed-task wake-ups on the queues' control channels."""
        broker = self._broker()
        channels = {broker.keys(q).control_channel.encode(): q for q in self.queues}
        backoff = self._backoff("listening for control messages")
        inflight = self.runner.inflight
        while True:
            subscription = broker.subscription()
            try:
                await subscription.subscribe(*channels)
                backoff.succeeded()
                for event in self.wake_promoter.values():
                    event.set()  # anything missed while disconnected
                while True:
                    msg = await subscription.next(timeout=5.0, confirmations=False)
                    if msg is None:
                        continue
                    if msg.kind == "gap":  # reconnected: a wake-up may have been missed
                        for event in self.wake_promoter.values():
                            event.set()
                        continue
                    queue = channels.get(msg.channel)
                    if queue is None:
                        continue
                    if msg.data == b"delayed":
                        self.wake_promoter[queue].set()
                    elif msg.data.startswith(b"abort\n"):
                        entry = inflight.entry_of(msg.data[6:].decode())
                        if entry is not None:
                            self.runner.cancel(entry, "abort")
            except RETRYABLE as exc:
                await backoff.failed(exc)
            finally:
                await subscription.close()
