"""The worker: runs an App's tasks from one or more queues, until told to stop.

One event loop runs up to ``concurrency`` tasks at once. The worker is the
wiring of four jobs, each in a module of its own:

- :mod:`.fetching`: reads only as many messages as it has free slots and
  accepts them (mark running, check, admit or refuse);
- :mod:`.running`: begins admitted jobs, runs each through the
  :mod:`.executor`, cancels on abort, lost lease or shutdown;
- :mod:`.finishing`: records outcomes in batches, one script call each;
- :mod:`.maintenance`: lease renewal, reclaiming dead workers' work,
  delayed tasks, the control channel.

On shutdown it stops fetching, lets running tasks finish within the grace
period, records their outcomes, then hands back what did not finish so
another worker picks it up at once.
"""

# Over 400 lines: the wiring of the worker's four parts and its shutdown sequence, kept together.

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._redis.broker import Broker
from .._redis.connection import RETRYABLE
from .._version import __version__
from ..core.errors import WorkerCrashed
from ..core.hooks import WorkerInfo
from ..core.protocol import Delivery
from ..core.urls import mask_url
from .executor import Executor, Job
from .fetching import Fetcher
from .finishing import Finisher
from .maintenance import Maintenance
from .monitor import describe_worker, unserved_queues
from .running import Inflight, Observer, Runner
from .slots import Backoff, Capacity, Outage, WorkerStats
from .watchdog import LoopWatchdog
from .workflow import Forwarder

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Worker", "WorkerStats"]

# Everything a worker says goes to one logger, which users filter on.
logger = logging.getLogger("aqueue.worker")

#: Tries of the hand-back at shutdown (about 3 s in all) while Redis fails over.
HAND_BACK_ATTEMPTS = 6

_T = TypeVar("_T")


class Worker:
    """Runs the tasks of an App from one or more queues.

    ``await Worker(app).run()`` runs until :meth:`stop` is called (the CLI calls
    it on SIGTERM/SIGINT). With ``burst=True`` it returns once the queues are
    empty and nothing is running, which suits scripts and tests. Unless
    ``beat=False`` (or in burst mode) it also enqueues the App's periodic tasks;
    any number of workers may do so, each tick is enqueued once.
    ``max_tasks`` / ``max_memory_mb`` make it stop gracefully at that many
    begun tasks or that much resident memory (:attr:`recycled` says why);
    ``aqueue worker --max-tasks-per-child`` then starts a fresh process.
    ``task_processes`` sizes the pool of ``executor="process"`` tasks (default:
    one per CPU).
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
        max_tasks: int | None = None,
        max_memory_mb: float | None = None,
        task_processes: int | None = None,
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
        self._stop_requested = asyncio.Event()
        self._hard_stop = False
        self._stopping = False
        #: The loop that crashed and stopped this worker (None: stopped as asked).
        self._crashed_loop: str | None = None
        #: Tasks still running in threads when run() returned: they keep their lease;
        #: the process should exit now (``aqueue worker`` does) to let them be reclaimed.
        self.abandoned = 0
        self._loops: list[asyncio.Task[None]] = []
        #: Keeps leases alive from a thread while the event loop is blocked.
        self.watchdog: LoopWatchdog | None = None
        self._outage = Outage(mask_url(app.settings.redis_url))
        self._thread_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix="aqueue-task"
        )
        self._wire()
        #: Recycling (see :mod:`.recycling`): why this worker stopped itself at a
        #: limit (None: it did not); its supervisor then starts a fresh one.
        self.recycled: str | None = None
        self.max_memory_mb = max_memory_mb
        self._runner.max_begun = max_tasks
        if task_processes is not None:
            if task_processes < 1:
                raise ValueError("task_processes must be at least 1")
            self._executor.process_count = task_processes
        self._runner.on_spent = self.recycle

    def _wire(self) -> None:
        """Build the worker's parts; each gets only what it uses."""
        app, settings = self.app, self.app.settings
        # Slots count the messages held (running or read ahead); at most
        # `concurrency` of them execute at once, the rest are read ahead.
        capacity = Capacity(self.concurrency + self.prefetch)
        self._inflight = inflight = Inflight()
        self._executor = Executor(app.tasks, app.client.codec, settings, self._thread_pool)
        self._executor.clock = app.client.clock
        self._executor.hooks = app.client.hooks
        self._finisher = Finisher(
            self._broker,
            self.name,
            # Unrecorded outcomes allowed before fetching waits: as many as the
            # slots. At `concurrency` a full batch's finish call in flight held
            # back the next fetch (every other batch of a drain) until its reply.
            capacity.total,
            capacity,
            self.stats,
            self._backoff("recording results"),
            inflight.forget,
        )
        self._runner = Runner(
            self._executor,
            inflight,
            capacity,
            self.concurrency,
            self._finisher.submit,
            self._store_progress,
        )
        self._executor.report = self._runner.report_progress
        self._executor.emit = self._emit_chunk
        self._executor.thread_gate = self._thread_gate
        orphan_idle = min(
            max(3 * settings.heartbeat_interval, 3.0), settings.visibility_timeout / 2
        )
        self._fetcher = Fetcher(
            self._broker,
            self.name,
            self.queues,
            self.concurrency,
            capacity,
            self._executor,
            self._runner,
            self._finisher,
            self.stats,
            self._backoff,
            orphan_idle,
            self.burst,
        )
        self._forwarder = Forwarder(self._broker, self.queues, app.client.codec)
        self._finisher.handed_off = self._forwarder.handed_off
        self._maintenance = Maintenance(
            self._broker,
            settings,
            self.name,
            self.queues,
            self.concurrency,
            capacity,
            self._runner,
            self._fetcher,
            self.stats,
            self._backoff,
            self.describe,
        )

    # -- what others may ask ---------------------------------------------------------

    @property
    def observer(self) -> Observer | None:
        """Optional per-task hooks (``started(job)``, ``finished(item, running)``),
        set by ``aqueue worker --metrics-port``; None costs one check per task."""
        return self._runner.observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self._runner.observer = observer
        self._finisher.observer = observer

    @property
    def running_count(self) -> int:
        """Jobs this worker holds: executing or read ahead."""
        return len(self._inflight)

    def describe(self) -> dict[str, Any]:
        """What this worker publishes about itself on every heartbeat."""
        return describe_worker(
            self.name, self.queues, self.concurrency, self.stats, self._inflight, self._stopping
        )

    def _broker(self) -> Broker:
        return self.app.client.broker

    def _backoff(self, doing: str) -> Backoff:
        return Backoff(doing, self._outage)

    async def _emit_chunk(
        self, queue: str, task_id: str, attempt: int, index: int, chunk: bytes
    ) -> None:
        await self._broker().append_chunk(queue, task_id, attempt, index, chunk)

    async def _thread_gate(self, job: Job, resume: bool) -> bool:
        """Show a ``def`` task waiting for a thread as queued, then as running;
        False: it was aborted while it waited. Redis away: it just runs."""
        try:
            return await self._broker().thread_gate(
                job.delivery.queue, job.envelope.id, self.name, job.delivery.entry_id, resume
            )
        except RETRYABLE:
            return True

    async def _store_progress(self, queue: str, task_id: str, value: Any, message: str) -> None:
        await self._broker().set_progress(queue, task_id, value, message)

    # -- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop gracefully; a second call stops at once (no grace period)."""
        if self._stop_requested.is_set():
            if not self._hard_stop:
                logger.warning("second stop request: cancelling running tasks now")
            self._hard_stop = True
        self._stop_requested.set()

    async def run(self) -> None:
        """Run until stopped (or, in burst mode, until the queues are drained).

        Raises :class:`~aqueue.WorkerCrashed`, after shutting down as gracefully
        as a stop request would, when a worker loop failed on an internal error.
        """
        app = self.app
        broker = self._broker()
        self._runner.on_loop(asyncio.get_running_loop())
        await app.connect()
        for queue in self.queues:
            await self._starting(functools.partial(broker.ensure_group, queue))
        self._log_banner(await self._starting(app.client.topology))
        await self._warn_unserved()
        try:
            async with app.run_lifespan() as state:
                self._executor.state = state
                await self._starting(self._maintenance.heartbeat)
                if not app.client.injected:  # it needs a connection of its own
                    self.watchdog = LoopWatchdog(
                        app.settings, self.name, self.queues, self._inflight
                    )
                    self.watchdog.start()
                await self._announce(online=True)
                await app.client.hooks.notify("worker_start", self._info())
                spawn = self._spawn_loop
                spawn(self._finisher.loop(), "finish")
                spawn(self._maintenance.heartbeat_loop(), "heartbeat")
                spawn(self._maintenance.control_loop(), "control")
                spawn(self._maintenance.reclaim_loop(), "reclaim")
                spawn(self._forwarder.loop(), "forward")
                for queue in self.queues:
                    spawn(self._fetcher.loop(queue), f"fetch:{queue}")
                    spawn(self._maintenance.promote_loop(queue), f"promote:{queue}")
                if self.burst:
                    spawn(self._stop_when_drained(), "burst")
                if self.max_memory_mb is not None:
                    from .recycling import watch_memory  # only with --max-memory-per-child

                    spawn(watch_memory(self.max_memory_mb, self.recycle), "memory")
                if self.beat:
                    # Declared schedules, and those kept in Redis (watched each second).
                    from ..periodic import Scheduler
                    from ..schedules import StoredScheduleSource

                    spawn(Scheduler(app, source=StoredScheduleSource(app)).run(), "beat")
                await self._stop_requested.wait()
                await self._shutdown()
        finally:
            await _cancel_until_done(self._loops)
            self._loops.clear()
            if self.watchdog is not None:
                self.watchdog.stop()
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
            await self._executor.close()
        if self._crashed_loop is not None:
            raise WorkerCrashed(
                f"worker loop {self._crashed_loop} crashed (see the traceback logged above); "
                "the worker stopped"
            )

    def _spawn_loop(self, coro: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("worker loop %s crashed; stopping the worker", name)
                if self._crashed_loop is None:
                    self._crashed_loop = name
                self._hard_stop = True
                self._stop_requested.set()

        self._loops.append(asyncio.create_task(guarded(), name=f"aqueue-{name}"))

    def _log_banner(self, topology: str) -> None:
        names = ", ".join(sorted(self.app.tasks)) or "(none)"
        logger.info(
            "aqueue %s worker %s\n  redis:       %s\n  queues:      %s\n"
            "  concurrency: %d (threads for sync tasks: %d)\n  tasks:       %s",
            __version__,
            self.name,
            topology,
            ", ".join(self.queues),
            self.concurrency,
            self.threads,
            names,
        )

    def recycle(self, reason: str) -> None:
        """Stop gracefully at a recycling limit: begin nothing more, finish what runs."""
        if self.recycled is None and not self._stop_requested.is_set():
            self.recycled = reason
            logger.info("worker %s recycles: %s; draining, then a fresh one", self.name, reason)
            self.stop()

    async def _warn_unserved(self) -> None:
        """Name the other registered queues whose tasks wait with no worker reading them."""
        views = self.app.client.views
        try:
            others = [q for q in await views.registered_queues() if q not in self.queues]
            stranded = await unserved_queues(self.app.client, others)
        except RETRYABLE:
            return  # only advice: the worker's loops ride out the outage
        for queue, waiting in stranded:
            logger.warning(
                "queue %s has %d waiting task(s) and no live worker; this worker reads "
                "only %s (start one for it with -q %s)",
                queue,
                waiting,
                ", ".join(self.queues),
                queue,
            )

    async def _stop_when_drained(self) -> None:
        """Burst mode: stop once every queue read empty and nothing is held."""

        def drained() -> bool:
            return all(self._fetcher.idle.values()) and not self._inflight and self._finisher.idle

        while True:
            await asyncio.sleep(0.05)
            if drained():
                # Double-check after a short pause: a read may be mid-flight.
                await asyncio.sleep(0.25)
                if drained():
                    self.stop()
                    return

    # -- shutdown --------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._stopping = True
        self._fetcher.stopping = self._maintenance.stopping = self._runner.stopping = True
        # Never begun: leaving hands them back without counting a delivery.
        read_ahead = self._runner.drop_read_ahead()
        keep = {"aqueue-finish", "aqueue-heartbeat", "aqueue-control"}
        for loop_task in self._loops:
            if loop_task.get_name() not in keep:
                loop_task.cancel()
        await self._wait_for_running()
        # Outcomes first, then hand back what's left: the order keeps a finished
        # task from being handed back and run twice.
        await self._finisher.drain(10.0)
        # Still executing now means running in a thread: its entry stays leased
        # to this worker so no one runs it beside the thread.
        still_running = [
            held for held in self._inflight if held.task is not None and not held.task.done()
        ]
        await self._maintenance.end_heartbeats()
        handed_back = await self._hand_back(
            [held.job.delivery for held in still_running], read_ahead
        )
        self.abandoned = len(still_running)
        if still_running:
            logger.warning(
                "%d task(s) still running in threads keep their lease (%s): they run again "
                "elsewhere only once this worker's heartbeat is gone (dead_worker_after %.0fs)",
                len(still_running),
                ", ".join(f"{h.job.display_name}[{h.job.envelope.id}]" for h in still_running),
                self.app.settings.dead_worker_after,
            )
        await self._leave_registry()
        await self._announce(online=False)
        await self.app.client.hooks.notify("worker_stop", self._info())
        s = self.stats
        logger.info(
            "worker stopped: %d succeeded, %d failed, %d retried, %d dead, %d handed back",
            s.succeeded,
            s.failed,
            s.retried,
            s.dead,
            handed_back,
        )

    async def _wait_for_running(self) -> None:
        """Give running tasks the grace period, then cancel what is left.

        A plain ``def`` task whose thread already runs can't be cancelled: it
        is left running (and is not handed back, see :meth:`_shutdown`).
        """
        running = self._runner.tasks()
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
        cancelled = []
        for entry, held in list(self._inflight.by_entry.items()):
            if held.task is None or held.task.done():
                continue
            if self._executor.threads.withdraw(entry):
                self._runner.cancel(entry, "shutdown")
                cancelled.append(held.task)
        await asyncio.gather(*cancelled, return_exceptions=True)

    async def _starting(self, step: Callable[[], Awaitable[_T]]) -> _T:
        """One start-up call, tried again when a connection drops under it
        (a failover or a killed connection is over in a second or two)."""
        for attempt in range(HAND_BACK_ATTEMPTS):
            try:
                return await step()
            except RETRYABLE:
                if attempt + 1 == HAND_BACK_ATTEMPTS:
                    raise
                await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
        raise AssertionError("unreachable")

    async def _hand_back(self, keep: list[Delivery], waiting: list[Delivery]) -> int:
        """Hand back whatever is still pending for this worker, queue by queue,
        except the deliveries in ``keep``; ``waiting`` were read ahead and never
        begun (their delivery is not counted against ``max_deliveries``)."""
        handed_back = 0
        broker = self._broker()
        for queue in self.queues:
            kept = [d.entry_id for d in keep if d.queue == queue]
            unrun = [d.entry_id for d in waiting if d.queue == queue]
            # A failover under way (READONLY, UNBLOCKED, a lost connection)
            # is over in a second or two: try a few times before giving up.
            for attempt in range(HAND_BACK_ATTEMPTS):
                try:
                    handed_back += await broker.leave(queue, self.name, kept, unrun)
                    break
                except RETRYABLE as exc:
                    if attempt + 1 < HAND_BACK_ATTEMPTS:
                        await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
                        continue
                    logger.error(
                        "could not hand back unfinished tasks of %s (%s); other workers will "
                        "reclaim them once this worker's heartbeat is gone",
                        queue,
                        exc,
                    )
        self.stats.handed_back += handed_back
        return handed_back

    async def _leave_registry(self) -> None:
        """Remove this worker's description, after its last heartbeat."""
        heartbeat = [t for t in self._loops if t.get_name() == "aqueue-heartbeat"]
        await _cancel_until_done(heartbeat)
        with contextlib.suppress(*RETRYABLE):
            await self._broker().views.delete_worker(self.name)

    def _info(self) -> WorkerInfo:
        return WorkerInfo(self.name, tuple(self.queues), self.concurrency)

    async def _announce(self, online: bool) -> None:
        """The worker's own event (events on): it joined, or it left."""
        if not self.app.settings.events:
            return
        from ..core.events import WORKER_OFFLINE, WORKER_ONLINE  # loaded with events on

        state = WORKER_ONLINE if online else WORKER_OFFLINE
        with contextlib.suppress(*RETRYABLE):
            await self._broker().events.worker_event(self.queues, self.name, state)


async def _cancel_until_done(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel until each task has ended: redis-py swallows a cancellation that
    lands while it opens a connection (pubsub.subscribe() among others)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
