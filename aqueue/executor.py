"""Running one message: decode, check, call the task, turn what happened into an outcome.

Nothing here talks to Redis; the worker feeds deliveries in and sends the
resulting :class:`~aqueue.broker.FinishItem` back in batches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import random
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from .broker import Delivery, FinishItem
from .context import Context
from .envelope import (
    SIGNATURE_MARK,
    Envelope,
    ErrorInfo,
    MessageError,
    decode_envelope,
    encode_envelope,
    encode_error,
    encode_value,
    sign,
    verify,
)
from .errors import Retry

if TYPE_CHECKING:
    from .app import App
    from .task import Task

__all__ = ["Job", "execute", "prepare"]

_args_decoder = msgspec.msgpack.Decoder(list[Any])
_kwargs_decoder = msgspec.msgpack.Decoder(dict[str, Any])
_TRACEBACK_LIMIT = 16_000
_EMPTY_MAP = b"\x80"


@dataclass(slots=True)
class Job:
    """A delivery that decoded and names a registered task, ready to run."""

    delivery: Delivery
    envelope: Envelope
    task: Task[Any, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int

    @property
    def display_name(self) -> str:
        return self.envelope.shadow or self.task.name


def dead(delivery: Delivery, reason: str, detail: str) -> FinishItem:
    """An outcome that sends the delivery to the dead-letter stream."""
    return FinishItem(
        entry_id=delivery.entry_id,
        task_id=delivery.task_id or delivery.entry_id,
        state="dead",
        error=encode_error(ErrorInfo(reason, detail)),
        payload=delivery.payload,
        reason=reason,
    )


def prepare(app: App, delivery: Delivery, now: float) -> Job | FinishItem:
    """Decode and check a delivery; a FinishItem means it must not run."""
    payload = delivery.payload
    try:
        if app._signing_key is not None or payload[:1] == SIGNATURE_MARK[:1]:
            payload = verify(payload, app._signing_key)
        env = decode_envelope(payload)
    except MessageError as exc:
        return dead(delivery, exc.reason, exc.detail)
    if not delivery.task_id:
        delivery.task_id = env.id
    task = app.tasks.get(env.task)
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
            state="expired",
            error=encode_error(
                ErrorInfo("TaskExpired", f"expired {late:.3f}s before a worker could start it")
            ),
        )
    try:
        raw_args = _args_decoder.decode(env.args)
        raw_kwargs = _kwargs_decoder.decode(env.kwargs) if env.kwargs != _EMPTY_MAP else {}
        args, kwargs = task.spec.bind(raw_args, raw_kwargs)
    except (TypeError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        return dead(
            delivery,
            "bad_arguments",
            f"arguments don't match {task.name}{task.spec.call_signature}: {exc}",
        )
    attempt = delivery.attempt or env.retries + delivery.deliveries
    return Job(delivery, env, task, args, kwargs, attempt)


def _error_info(exc: BaseException) -> ErrorInfo:
    tb = "".join(traceback.format_exception(exc))
    if len(tb) > _TRACEBACK_LIMIT:
        tb = "...\n" + tb[-_TRACEBACK_LIMIT:]
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else (f"{kind.__module__}.{kind.__qualname__}")
    )
    return ErrorInfo(name, str(exc), tb)


def _retry_item(app: App, job: Job, exc: BaseException, delay: float) -> FinishItem:
    env = msgspec.structs.replace(job.envelope, retries=job.envelope.retries + 1)
    payload = encode_envelope(env)
    if app._signing_key is not None:
        payload = sign(payload, app._signing_key)
    return FinishItem(
        entry_id=job.delivery.entry_id,
        task_id=env.id,
        state="retrying",
        error=encode_error(_error_info(exc)),
        retry_delay_ms=max(0, int(delay * 1000)),
        payload=payload,
    )


def _failure(app: App, job: Job, info: ErrorInfo) -> FinishItem:
    if app.settings.dead_letter_on_failure:
        return FinishItem(
            entry_id=job.delivery.entry_id,
            task_id=job.envelope.id,
            state="dead",
            error=encode_error(info),
            payload=job.delivery.payload,
            reason="failed",
        )
    return FinishItem(
        entry_id=job.delivery.entry_id,
        task_id=job.envelope.id,
        state="failed",
        error=encode_error(info),
        unique=job.envelope.unique_key is not None,
    )


async def execute(
    app: App,
    job: Job,
    threads: concurrent.futures.ThreadPoolExecutor,
    state: dict[str, Any],
    report: Any = None,
) -> FinishItem:
    """Run the job's task once and describe the outcome.

    ``asyncio.CancelledError`` propagates: the worker knows why it cancelled.
    """
    task = job.task
    env = job.envelope
    timeout = env.timeout
    args, kwargs = job.args, job.kwargs
    if task.spec.context_param is not None:
        ctx = Context(
            id=env.id,
            task=task.name,
            queue=env.queue,
            attempt=job.attempt,
            enqueued_at=env.enqueued_at,
            deadline=None if timeout is None else time.time() + timeout,
            state=state,
            _report=report,
            _loop=asyncio.get_running_loop(),
        )
        first = next(iter(task.spec.signature.parameters.values()))
        if first.name == task.spec.context_param and first.kind is not first.KEYWORD_ONLY:
            # Positionally: the other arguments may arrive positionally too.
            args = [ctx, *args]
        else:
            kwargs = dict(kwargs)
            kwargs[task.spec.context_param] = ctx
    timed_out = False
    try:
        if task.is_async:
            if timeout is None:
                value = await task.fn(*args, **kwargs)
            else:
                scope = asyncio.timeout(timeout)
                try:
                    async with scope:
                        value = await task.fn(*args, **kwargs)
                except TimeoutError:
                    timed_out = scope.expired()
                    raise
        else:
            call = functools.partial(contextvars.copy_context().run, task.fn, *args, **kwargs)
            future = asyncio.get_running_loop().run_in_executor(threads, call)
            if timeout is None:
                value = await future
            else:
                try:
                    value = await asyncio.wait_for(future, timeout)
                except TimeoutError:
                    # The thread can't be stopped; it keeps its pool slot until it returns.
                    timed_out = True
                    raise
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is None or current.cancelling():
            raise  # the worker cancelled it (abort, lost lease, shutdown)
        # Raised by the task's own code: a failure like any other, not a crash
        # that leaves the message to wait out its lease.
        return _after_error(app, job, exc)
    except Exception as exc:
        error: BaseException = exc
        if timed_out:
            error = TimeoutError(f"{job.display_name} timed out after {timeout}s")
        return _after_error(app, job, error)
    except BaseException as exc:
        # sys.exit(), KeyboardInterrupt or any other BaseException raised by task
        # code: the task failed, the worker goes on. Let through, it would stop
        # the worker or leave the task running for ever, holding its slot.
        return _after_error(app, job, exc)
    try:
        result = encode_value(value)
    except (TypeError, ValueError, OverflowError) as exc:
        return _failure(
            app,
            job,
            ErrorInfo(
                "aqueue.errors.SerializationError",
                f"return value of {task.name} can't be encoded with msgspec: {exc}",
            ),
        )
    return FinishItem(
        entry_id=job.delivery.entry_id,
        task_id=env.id,
        state="succeeded",
        result=result,
        unique=env.unique_key is not None,
    )


def _after_error(app: App, job: Job, exc: BaseException) -> FinishItem:
    cfg = job.task.config
    env = job.envelope
    max_retries = env.max_retries if env.max_retries is not None else cfg.retries
    retries_left = env.retries < max_retries
    if isinstance(exc, Retry):
        if retries_left:
            delay = (
                exc.delay
                if exc.delay is not None
                else cfg.retry_delay_for(env.retries, random.random())
            )
            return _retry_item(app, job, exc, delay)
        return _failure(app, job, ErrorInfo("aqueue.errors.Retry", f"retries exhausted: {exc}", ""))
    if retries_left and isinstance(exc, cfg.retry_on):
        return _retry_item(app, job, exc, cfg.retry_delay_for(env.retries, random.random()))
    return _failure(app, job, _error_info(exc))
