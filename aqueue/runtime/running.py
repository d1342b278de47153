"""Running: the jobs a worker holds, at most ``concurrency`` of them executing at once.

A prepared job is *admitted*: it begins at once when a slot is free, or
waits in the read-ahead line until a running task ends. Each running job is
an asyncio task that asks the :class:`~.executor.Executor` for its outcome
and hands that outcome to the finisher. A job can be *cancelled* (abort
request, lease lost, shutdown); the reason decides what is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import msgspec

from ..core.protocol import Delivery, FinishItem
from .executor import Executor, Job, aborted
from .hooked import job_info, run_hooked, tell_aborted, tell_outcome
from .slots import Capacity
from .tuning import TaskStarter, task_starter
from .workflow import follow_ups

__all__ = ["Inflight", "Observer", "Runner", "Running"]

# Everything a worker says goes to one logger, which users filter on.
logger = logging.getLogger("aqueue.worker")

#: How long a task cancelled by an abort may take to end before it is recorded
#: aborted anyway: a coroutine that swallows the cancellation (some Redis and
#: HTTP clients do while they connect) must not keep ``abort()`` waiting.
ABORT_GRACE = 5.0


class Running(msgspec.Struct):
    """A job this worker holds: executing (``task`` set) or read ahead."""

    job: Job
    leased_at: float
    """``time.monotonic()`` when its lease was last taken or renewed."""
    task: asyncio.Task[None] | None = None
    started: float = 0.0
    """``time.perf_counter()`` when it began executing."""
    cancel_reason: str | None = None
    """'abort', 'lost' (another worker has it) or 'shutdown'."""
    entered: bool = False
    """Its asyncio task has begun to run (a task cancelled before that never
    runs a line of :meth:`Runner._run`, so nothing would record it)."""
    abandoned: bool = False
    """Recorded aborted although its coroutine has not ended (it ignored the
    cancellation): whatever it returns later is dropped."""


class Observer(Protocol):
    """Per-task hooks (``aqueue worker --metrics-port`` sets one)."""

    def started(self, job: Job) -> None: ...
    def finished(self, item: FinishItem, running: Running | None) -> None: ...


#: Stores a progress report in Redis: (queue, task id, value, message).
StoreProgress = Callable[[str, str, Any, str], Awaitable[None]]
#: Hands an outcome to the finisher: (queue, outcome, the job it ends, if any).
Finish = Callable[[str, FinishItem, "Running | None"], None]


class Inflight:
    """The jobs a worker holds, by stream entry id."""

    def __init__(self) -> None:
        self.by_entry: dict[str, Running] = {}

    def __len__(self) -> int:
        return len(self.by_entry)

    def __iter__(self) -> Iterator[Running]:
        return iter(self.by_entry.values())

    def get(self, entry_id: str) -> Running | None:
        return self.by_entry.get(entry_id)

    def entry_of(self, task_id: str) -> str | None:
        """The entry of a held job of that task (an abort request or a progress
        report names the task): a walk over at most concurrency + prefetch jobs,
        which costs those rare requests less than a second map kept for every
        task would cost each task."""
        for entry, running in self.by_entry.items():
            if running.job.envelope.id == task_id:
                return entry
        return None

    def forget(self, job: Job) -> None:
        self.by_entry.pop(job.delivery.entry_id, None)


class Runner:
    """Begins admitted jobs while fewer than ``concurrency`` execute."""

    def __init__(
        self,
        executor: Executor,
        inflight: Inflight,
        capacity: Capacity,
        concurrency: int,
        finish: Finish,
        store_progress: StoreProgress,
    ) -> None:
        self.executor = executor
        self.store_progress = store_progress
        self.inflight = inflight
        self.capacity = capacity
        self.concurrency = concurrency
        self.finish = finish
        self.executing = 0
        self.stopping = False
        self.observer: Observer | None = None
        self._ready: deque[Running] = deque()
        #: Recycling: jobs begun so far, the most this worker begins (None: no
        #: limit), and who is told when it has begun that many.
        self.begun = 0
        self.max_begun: int | None = None
        self.on_spent: Callable[[str], None] | None = None
        #: Creates a job's asyncio task on the worker's loop (see :meth:`on_loop`).
        self._start: TaskStarter | None = None
        # True while _ended() begins read-ahead jobs: a job that then ends
        # within its own start (eager start, Python 3.12+) leaves the next one
        # to that loop instead of nesting another.
        self._beginning_next = False

    def on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin jobs on ``loop`` (the worker's): its own ``create_task``, without
        the lookups of ``asyncio.create_task`` on every job."""
        self._start = task_starter(loop)

    def _spent(self) -> bool:
        """The worker began all the jobs it may (``--max-tasks-per-child``)."""
        return self.max_begun is not None and self.begun >= self.max_begun

    def admit(self, job: Job, first: bool = False) -> None:
        """Take a prepared job: begin it now, or read it ahead until a slot frees
        (``first``: ahead of every job already read ahead)."""
        running = Running(job, time.monotonic())
        self.inflight.by_entry[job.delivery.entry_id] = running
        max_begun = self.max_begun  # recycling: begin no more than that
        if self.executing >= self.concurrency or (
            max_begun is not None and self.begun >= max_begun
        ):
            if first:
                self._ready.appendleft(running)
            else:
                self._ready.append(running)
            return
        self._begin(running)

    def _begin(self, running: Running) -> None:
        job = running.job
        self.executing += 1
        running.started = time.perf_counter()
        start = self._start or task_starter(asyncio.get_running_loop())
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s[%s] started (attempt %d)", job.display_name, job.envelope.id, job.attempt
            )
        if self.observer is not None:
            self.observer.started(job)
        self.begun += 1
        if self.begun == self.max_begun and self.on_spent is not None:
            self.on_spent(f"began {self.begun} tasks, --max-tasks-per-child {self.max_begun}")
        # On Python 3.12+ a job that never suspends runs to its end inside
        # this call (see tuning.task_starter), so `running.task` is set after.
        running.task = start(self._run(running))

    async def _run(self, running: Running) -> None:
        job = running.job
        hooks = self.executor.hooks
        info = job_info(job) if hooks is not None and hooks.active else None
        running.entered = True
        try:
            if running.cancel_reason is not None:
                # Cancelled between begin and its first step (an abort at the moment
                # of start): it ends here, through the same path as a cancellation.
                raise asyncio.CancelledError
            if info is None:
                if job.as_is:  # the common case, one coroutine frame less
                    try:
                        value = await job.task.fn(*job.args, **job.kwargs)
                    except BaseException as exc:  # task code: the executor says what it means
                        item = self.executor.raised(job, exc)
                    else:
                        item = self.executor.outcome(job, value)
                else:
                    item = await self.executor.run(job)
            else:
                assert hooks is not None
                item = await run_hooked(hooks, info, job, self.executor.run, self.executor.codec)
            if running.abandoned:  # recorded aborted meanwhile: this outcome is stale
                self._ended()
                return
        except asyncio.CancelledError:
            if running.abandoned:
                self._ended()
                return
            reason = running.cancel_reason
            if reason == "abort":
                item = aborted(job)
            else:
                # Lease lost (another worker has it) or shutdown (leaving hands it
                # back): nothing is recorded here.
                self.inflight.forget(job)
                self.capacity.release()
                self._ended()
                if reason is None:
                    raise
                return
        self._hand_on(job, item)
        self.finish(job.delivery.queue, item, running)
        self._ended()
        if info is not None:
            assert hooks is not None
            await tell_outcome(hooks, info, item, job)

    def _ended(self) -> None:
        """A job stopped executing: begin the next one read ahead, if any."""
        self.executing -= 1
        if not self._ready or self._beginning_next:
            return  # nothing read ahead, or the loop below begins it
        if self._spent() and not self.stopping:
            return  # recycling: leaving hands what is read ahead back
        self._beginning_next = True
        try:
            while self._ready and (self.executing < self.concurrency or self.stopping):
                running = self._ready.popleft()
                if running.cancel_reason is None and not self.stopping:
                    self._begin(running)
                elif running.cancel_reason == "abort":
                    self._record_aborted(running)
                else:  # lost, or stopping (leaving hands it back): nothing to record
                    self.inflight.forget(running.job)
                    self.capacity.release()
        finally:
            self._beginning_next = False

    def cancel(self, entry_id: str, reason: str) -> None:
        """Cancel one held job: 'abort' records it aborted; 'lost' and 'shutdown' don't."""
        running = self.inflight.get(entry_id)
        if running is None:
            return
        if running.task is None:  # read ahead, not begun: skipped when its turn comes
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
            asyncio.get_running_loop().call_later(ABORT_GRACE, self._abandon, running)
        running.cancel_reason = reason
        if not running.entered:
            return  # _run sees the reason on its first step
        # For a plain def task this cancels the wait, not the thread (threads
        # can't be interrupted): the thread's eventual outcome is discarded.
        running.task.cancel()

    def _abandon(self, running: Running) -> None:
        """An aborted task still running after the grace: record it aborted now."""
        task = running.task
        if task is None or task.done() or running.abandoned:
            return
        job = running.job
        logger.warning(
            "%s[%s]: still running %.0fs after its abort (it ignored the cancellation); "
            "recorded aborted, its coroutine is left to end on its own",
            job.display_name,
            job.envelope.id,
            ABORT_GRACE,
        )
        running.abandoned = True
        self._record_aborted(running)

    def _record_aborted(self, running: Running) -> None:
        """Record a job aborted that did not end by itself (aborted while read
        ahead, or abandoned after the grace), as a run that ended would be."""
        job = running.job
        item = aborted(job)
        self._hand_on(job, item)
        self.finish(job.delivery.queue, item, running)
        tell_aborted(self.executor.hooks, item, job)

    def _hand_on(self, job: Job, item: FinishItem) -> None:
        """A workflow step's hand-offs (the next steps, or its chord's count)
        leave with its outcome, whichever way it ended; run_hooked has made
        them already, inside the enqueue middleware, for a run with hooks."""
        envelope = job.envelope
        if (envelope.then is not None or envelope.member is not None) and not item.follow:
            item.follow = follow_ups(envelope, item, self.executor.codec, time.time())

    def drop_read_ahead(self) -> list[Delivery]:
        """Forget every job read ahead and never begun (leaving hands them back);
        returns their deliveries."""
        dropped = []
        while self._ready:
            waiting = self._ready.popleft()
            self.inflight.forget(waiting.job)
            self.capacity.release()
            dropped.append(waiting.job.delivery)
        return dropped

    def tasks(self) -> list[asyncio.Task[None]]:
        """The asyncio tasks of every job executing now."""
        return [r.task for r in self.inflight if r.task is not None]

    async def report_progress(self, task_id: str, value: Any, message: str) -> None:
        """Where ``ctx.progress`` goes: only for a job this worker still holds."""
        entry = self.inflight.entry_of(task_id)
        running = self.inflight.get(entry) if entry else None
        if running is None:
            return
        await self.store_progress(running.job.delivery.queue, task_id, value, message)
