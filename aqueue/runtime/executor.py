"""Running one message: decode, check, call the task, turn what happened into an outcome.

Nothing here talks to Redis: the worker feeds a :class:`Delivery` in and
records the :class:`FinishItem` that comes out, so every path (bad bytes,
unknown task, wrong arguments, expiry, success, failure, retry, timeout) can
be tested with plain values.
"""

# Over 400 lines: every way a task runs (coroutine, thread, task process, stream) ends
# in the same retry and failure rules, which live here once.

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.config import Settings
from ..core.context import Context
from ..core.errors import ConfigError, Retry
from ..core.hooks import Hooks
from ..core.protocol import (
    SIGNATURE_MARK,
    Codec,
    Delivery,
    Envelope,
    ErrorInfo,
    FinishItem,
    MessageError,
    decode_envelope,
    describe_error,
    encode_envelope,
    encode_error,
    encode_value,
)
from ..core.status import TaskStatus
from ..task import Task
from .threads import TaskThreads, ThreadGate

if TYPE_CHECKING:
    from .processes import ProcessPool
    from .streaming import ChunkSink

__all__ = ["Executor", "Job", "ProgressReport", "aborted", "dead"]

#: How a running task's ``ctx.progress(value, message)`` reaches Redis.
ProgressReport = Callable[[str, Any, str], Coroutine[Any, Any, None]]

#: The longest retry delay a task may ask for (a year): more can't be scheduled.
MAX_RETRY_DELAY = 365 * 24 * 3600.0
#: What a task that returns nothing (most do) leaves as its result.
_ENCODED_NONE = encode_value(None)


class Job(msgspec.Struct):
    """A delivery that decoded and names a registered task, ready to run."""

    delivery: Delivery
    envelope: Envelope
    task: Task[Any, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    #: The job is its task's own coroutine with nothing around it (an ``async def``
    #: without a timeout or a Context parameter): the worker may await
    #: ``task.fn(*args, **kwargs)`` itself, without the frame of
    #: :meth:`Executor.run`, and ask :meth:`Executor.outcome` or
    #: :meth:`Executor.raised` for what it gave.
    as_is: bool = False
    #: What the task raised, for middleware (error trackers); None when it did not.
    exception: BaseException | None = None

    @property
    def display_name(self) -> str:
        return self.envelope.shadow or self.task.name


def dead(delivery: Delivery, reason: str, detail: str) -> FinishItem:
    """An outcome that sends the delivery to the dead-letter stream."""
    return FinishItem(
        entry_id=delivery.entry_id,
        task_id=delivery.task_id or delivery.entry_id,
        state=TaskStatus.DEAD,
        error=encode_error(ErrorInfo(reason, detail)),
        payload=delivery.payload,
        reason=reason,
    )


def aborted(job: Job) -> FinishItem:
    """The outcome of a task cancelled by an abort request."""
    return FinishItem(
        entry_id=job.delivery.entry_id,
        task_id=job.envelope.id,
        state=TaskStatus.ABORTED,
        error=encode_error(ErrorInfo("TaskAborted", "aborted while running")),
    )


class Executor:
    """Turns deliveries into jobs and jobs into outcomes, for one worker process.

    ``tasks`` is the App's registry, ``codec`` its signing codec; ``threads``
    runs plain ``def`` tasks; ``state`` is what the worker's lifespan made
    (``ctx.state``); ``report`` stores progress.
    """

    def __init__(
        self,
        tasks: Mapping[str, Task[Any, Any]],
        codec: Codec,
        settings: Settings,
        threads: concurrent.futures.ThreadPoolExecutor,
        state: dict[str, Any] | None = None,
        report: ProgressReport | None = None,
    ) -> None:
        self.tasks = tasks
        self.codec = codec
        self.settings = settings
        #: Runs plain ``def`` tasks; knows which job's thread still runs.
        self.threads = TaskThreads(threads)
        #: Task processes for ``executor="process"`` tasks (default: one per CPU).
        self.process_count = os.cpu_count() or 1
        self._processes: ProcessPool | None = None
        self.state: dict[str, Any] = {} if state is None else state
        self.report = report
        #: Where a streaming task's chunks go (set by the worker).
        self.emit: ChunkSink | None = None
        #: Epoch seconds that expiry is judged by (the App's clock; a test's virtual one).
        self.clock: Callable[[], float] = time.time
        #: A ``def`` task that must wait for a free thread (set by the worker):
        #: ``thread_gate(job, False)`` shows it queued meanwhile, ``(job, True)``
        #: marks it running once a thread begins it, False if aborted meanwhile.
        self.thread_gate: Callable[[Job, bool], Coroutine[Any, Any, bool]] | None = None
        #: The App's middleware (set by the worker; None: none registered).
        self.hooks: Hooks | None = None

    @property
    def processes(self) -> ProcessPool:
        """Runs ``executor="process"`` tasks: made with the first such task (a worker
        without any never loads :mod:`.processes`); its processes start when needed."""
        if self._processes is None:
            from .processes import ProcessPool

            self._processes = ProcessPool(self.process_count)
        return self._processes

    async def close(self) -> None:
        """Stop the task processes, if any task ran in one."""
        if self._processes is not None:
            await self._processes.close()

    # -- before running ---------------------------------------------------------------

    def prepare(self, delivery: Delivery, now: float) -> Job | FinishItem:
        """Decode and check a delivery; a FinishItem means it must not run."""
        payload = delivery.payload
        codec = self.codec
        try:
            if codec.signing_key is None and not payload.startswith(SIGNATURE_MARK):
                env = decode_envelope(payload)  # the common case, without another call
            else:
                env = codec.unpack(payload)
        except MessageError as exc:
            return dead(delivery, exc.reason, exc.detail)
        if not delivery.task_id:
            delivery.task_id = env.id
        elif delivery.task_id != env.id:  # refused by the scripts already (take_entry)
            return dead(
                delivery,
                "id_mismatch",
                f"the entry names task {delivery.task_id} but its message is task {env.id}",
            )
        task = self.tasks.get(env.task)
        if task is None:
            return dead(
                delivery,
                "unknown_task",
                f"no task named {env.task!r} is registered on this worker",
            )
        if env.expires is not None and now > env.expires:
            late = now - env.expires
            return FinishItem(
                entry_id=delivery.entry_id,
                task_id=env.id,
                state=TaskStatus.EXPIRED,
                error=encode_error(
                    ErrorInfo("TaskExpired", f"expired {late:.3f}s before a worker could start it")
                ),
            )
        try:
            args, kwargs = task.spec.decode(env.args, env.kwargs)
        except (TypeError, msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            return dead(
                delivery,
                "bad_arguments",
                f"arguments don't match {task.name}{task.spec.call_signature}: {exc}",
            )
        attempt = delivery.attempt or env.retries + delivery.deliveries
        as_is = task.is_async and env.timeout is None and task.spec.context_param is None
        return Job(delivery, env, task, args, kwargs, attempt, as_is)

    # -- running ----------------------------------------------------------------------

    def raised(self, job: Job, exc: BaseException) -> FinishItem:
        """The outcome of a task that raised ``exc``; re-raises the worker's own
        cancellation (abort, lost lease, shutdown), which the worker handles."""
        if isinstance(exc, asyncio.CancelledError):
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise exc
            # Raised by the task's own code: a failure like any other, not a crash
            # that leaves the message to wait out its lease.
        return self._after_error(job, exc)

    async def run(self, job: Job) -> FinishItem:
        """Run the job's task once and describe the outcome.

        ``asyncio.CancelledError`` propagates when the worker cancelled the
        task (abort, lost lease, shutdown): the worker knows why.
        """
        task = job.task
        is_async = task.is_async
        if not is_async and task.config.executor == "process":  # never an async def
            return await self._run_in_process(job)
        args, kwargs = job.args, job.kwargs
        context_param = task.spec.context_param
        if context_param is not None:
            args, kwargs = self._with_context(job, context_param)
        timeout = job.envelope.timeout
        try:
            if not is_async:
                if task.is_stream:
                    value = await self._stream(job, args, kwargs)
                else:
                    value = await self._await_thread(job, args, kwargs)
            elif timeout is None:
                # The common case, without another coroutine frame per task.
                value = await task.fn(*args, **kwargs)
            else:
                value = await self._await_coroutine(job, args, kwargs)
        except asyncio.CancelledError as exc:
            return self.raised(job, exc)  # re-raised when the worker cancelled it
        except _AbortedWhileWaiting:
            return aborted(job)
        except _TimedOut:
            error = TimeoutError(f"{job.display_name} timed out after {timeout}s")
            item = self._after_error(job, error)
            if item.state is TaskStatus.RETRYING and not task.is_async:
                # Its thread runs on: the retry must not begin beside it. The job
                # keeps its slot and lease until the thread returns.
                await self.threads.until_ended(job.delivery.entry_id)
            return item
        except BaseException as exc:
            # sys.exit(), KeyboardInterrupt or any other BaseException raised by task
            # code: the task failed, the worker goes on. Let through, it would stop
            # the worker or leave the task running for ever, holding its slot.
            return self._after_error(job, exc)
        return self.outcome(job, value)

    def outcome(self, job: Job, value: Any) -> FinishItem:
        """The outcome of a task that returned ``value``."""
        task = job.task
        try:
            result = _ENCODED_NONE if value is None else encode_value(value)
        except (TypeError, ValueError, OverflowError) as exc:
            return self._failure(
                job,
                ErrorInfo(
                    "aqueue.errors.SerializationError",
                    f"return value of {task.name} can't be encoded with msgspec: {exc}",
                ),
            )
        limit = self.settings.max_result_bytes
        if len(result) > limit:
            # Stored, it would be refused by Redis or fill its memory: the task
            # fails with a small, recordable error instead.
            return self._failure(
                job,
                ErrorInfo(
                    "aqueue.errors.ResultTooLarge",
                    f"return value of {task.name} is {len(result):,} bytes encoded, over "
                    f"max_result_bytes={limit:,}; store large results elsewhere (object "
                    "storage, a database) and return a reference",
                ),
            )
        return FinishItem(
            entry_id=job.delivery.entry_id,
            task_id=job.envelope.id,
            state=TaskStatus.SUCCEEDED,
            result=result,
            unique=job.envelope.unique_key is not None,
        )

    def _with_context(self, job: Job, param: str) -> tuple[list[Any], dict[str, Any]]:
        """The call's arguments with the task's Context added as ``param``."""
        task, env = job.task, job.envelope
        args, kwargs = job.args, job.kwargs
        ctx = Context(
            id=env.id,
            task=task.name,
            queue=env.queue,
            attempt=job.attempt,
            enqueued_at=env.enqueued_at,
            deadline=None if env.timeout is None else time.time() + env.timeout,
            state=self.state,
            _report=self.report,
            _loop=asyncio.get_running_loop(),
        )
        first = next(iter(task.spec.signature.parameters.values()))
        if first.name == param and first.kind is not first.KEYWORD_ONLY:
            # Positionally: the other arguments may arrive positionally too.
            return [ctx, *args], kwargs
        return args, {**kwargs, param: ctx}

    @staticmethod
    async def _await_coroutine(job: Job, args: list[Any], kwargs: dict[str, Any]) -> Any:
        scope = asyncio.timeout(job.envelope.timeout)
        try:
            async with scope:
                return await job.task.fn(*args, **kwargs)
        except TimeoutError:
            if scope.expired():
                raise _TimedOut from None
            raise

    async def _stream(self, job: Job, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        """Run a streaming task: each chunk is stored as it comes; the value is all of them."""
        from .streaming import StreamCall, relay_chunks  # loaded by the first streaming task

        scope = asyncio.timeout(job.envelope.timeout)
        try:
            async with scope:
                call = StreamCall(
                    job.task.fn,
                    args,
                    kwargs,
                    job.envelope.queue,
                    job.envelope.id,
                    job.attempt,
                    job.delivery.entry_id,
                )
                return await relay_chunks(call, self.emit, self.threads)
        except TimeoutError:
            if scope.expired():
                raise _TimedOut from None
            raise

    async def _await_thread(self, job: Job, args: list[Any], kwargs: dict[str, Any]) -> Any:
        timeout = job.envelope.timeout
        call = functools.partial(contextvars.copy_context().run, job.task.fn, *args, **kwargs)
        keeper = self.thread_gate
        if keeper is None or not self.threads.saturated():
            begun, future = self.threads.start(job.delivery.entry_id, call)
        else:
            gate = ThreadGate()
            begun, future = self.threads.start(job.delivery.entry_id, call, gate)
            if not await gate.wait(functools.partial(keeper, job), begun, future):
                raise _AbortedWhileWaiting
        if timeout is None:
            return await future
        # Waiting for a free thread is not running: the timeout counts from when a
        # thread begins the call (two stuck threads made later tasks time out unrun).
        try:
            await asyncio.wait([begun, future], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            future.cancel()  # withdraws the call if no thread has begun it
            raise
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            # The thread can't be stopped; it keeps its pool slot until it returns.
            raise _TimedOut from None

    async def _run_in_process(self, job: Job) -> FinishItem:
        """Run a ``def`` task in a task process: its wire arguments in, msgpack out."""
        from .processes import RETRY_ASKED, RETRY_ON, ProcessDied, reference

        env, task = job.envelope, job.task
        try:
            module, qualname = reference(task.fn)
        except ConfigError as exc:
            return self._failure(job, ErrorInfo("aqueue.errors.ConfigError", str(exc)))
        try:
            reply = await self.processes.call(
                module, qualname, bytes(env.args), bytes(env.kwargs), env.timeout
            )
        except TimeoutError:
            error = TimeoutError(
                f"{job.display_name} timed out after {env.timeout}s; its process was killed"
            )
            return self._after_error(job, error)
        except ProcessDied as exc:
            return self._after_error(job, exc)
        if reply.ok:
            return FinishItem(
                entry_id=job.delivery.entry_id,
                task_id=env.id,
                state=TaskStatus.SUCCEEDED,
                result=reply.value,
                unique=env.unique_key is not None,
            )
        info = reply.error or ErrorInfo("Unknown", "no error details")
        cfg = task.config
        retries_left = env.retries < (
            env.max_retries if env.max_retries is not None else cfg.retries
        )
        if reply.retry == RETRY_ASKED and retries_left:
            delay = (
                reply.delay
                if reply.delay is not None
                else cfg.retry_delay_for(env.retries, random.random())
            )
            if delay <= MAX_RETRY_DELAY:
                return self._retry(job, Retry(delay, info.message), delay, info)
        elif reply.retry == RETRY_ON and retries_left:
            delay = cfg.retry_delay_for(env.retries, random.random())
            return self._retry(job, Retry(delay, info.message), delay, info)
        return self._failure(job, info)

    # -- outcomes ---------------------------------------------------------------------

    def _after_error(self, job: Job, exc: BaseException) -> FinishItem:
        job.exception = exc
        cfg = job.task.config
        env = job.envelope
        max_retries = env.max_retries if env.max_retries is not None else cfg.retries
        retries_left = env.retries < max_retries
        if isinstance(exc, Retry):
            if not retries_left:
                return self._failure(
                    job, ErrorInfo("aqueue.errors.Retry", f"retries exhausted: {exc}", "")
                )
            delay = (
                exc.delay
                if exc.delay is not None
                else cfg.retry_delay_for(env.retries, random.random())
            )
            if not delay <= MAX_RETRY_DELAY:  # also NaN: it can't be scheduled
                return self._failure(
                    job,
                    ErrorInfo(
                        "aqueue.errors.Retry",
                        f"Retry(delay={delay!r}) is not a number of seconds up to "
                        f"{MAX_RETRY_DELAY:.0f}; the task was not retried",
                        "",
                    ),
                )
            return self._retry(job, exc, delay)
        if retries_left and isinstance(exc, cfg.retry_on):
            return self._retry(job, exc, cfg.retry_delay_for(env.retries, random.random()))
        return self._failure(job, describe_error(exc))

    def _retry(
        self, job: Job, exc: BaseException, delay: float, info: ErrorInfo | None = None
    ) -> FinishItem:
        env = msgspec.structs.replace(job.envelope, retries=job.envelope.retries + 1)
        return FinishItem(
            entry_id=job.delivery.entry_id,
            task_id=env.id,
            state=TaskStatus.RETRYING,
            error=encode_error(info or describe_error(exc)),
            retry_delay_ms=max(0, int(delay * 1000)),
            payload=self.codec.seal(encode_envelope(env)),
        )

    def _failure(self, job: Job, info: ErrorInfo) -> FinishItem:
        if self.settings.dead_letter_on_failure:
            return FinishItem(
                entry_id=job.delivery.entry_id,
                task_id=job.envelope.id,
                state=TaskStatus.DEAD,
                error=encode_error(info),
                payload=job.delivery.payload,
                reason="failed",
            )
        return FinishItem(
            entry_id=job.delivery.entry_id,
            task_id=job.envelope.id,
            state=TaskStatus.FAILED,
            error=encode_error(info),
            unique=job.envelope.unique_key is not None,
            # Kept in the failed task's record (until it expires), so the
            # dashboard can show its arguments and run it again.
            payload=job.delivery.payload,
        )


class _AbortedWhileWaiting(Exception):
    """A ``def`` task was aborted while it waited for a free thread: it never ran."""


class _TimedOut(Exception):
    """The task ran past its timeout (raised instead of the TimeoutError that says so)."""
