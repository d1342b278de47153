"""The worker runtime: fetch, run, renew, reclaim, finish, shut down.

One event loop runs up to ``concurrency`` tasks at once. It reads only as
many messages as it has free slots, renews the leases of what it runs,
records outcomes in batches (one script call each), takes over the work of
dead workers, and on shutdown hands back what it could not finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.exceptions

from .broker import REDIS_ERRORS, Delivery, FinishItem
from .config import mask_url
from .envelope import ErrorInfo, decode_error, encode_error
from .executor import Job, execute, prepare
from .inspect import delete_worker_info, publish_worker_info
from .result import encode_progress
from .runtime import Backoff, Capacity, Outage, WorkerStats

if TYPE_CHECKING:
    from .app import App

__all__ = ["Worker", "WorkerStats"]

logger = logging.getLogger(__name__)

#: How long a blocking read waits; well below any sane socket timeout.
BLOCK_MS = 2000
#: Largest number of outcomes recorded in one script call.
FINISH_CHUNK = 500
_RETRYABLE = (*REDIS_ERRORS, redis.exceptions.BusyLoadingError)


@dataclass(slots=True)
class _Running:
    job: Job
    task: asyncio.Task[None] | None = None
    leased_at: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.perf_counter)
    cancel_reason: str | None = None


class Worker:
    """Runs the tasks of an App from one or more queues.

    ``await Worker(app).run()`` runs until :meth:`stop` is called (the CLI calls
    it on SIGTERM/SIGINT). With ``burst=True`` it returns once the queues are
    empty and nothing is running, which suits scripts and tests. Unless
    ``beat=False`` (or in burst mode) it also enqueues the App's periodic tasks;
    any number of workers may do so, each tick is enqueued once.
    """

    def __init__(
        self,
        app: App,
        *,
        queues: list[str] | None = None,
        concurrency: int = 100,
        threads: int | None = None,
        grace_period: float = 30.0,
        burst: bool = False,
        name: str | None = None,
        beat: bool = True,
        prefetch: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if prefetch is not None and prefetch < 0:
            raise ValueError("prefetch must be zero or more")
        self.app = app
        self.queues = list(queues or app.queues)
        self.concurrency = concurrency
        self.threads = threads or min(concurrency, 16)
        self.grace_period = grace_period
        self.burst = burst
        #: Run the periodic-task scheduler here too (never in burst mode).
        self.beat = beat and not burst
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = WorkerStats()
        #: Messages read ahead while the running ones finish, so Redis prepares
        #: the next batch while this process runs the current one.
        self.prefetch = min(concurrency // 2, 100) if prefetch is None else prefetch
        # Slots count the messages held (running or read ahead); at most
        # `concurrency` of them run at once, the rest wait in `_ready`.
        self._capacity = Capacity(concurrency + self.prefetch)
        self._executing = 0
        self._ready: deque[_Running] = deque()
        self._running: dict[str, _Running] = {}
        self._entry_by_task: dict[str, str] = {}
        self._finishing: dict[str, list[tuple[FinishItem, _Running | None]]] = {}
        self._finish_wanted = asyncio.Event()
        # Outcomes waiting to be recorded hold no task slot but still hold their
        # message; at most `concurrency` of them, so a worker holds at most
        # 2 x concurrency messages (running + one batch being acknowledged).
        self._unacked = 0
        self._acked = asyncio.Event()
        self._wake_promoter: dict[str, asyncio.Event] = {q: asyncio.Event() for q in self.queues}
        self._stop_requested = asyncio.Event()
        self._hard_stop = False
        self._stopping = False
        self._idle: dict[str, bool] = dict.fromkeys(self.queues, False)
        self._state: dict[str, Any] = {}
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._outage = Outage(mask_url(app.settings.redis_url))
        self._orphans_due: dict[str, float] = {}
        s = app.settings
        self._orphan_idle = min(max(3 * s.heartbeat_interval, 3.0), s.visibility_timeout / 2)
        self._orphan_period = max(5.0, 2 * self._orphan_idle)
        #: Optional per-task hook (``started(job)``, ``finished(item, running)``),
        #: set by ``aqueue worker --metrics-port``; None costs one check per task.
        self.observer: Any = None

    # -- control -----------------------------------------------------------------

    def stop(self) -> None:
        """Stop gracefully; a second call stops at once (no grace period)."""
        if self._stop_requested.is_set():
            if not self._hard_stop:
                logger.warning("second stop request: cancelling running tasks now")
            self._hard_stop = True
        self._stop_requested.set()

    async def run(self) -> None:
        """Run until stopped (or, in burst mode, until the queues are drained)."""
        app = self.app
        broker = app.broker
        await app.connect()
        for queue in self.queues:
            await broker.ensure_group(queue)
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix="aqueue-task"
        )
        self._log_banner()
        try:
            async with app.run_lifespan() as state:
                self._state = state
                await self._heartbeat_once()
                spawn = self._spawn_loop
                spawn(self._finish_loop(), "finish")
                spawn(self._heartbeat_loop(), "heartbeat")
                spawn(self._control_loop(), "control")
                spawn(self._reclaim_loop(), "reclaim")
                for queue in self.queues:
                    spawn(self._fetch_loop(queue), f"fetch:{queue}")
                    spawn(self._promote_loop(queue), f"promote:{queue}")
                if self.burst:
                    spawn(self._burst_watch(), "burst")
                if self.beat:
                    from .periodic import Scheduler

                    spawn(Scheduler(app).run(), "beat")
                await self._stop_requested.wait()
                await self._shutdown()
        finally:
            pending = set(self._loops)
            while pending:
                # Cancel until each loop has ended: redis-py's pubsub.subscribe()
                # swallows a cancellation that lands while it connects.
                for loop_task in pending:
                    loop_task.cancel()
                _, pending = await asyncio.wait(pending, timeout=1.0)
            self._loops.clear()
            self._threads.shutdown(wait=False, cancel_futures=True)

    def _spawn_loop(self, coro: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("worker loop %s crashed; stopping the worker", name)
                self._hard_stop = True
                self._stop_requested.set()

        self._loops.append(asyncio.create_task(guarded(), name=f"aqueue-{name}"))

    def _log_banner(self) -> None:
        from ._version import __version__

        names = ", ".join(sorted(self.app.tasks)) or "(none)"
        logger.info(
            "aqueue %s worker %s\n  redis:       %s\n  queues:      %s\n"
            "  concurrency: %d (threads for sync tasks: %d)\n  tasks:       %s",
            __version__,
            self.name,
            mask_url(self.app.settings.redis_url),
            ", ".join(self.queues),
            self.concurrency,
            self.threads,
            names,
        )

    def _backoff(self, doing: str) -> Backoff:
        return Backoff(doing, self._outage)

    # -- fetching ----------------------------------------------------------------

    async def _fetch_loop(self, queue: str) -> None:
        broker = self.app.broker
        share = (
            max(1, self.concurrency // len(self.queues))
            if len(self.queues) > 1
            else (self.concurrency)
        )
        block = 200 if self.burst else BLOCK_MS
        backoff = self._backoff("reading from " + queue)
        while not self._stopping:
            while self._unacked >= self.concurrency:
                self._acked.clear()
                await self._acked.wait()
            n = await self._capacity.reserve(share)
            try:
                deliveries = await self._take_orphans(queue, n)
                marked = False
                if not deliveries:
                    # Under load one script call reads and marks a batch; only an
                    # empty stream costs the extra blocking read.
                    deliveries = await broker.fetch(queue, self.name, n)
                    marked = bool(deliveries)
                if not deliveries:
                    deliveries = await broker.read(queue, self.name, n, block)
            except asyncio.CancelledError:
                self._capacity.release(n)
                raise
            except _RETRYABLE as exc:
                self._capacity.release(n)
                # A read whose reply was lost still delivered its entries to us.
                self._orphans_due[queue] = time.monotonic() + self._orphan_idle
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            if len(deliveries) < n:
                self._capacity.release(n - len(deliveries))
            self._idle[queue] = not deliveries
            if deliveries:
                await self._start(queue, deliveries, marked)

    async def _take_orphans(self, queue: str, n: int) -> list[Delivery]:
        """Entries delivered to this worker in a reply it never saw (lost with its connection).

        Without this they would wait out the visibility timeout, since this
        worker's heartbeat says it is alive. Only entries idle for
        ``_orphan_idle`` count: by then everything this worker really holds is
        in ``_running`` (until acknowledged) and skipped; a refused message
        taken twice is fenced off when it is dead-lettered the second time.
        """
        now = time.monotonic()
        due = self._orphans_due.get(queue)
        if due is None or now < due:
            if due is None:
                self._orphans_due[queue] = now + self._orphan_period
            return []
        deliveries = await self.app.broker.claim_own_stale(
            queue, self.name, int(self._orphan_idle * 1000), n, set(self._running)
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

    async def _start(self, queue: str, deliveries: list[Delivery], marked: bool = False) -> None:
        """Mark deliveries running (unless ``marked``), check them and start them."""
        if not marked:
            backoff = self._backoff("marking tasks running")
            while True:
                try:
                    await self.app.broker.start(queue, self.name, deliveries)
                    break
                except _RETRYABLE as exc:
                    if self._stopping:
                        # Still pending for us: leaving hands them back.
                        self._capacity.release(len(deliveries))
                        return
                    await backoff.failed(exc)
            aborted = [d for d in deliveries if d.attempt == 0]
            if aborted:
                for d in aborted:
                    logger.info("task %s aborted before it started", d.task_id)
                self.stats.aborted += len(aborted)
                self._capacity.release(len(aborted))
                deliveries = [d for d in deliveries if d.attempt > 0]
        now = time.time()
        for delivery in deliveries:
            prepared = prepare(self.app, delivery, now)
            if isinstance(prepared, FinishItem):
                self._log_refused(delivery, prepared)
                self._queue_finish(queue, prepared, None)
            else:
                self._launch(prepared)

    def _launch(self, job: Job) -> None:
        running = _Running(job)
        entry = job.delivery.entry_id
        self._running[entry] = running
        self._entry_by_task[job.envelope.id] = entry
        if self._executing >= self.concurrency:
            self._ready.append(running)  # read ahead: runs when a task ends
            return
        self._execute(running)

    def _execute(self, running: _Running) -> None:
        job = running.job
        self._executing += 1
        running.started = time.perf_counter()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s[%s] started (attempt %d)", job.display_name, job.envelope.id, job.attempt
            )
        running.task = asyncio.create_task(self._run(running))
        if self.observer is not None:
            self.observer.started(job)

    def _task_ended(self) -> None:
        """A task stopped executing: start the next one read ahead, if any."""
        self._executing -= 1
        while self._ready and (self._executing < self.concurrency or self._stopping):
            running = self._ready.popleft()
            if running.cancel_reason is None and not self._stopping:
                self._execute(running)
            elif running.cancel_reason == "abort":
                self._queue_finish(running.job.delivery.queue, _aborted(running.job), running)
            else:  # lost, or stopping (leaving hands it back): nothing to record
                self._forget(running.job)
                self._capacity.release()

    async def _run(self, running: _Running) -> None:
        job = running.job
        queue = job.delivery.queue
        assert self._threads is not None
        try:
            item = await execute(self.app, job, self._threads, self._state, self._report_progress)
        except asyncio.CancelledError:
            reason = running.cancel_reason
            if reason == "abort":
                item = _aborted(job)
            else:
                # Lease lost (another worker has it) or shutdown (leaving hands it
                # back): nothing is recorded here.
                self._forget(job)
                self._capacity.release()
                self._task_ended()
                if reason is None:
                    raise
                return
        self._queue_finish(queue, item, running)
        self._task_ended()

    def _forget(self, job: Job) -> None:
        self._running.pop(job.delivery.entry_id, None)
        if self._entry_by_task.get(job.envelope.id) == job.delivery.entry_id:
            del self._entry_by_task[job.envelope.id]

    async def _report_progress(self, task_id: str, value: Any, message: str) -> None:
        entry = self._entry_by_task.get(task_id)
        running = self._running.get(entry) if entry else None
        if running is None:
            return
        keys = self.app.broker.keys(running.job.delivery.queue)
        await self.app.broker.client.hset(
            keys.task(task_id), "progress", encode_progress(value, message)
        )

    # -- finishing ---------------------------------------------------------------

    def _queue_finish(self, queue: str, item: FinishItem, running: _Running | None) -> None:
        """Hand an outcome to the finish loop; the task slot is free from now on."""
        self._finishing.setdefault(queue, []).append((item, running))
        self._unacked += 1
        self._capacity.release()
        self._finish_wanted.set()

    async def _finish_loop(self) -> None:
        """Record outcomes in batches: one script call per queue per round."""
        broker = self.app.broker
        backoff = self._backoff("recording results")
        while True:
            await self._finish_wanted.wait()
            self._finish_wanted.clear()
            pending, self._finishing = self._finishing, {}
            for queue, batch in pending.items():
                for start in range(0, len(batch), FINISH_CHUNK):
                    chunk = batch[start : start + FINISH_CHUNK]
                    while True:
                        try:
                            fenced = await broker.finish(
                                queue, self.name, [item for item, _ in chunk]
                            )
                            break
                        except _RETRYABLE as exc:
                            await backoff.failed(exc)
                    backoff.succeeded()
                    self._finished(chunk, set(fenced))

    def _finished(self, chunk: list[tuple[FinishItem, _Running | None]], fenced: set[str]) -> None:
        info = logger.isEnabledFor(logging.INFO)
        now = time.perf_counter()
        self._unacked -= len(chunk)
        self._acked.set()
        for item, running in chunk:
            if running is not None:
                self._forget(running.job)
            if item.entry_id in fenced:
                self.stats.fenced += 1
                logger.warning(
                    "task %s: result discarded, its lease was lost and another worker ran it again",
                    item.task_id,
                )
                continue
            state = item.state
            if state == "succeeded":
                self.stats.succeeded += 1
            elif state == "failed":
                self.stats.failed += 1
            elif state == "retrying":
                self.stats.retried += 1
            elif state == "aborted":
                self.stats.aborted += 1
            elif state == "expired":
                self.stats.expired += 1
            elif state == "dead":
                self.stats.dead += 1
            if self.observer is not None:
                self.observer.finished(item, running)
            if running is None or not (info or state in ("failed", "dead")):
                continue
            job = running.job
            ms = (now - running.started) * 1000
            extra = {
                "task_id": item.task_id,
                "task_name": job.task.name,
                "attempt": job.attempt,
                "duration_ms": round(ms, 3),
                "outcome": state,
            }
            if state == "succeeded":
                logger.info(
                    "%s[%s] succeeded in %.2f ms", job.display_name, item.task_id, ms, extra=extra
                )
            elif state == "retrying":
                error = decode_error(item.error)
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
            else:
                error = decode_error(item.error)
                logger.log(
                    logging.WARNING if state in ("failed", "dead") else logging.INFO,
                    "%s[%s] %s in %.2f ms: %s: %s",
                    job.display_name,
                    item.task_id,
                    state,
                    ms,
                    error.type,
                    error.message,
                    extra=extra,
                )

    def _log_refused(self, delivery: Delivery, item: FinishItem) -> None:
        error = decode_error(item.error)
        if item.state == "dead":
            logger.error(
                "message %s (task id %s) moved to the dead-letter stream: %s. "
                "Inspect it with `aqueue dead list MODULE:APP --queue %s`",
                delivery.entry_id,
                item.task_id,
                error.message,
                delivery.queue,
                extra={"task_id": item.task_id, "reason": item.reason},
            )
        else:
            logger.info("task %s %s: %s", item.task_id, item.state, error.message)

    # -- leases, heartbeat, reclaim, delayed -------------------------------------

    async def _heartbeat_once(self) -> None:
        broker = self.app.broker
        renew_after = self.app.settings.visibility_timeout / 3
        now = time.monotonic()
        by_queue: dict[str, list[tuple[str, str]]] = {q: [] for q in self.queues}
        renewed: list[_Running] = []
        for entry, running in self._running.items():
            if now - running.leased_at >= renew_after:
                by_queue.setdefault(running.job.delivery.queue, []).append(
                    (entry, running.job.envelope.id)
                )
                renewed.append(running)
        for queue, pairs in by_queue.items():
            lost, aborted = await broker.renew(queue, self.name, pairs)
            for entry in lost:
                self._cancel(entry, "lost")
            for entry in aborted:
                self._cancel(entry, "abort")
        for running in renewed:
            running.leased_at = now
        await publish_worker_info(self)

    async def _heartbeat_loop(self) -> None:
        interval = self.app.settings.heartbeat_interval
        backoff = self._backoff("renewing leases")
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat_once()
                backoff.succeeded()
            except _RETRYABLE as exc:
                await backoff.failed(exc, sleep=False)

    def _cancel(self, entry: str, reason: str) -> None:
        running = self._running.get(entry)
        if running is None:
            return
        if running.task is None:  # read ahead, not started: skipped when its turn comes
            running.cancel_reason = running.cancel_reason or reason
            return
        if running.task.done():
            return
        job = running.job
        if reason == "lost":
            logger.warning(
                "%s[%s]: lease lost (this worker was unresponsive and another worker "
                "took the task over); cancelling this copy",
                job.display_name,
                job.envelope.id,
            )
        elif reason == "abort":
            logger.info("%s[%s]: abort requested; cancelling", job.display_name, job.envelope.id)
        # For a plain def task this cancels the wait, not the thread (threads
        # can't be interrupted): the thread's eventual outcome is discarded.
        running.cancel_reason = reason
        running.task.cancel()

    async def _reclaim_loop(self) -> None:
        broker = self.app.broker
        interval = max(0.5, self.app.settings.heartbeat_interval)
        backoff = self._backoff("reclaiming stalled tasks")
        while not self._stopping:
            for queue in self.queues:
                # Slots held by an idle blocking read count as free here.
                n = await self._capacity.reserve(self.concurrency, urgent=True)
                try:
                    deliveries = await broker.reclaim(queue, self.name, n)
                except _RETRYABLE as exc:
                    self._capacity.release(n)
                    self._orphans_due[queue] = time.monotonic() + self._orphan_idle
                    await backoff.failed(exc, sleep=False)
                    continue
                except BaseException:
                    self._capacity.release(n)
                    raise
                backoff.succeeded()
                self._capacity.release(n - len(deliveries))
                if deliveries:
                    self.stats.reclaimed += len(deliveries)
                    logger.warning(
                        "reclaimed %d task(s) from %s whose worker died or stalled",
                        len(deliveries),
                        queue,
                    )
                    await self._start(queue, deliveries, marked=True)
            await asyncio.sleep(interval)

    async def _promote_loop(self, queue: str) -> None:
        broker = self.app.broker
        wake = self._wake_promoter[queue]
        backoff = self._backoff("moving delayed tasks")
        while not self._stopping:
            wake.clear()
            try:
                moved, wait_ms = await broker.promote(queue)
            except _RETRYABLE as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            if moved >= 1000:
                continue
            timeout = 5.0 if wait_ms < 0 else min(wait_ms / 1000, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def _control_loop(self) -> None:
        """Listen for aborts and delayed-task wake-ups on the queues' control channels."""
        broker = self.app.broker
        channels = {broker.keys(q).control_channel.encode(): q for q in self.queues}
        backoff = self._backoff("listening for control messages")
        while True:
            pubsub = broker.client.pubsub()
            try:
                await pubsub.subscribe(*channels)
                backoff.succeeded()
                for event in self._wake_promoter.values():
                    event.set()  # anything missed while disconnected
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if msg is None:
                        continue
                    queue = channels.get(msg["channel"])
                    if queue is None:
                        continue
                    data: bytes = msg["data"]
                    if data == b"delayed":
                        self._wake_promoter[queue].set()
                    elif data.startswith(b"abort\n"):
                        entry = self._entry_by_task.get(data[6:].decode())
                        if entry is not None:
                            self._cancel(entry, "abort")
            except _RETRYABLE as exc:
                await backoff.failed(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _burst_watch(self) -> None:
        def drained() -> bool:
            return (
                all(self._idle.values())
                and not self._running
                and not self._finishing
                and not self._unacked
            )

        while True:
            await asyncio.sleep(0.05)
            if drained():
                # Double-check after a short pause: a read may be mid-flight.
                await asyncio.sleep(0.25)
                if drained():
                    self.stop()
                    return

    # -- shutdown ----------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._stopping = True
        broker = self.app.broker
        while self._ready:  # read ahead, never started: leaving hands them back
            waiting = self._ready.popleft()
            self._forget(waiting.job)
            self._capacity.release()
        keep = {"aqueue-finish", "aqueue-heartbeat", "aqueue-control"}
        for loop_task in self._loops:
            if loop_task.get_name() not in keep:
                loop_task.cancel()
        running = [r.task for r in self._running.values() if r.task is not None]
        if running and not self._hard_stop:
            logger.info(
                "stopping: waiting up to %.0fs for %d running task(s)",
                self.grace_period,
                len(running),
            )
            deadline = time.monotonic() + self.grace_period
            pending = set(running)
            while pending and not self._hard_stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                _, pending = await asyncio.wait(pending, timeout=min(left, 0.2))
        unfinished = [e for e, r in self._running.items() if r.task and not r.task.done()]
        for entry in unfinished:
            self._cancel(entry, "shutdown")
        await asyncio.gather(
            *(r.task for r in self._running.values() if r.task is not None),
            return_exceptions=True,
        )
        # Outcomes first, then hand back what's left: the order keeps a finished
        # task from being handed back and run twice.
        deadline = time.monotonic() + 10.0
        while (self._finishing or self._unacked) and time.monotonic() < deadline:
            self._finish_wanted.set()
            await asyncio.sleep(0.01)
        handed_back = 0
        for queue in self.queues:
            try:
                handed_back += await broker.leave(queue, self.name)
            except _RETRYABLE as exc:
                logger.error(
                    "could not hand back unfinished tasks of %s (%s); other workers will "
                    "reclaim them once this worker's heartbeat is gone",
                    queue,
                    exc,
                )
        self.stats.handed_back += handed_back
        with contextlib.suppress(*_RETRYABLE):
            await delete_worker_info(self)
        s = self.stats
        logger.info(
            "worker stopped: %d succeeded, %d failed, %d retried, %d dead, %d handed back",
            s.succeeded,
            s.failed,
            s.retried,
            s.dead,
            handed_back,
        )


def _aborted(job: Job) -> FinishItem:
    return FinishItem(
        entry_id=job.delivery.entry_id,
        task_id=job.envelope.id,
        state="aborted",
        error=encode_error(ErrorInfo("TaskAborted", "aborted while running")),
    )
