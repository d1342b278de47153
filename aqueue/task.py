"""Registered tasks: the typed enqueue side of a task function.

``@app.task`` turns a function into a :class:`Task` whose ``enqueue`` keeps
the function's signature (ParamSpec), so ``await add.enqueue(1, 2)`` is an
``AsyncResult[int]`` to a type checker. A Task builds and checks messages
itself and sends them through its App's :class:`~aqueue.client.Client`.
Task arguments go through ``enqueue(*args, **kwargs)``; queue options go
through the decorator or ``.options(...)``, never the same namespace.
"""

# Over 400 lines: building and checking messages, and their typed enqueue, signature and
# delay entry points, share the per-options plan cache.

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

import msgspec

from .client import Client
from .core.arguments import ArgSpec
from .core.config import Settings
from .core.errors import (
    ConfigError,
    EnqueueError,
    PayloadTooLarge,
    SerializationError,
    did_you_mean,
)
from .core.hooks import JobInfo
from .core.limits import ConcurrencySpec, FlowLimits, RateSpec, check_priority
from .core.protocol import (
    WIRE_VERSION,
    ChainLink,
    ChordMember,
    Envelope,
    OutgoingMessage,
    encode_envelope,
)
from .inline import run_eagerly, run_eagerly_sync
from .result import AsyncResult
from .unique import UniqueMode, check_mode, enqueue_keyed

if TYPE_CHECKING:  # loaded by the first delay() or signature: a worker may never need them
    from .canvas import Signature
    from .sync import SyncResult

__all__ = ["EnqueueOptions", "Task", "TaskCall", "TaskConfig", "TaskOwner"]

P = ParamSpec("P")
R = TypeVar("R")

_MAX_TASK_ID = 200
_encode = msgspec.msgpack.Encoder().encode
_EMPTY_MAP = _encode({})
#: No keyword arguments as the envelope carries them (a Raw is immutable: one serves all).
_NO_KWARGS_RAW = msgspec.Raw(_EMPTY_MAP)
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Plan:
    """The per-options part of building messages, computed once per options."""

    queue: str
    task_id: str | None
    timeout: float | None
    max_retries: int | None
    shadow: str | None
    trace: dict[str, str] | None
    timed: bool
    unique: bool
    unique_for: float
    priority: int
    unique_mode: UniqueMode | None


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{what} must be a non-negative number of seconds or a timedelta")
    return float(value)


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """Options fixed when the task is declared (``@app.task(...)``)."""

    name: str
    queue: str
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 1.0
    """Delay before the first retry; doubles each retry when ``retry_backoff``."""
    retry_backoff: bool = True
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    """Exceptions that lead to a retry (others fail at once)."""
    expires: float | None = None
    """Relative: seconds after enqueue by which the task must have started."""
    unique: bool = False
    """Deduplicate by task name + arguments while a task is queued or running."""
    unique_for: float = 3600.0
    check_arguments: bool = True
    """Check argument types at ``enqueue()`` as the worker will (off: arity only)."""
    redact: bool | Callable[[Any], Any] = False
    """What the dashboard shows of this task's arguments, result and stream chunks:
    ``True`` hides them; a callable gets each value (the args tuple, the kwargs
    dict, the result, a chunk) and returns what may be shown instead."""

    priority: int = 0
    """0-9, 9 the most urgent: a waiting task of a higher priority is fetched first."""
    rate_limit: RateSpec | None = None
    """Starts per second/minute/hour across every worker: ``"100/s"`` or
    ``("20/s", "tenant:{tenant_id}")`` (one limit per key, formatted from the arguments)."""
    concurrency: ConcurrencySpec | None = None
    """Running at once across every worker: ``5`` or ``(5, "tenant:{tenant_id}")``."""

    executor: str | None = None
    """``"process"``: a plain ``def`` runs in a task process that a timeout or an abort
    kills (see :mod:`aqueue.runtime.processes`); default: a thread (``def``) or
    the worker's event loop (``async def``)."""
    unique_mode: str | None = None
    """``"debounce"`` or ``"replace"``: newer arguments win while the task waits
    (see :mod:`aqueue.unique`); the key is the task's name unless ``unique_key``."""

    def __post_init__(self) -> None:
        if not isinstance(self.redact, bool) and not callable(self.redact):
            raise ConfigError(
                f"redact= takes True, False or a callable, got {type(self.redact).__name__}"
            )

    def retry_delay_for(self, retries_done: int, jitter: float) -> float:
        """Delay before retry number ``retries_done + 1``; ``jitter`` in [0, 1)."""
        delay = self.retry_delay
        if self.retry_backoff:
            delay = min(self.retry_backoff_max, delay * (2**retries_done))
        if self.retry_jitter:
            delay *= 0.5 + jitter / 2
        return delay


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Per-call options (``task.options(...)``); ``None`` means the task's default."""

    task_id: str | None = None
    queue: str | None = None
    timeout: float | None = None
    retries: int | None = None
    delay: float | None = None
    eta: datetime | None = None
    expires: float | datetime | None = None
    shadow: str | None = None
    unique_key: str | None = None
    unique_for: float | None = None
    trace: Mapping[str, str] | None = None
    priority: int | None = None
    unique_mode: str | None = None


class TaskOwner(Protocol):
    """What a Task needs of the App that registered it."""

    @property
    def client(self) -> Client: ...
    @property
    def settings(self) -> Settings: ...


class TaskCall(Generic[R]):
    """A task with its arguments bound, ready for ``enqueue_many``."""

    __slots__ = ("args", "kwargs", "task")

    def __init__(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.task = task
        self.args = args
        self.kwargs = kwargs


class _Enqueuer(Generic[P, R]):
    """The enqueue API shared by a task and a task with per-call options."""

    _task: Task[P, R]
    _opts: EnqueueOptions

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send one run of the task to its queue; returns a handle to await."""
        task = self._task
        client = task.client
        if client.hooks.has("enqueue"):
            return await self._enqueue_hooked(args, kwargs)
        # _send, without its second await in the usual case.
        opts = self._opts
        plan = task._plan(opts)
        queue, message = task._build(plan, args, kwargs, opts)
        if client.eager or plan.unique_mode is not None:
            return await self._send_special(plan, queue, message, args, kwargs, opts)
        task_id = await client.broker.enqueue(queue, message)
        return AsyncResult(client, task_id, queue, task.result_decoder)

    async def _send(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opts: EnqueueOptions,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncResult[R]:
        """Build and send one message: inline in eager mode, through the keyed
        script for a debounced or replaced unique task, else enqueued.
        ``headers``: the trace context the ``enqueue`` middleware left (None: the options')."""
        task = self._task
        plan = task._plan(opts)
        queue, message = task._build(plan, args, kwargs, opts, headers=headers)
        if task.client.eager or plan.unique_mode is not None:
            return await self._send_special(plan, queue, message, args, kwargs, opts, headers)
        task_id = await task.client.broker.enqueue(queue, message)
        return AsyncResult(task.client, task_id, queue, task.result_decoder)

    async def _send_special(
        self,
        plan: _Plan,
        queue: str,
        message: OutgoingMessage,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opts: EnqueueOptions,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncResult[R]:
        """A built message run inline (eager mode) or sent through the keyed
        script (a debounced or replaced unique task)."""
        task = self._task
        if task.client.eager:
            return await run_eagerly(task, queue, message)
        assert plan.unique_mode is not None
        task_id = await enqueue_keyed(
            task.client.broker,
            lambda fixed: task._build(plan, args, kwargs, opts, task_id=fixed, headers=headers),
            plan.unique_mode,
            plan.unique_for,
        )
        return AsyncResult(task.client, task_id, queue, task.result_decoder)

    async def _enqueue_hooked(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncResult[R]:
        """``enqueue`` inside the App's ``enqueue`` middleware."""
        task = self._task
        job = task.hook_job(self._opts, args, kwargs)

        async def send() -> AsyncResult[R]:
            result = await self._send(args, kwargs, self._opts, job.headers)
            job.task_id = result.id
            return result

        return await task.client.hooks.around("enqueue", job, send)

    async def enqueue_many(
        self, calls: Iterable[tuple[Any, ...] | TaskCall[R]]
    ) -> list[AsyncResult[R]]:
        """Enqueue many runs in one round trip per 1,000 messages.

        Each item is a tuple of positional arguments or a ``task.call(...)``.
        """
        task = self._task
        hooks = task.client.hooks
        items = calls if isinstance(calls, list | tuple) else list(calls)
        if not hooks.has("enqueue") and not task.client.eager:
            # One queue (the options'), every message checked before any is sent.
            if self._opts.task_id is not None and len(items) > 1:
                raise EnqueueError("a fixed task_id can't be used for more than one message")
            plan = task._plan(self._opts)
            if plan.unique_mode is not None:
                raise EnqueueError(
                    "enqueue_many can't debounce or replace (unique_mode); call enqueue() for each"
                )
            messages = task.build_messages(items, self._opts)
            sent = await task.client.broker.enqueue_many(plan.queue, messages)
            client, queue, decoder = task.client, plan.queue, task.result_decoder
            return [AsyncResult(client, task_id, queue, decoder) for task_id in sent]
        by_queue: dict[str, list[OutgoingMessage]] = {}
        order: list[tuple[str, int]] = []
        for item in items:
            args, kwargs = task.call_of(item)
            if hooks.has("enqueue"):
                queue, message = await self._build_hooked(args, kwargs)
            else:
                queue, message = task.build_message(args, kwargs, self._opts)
            batch = by_queue.setdefault(queue, [])
            order.append((queue, len(batch)))
            batch.append(message)
        if self._opts.task_id is not None and len(order) > 1:
            raise EnqueueError("a fixed task_id can't be used for more than one message")
        if task._plan(self._opts).unique_mode is not None:
            raise EnqueueError(
                "enqueue_many can't debounce or replace (unique_mode); call enqueue() for each"
            )
        if task.client.eager:
            return [await run_eagerly(task, queue, by_queue[queue][i]) for queue, i in order]
        broker = task.client.broker
        ids = {queue: await broker.enqueue_many(queue, msgs) for queue, msgs in by_queue.items()}
        decoder = task.result_decoder
        return [AsyncResult(task.client, ids[queue][i], queue, decoder) for queue, i in order]

    async def _build_hooked(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[str, OutgoingMessage]:
        """One message of ``enqueue_many`` built inside the ``enqueue`` middleware
        (the batch's round trip follows, for every message at once)."""
        task = self._task
        job = task.hook_job(self._opts, args, kwargs)

        async def build() -> tuple[str, OutgoingMessage]:
            opts = self._opts
            built = task._build(task._plan(opts), args, kwargs, opts, headers=job.headers)
            job.task_id = built[1].task_id
            return built

        return await task.client.hooks.around("enqueue", job, build)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> SyncResult[R]:
        """Enqueue from synchronous code (no event loop needed); a blocking handle.

        ``add.delay(1, 2).get(timeout=5)``. In ``async def`` code use
        ``await enqueue(...)``: this blocks the calling thread until Redis
        acknowledges. See :mod:`aqueue.sync`.
        """
        from .sync import SyncResult, send

        task = self._task
        if task.client.hooks.has("enqueue"):
            return self._delay_hooked(args, kwargs)
        # Checked and encoded here, so a bad argument raises in the caller's thread.
        opts = self._opts
        queue, message = task.build_message(args, kwargs, opts)
        if task.client.eager:
            eager: SyncResult[R] = run_eagerly_sync(task, queue, message)
            return eager
        plan = task._plan(opts)
        if plan.unique_mode is not None:
            runner = task.client.sync()
            mode = plan.unique_mode

            async def keyed() -> str:  # on the runner's loop, with its broker
                return await enqueue_keyed(
                    runner.client.broker,
                    lambda fixed: task.build_message(args, kwargs, opts, task_id=fixed),
                    mode,
                    plan.unique_for,
                )

            task_id = runner.call(keyed())
            return SyncResult(runner, task_id, queue, task.result_decoder)
        result: SyncResult[R] = send(task.client, queue, message, task.result_decoder)
        return result

    def _delay_hooked(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SyncResult[R]:
        """``delay`` inside the App's ``enqueue`` middleware, on the private loop (whose
        task sees the caller's context variables); errors still raise here."""
        from .sync import SyncResult

        task = self._task
        runner = task.client.sync()
        job = task.hook_job(self._opts, args, kwargs)

        async def hooked() -> tuple[str, str]:
            async def sent() -> tuple[str, str]:
                opts = self._opts
                queue, message = task._build(
                    task._plan(opts), args, kwargs, opts, headers=job.headers
                )
                job.task_id = message.task_id
                return queue, await runner.client.broker.enqueue(queue, message)

            return await task.client.hooks.around("enqueue", job, sent)

        queue, task_id = runner.call(hooked())
        return SyncResult(runner, task_id, queue, task.result_decoder)

    def call(self, *args: P.args, **kwargs: P.kwargs) -> TaskCall[R]:
        """Bind arguments now, enqueue later (``enqueue_many([t.call(1), ...])``)."""
        self._task.spec.check(args, kwargs)
        return TaskCall(self._task, args, kwargs)

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """A signature: this call as a workflow step (``chain``, ``group``, ``chord``).

        In a chain, a step after the first gets its parent's value as its first
        argument before these; see docs/workflows.md for how that is typed.
        """
        from .canvas import Signature

        return Signature(self._task, args, kwargs, self._opts)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """An immutable signature: in a chain it ignores its parent's value."""
        from .canvas import Signature

        return Signature(self._task, args, kwargs, self._opts, immutable=True)


class BoundTask(_Enqueuer[P, R]):
    """A task with per-call options; made by :meth:`Task.options`."""

    def __init__(self, task: Task[P, R], opts: EnqueueOptions) -> None:
        self._task = task
        self._opts = opts

    def options(self, **options: Any) -> BoundTask[P, R]:
        return BoundTask(self._task, _merge(self._opts, options))


class Task(_Enqueuer[P, R]):
    """A registered task. Call it to run it here; ``enqueue`` it to run it on a worker."""

    def __init__(self, app: TaskOwner, fn: Callable[..., Any], config: TaskConfig) -> None:
        self.app = app
        #: The Client of the App that registered this task (one for the App's life).
        self.client: Client = app.client
        self.fn = fn
        self.config = config
        self.spec = ArgSpec(fn)
        check_priority(config.priority, f"task {config.name}")
        check_mode(config.unique_mode)
        #: Deployment-wide rate and concurrency limits (None: none).
        self.limits = FlowLimits.of(
            config.name, self.spec.call_signature, config.rate_limit, config.concurrency
        )
        self.is_async = inspect.iscoroutinefunction(fn)
        #: An ``async def`` or a ``def`` that yields: its chunks stream to readers,
        #: its value is the list of them (a ``def`` generator runs in a thread).
        self.is_stream = inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn)
        if config.executor not in (None, "thread", "process"):
            raise ConfigError(
                f"executor must be 'process', 'thread' or None, got {config.executor!r}"
            )
        if config.executor == "process" and (
            self.is_async or inspect.isgeneratorfunction(fn) or self.spec.context_param
        ):
            raise ConfigError(
                f"{config.name}: executor='process' is for plain def functions without a "
                "Context parameter (an async def already runs beside others on the event loop)"
            )
        if config.executor == "process" and "<locals>" in fn.__qualname__:
            raise ConfigError(
                f"{config.name}: executor='process' needs a function defined at the top level "
                "of a module: a task process imports it by name"
            )
        self._task = self
        self._opts = EnqueueOptions()
        self._result_decoder: msgspec.msgpack.Decoder[Any] | None = None
        self._plans: dict[int, tuple[EnqueueOptions, _Plan]] = {}
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"<aqueue.Task {self.name!r} queue={self.config.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function directly in this process (no queue)."""
        return self.fn(*args, **kwargs)

    def options(self, **options: Any) -> BoundTask[P, R]:
        """Per-call options: ``task_id``, ``queue``, ``timeout``, ``retries``,
        ``delay``, ``eta``, ``expires``, ``shadow``, ``unique_key``, ``unique_for``,
        ``priority``, ``unique_mode``."""
        return BoundTask(self, _merge(self._opts, options))

    def merge_options(self, opts: EnqueueOptions, options: Mapping[str, Any]) -> EnqueueOptions:
        """``opts`` with ``options`` applied, checked (``Signature.options``)."""
        return _merge(opts, options)

    def hook_job(
        self, opts: EnqueueOptions, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> JobInfo:
        """What the ``enqueue`` middleware sees of one call (headers from ``trace``)."""
        return JobInfo(
            task_id=opts.task_id or "",
            name=self.name,
            queue=opts.queue or self.config.queue,
            attempt=0,
            headers=dict(opts.trace or {}),
            args=args,
            kwargs=dict(kwargs),
        )

    def result_decoder(self) -> msgspec.msgpack.Decoder[Any]:
        if self._result_decoder is None:
            rtype = self.spec.return_type()
            if rtype is type(None):
                rtype = Any
            if self.is_stream:  # AsyncIterator[T] / Iterator[T] -> list[T]
                item = (typing.get_args(rtype) or (Any,))[0]
                rtype = list[item]  # type: ignore[valid-type]
            self._result_decoder = msgspec.msgpack.Decoder(rtype)
        return self._result_decoder

    def _plan(self, opts: EnqueueOptions) -> _Plan:
        """What does not change from one message to the next for these options."""
        cached = self._plans.get(id(opts))
        if cached is not None and cached[0] is opts:
            return cached[1]
        cfg = self.config
        if opts.eta is not None and opts.eta.tzinfo is None:
            raise EnqueueError("eta must be a timezone-aware datetime")
        if isinstance(opts.expires, datetime) and opts.expires.tzinfo is None:
            raise EnqueueError("expires must be a timezone-aware datetime")
        unique_mode = check_mode(opts.unique_mode or cfg.unique_mode)
        if unique_mode is not None and opts.task_id is not None:
            raise EnqueueError("unique_mode chooses the task id; it can't be used with task_id")
        task_id = opts.task_id
        if task_id is not None and (not task_id or len(task_id) > _MAX_TASK_ID or "\n" in task_id):
            raise EnqueueError("task_id must be 1-200 characters without newlines")
        plan = _Plan(
            queue=opts.queue or cfg.queue,
            task_id=task_id,
            timeout=opts.timeout if opts.timeout is not None else cfg.timeout,
            max_retries=opts.retries,
            shadow=opts.shadow,
            trace=dict(opts.trace) if opts.trace else None,
            timed=opts.delay is not None
            or opts.eta is not None
            or opts.expires is not None
            or cfg.expires is not None,
            unique=opts.unique_key is not None or cfg.unique or unique_mode is not None,
            unique_for=opts.unique_for if opts.unique_for is not None else cfg.unique_for,
            priority=opts.priority if opts.priority is not None else cfg.priority,
            unique_mode=unique_mode,
        )
        if len(self._plans) > 64:
            self._plans.clear()
        self._plans[id(opts)] = (opts, plan)
        return plan

    def build_message(
        self,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        opts: EnqueueOptions,
        *,
        task_id: str | None = None,
        then: ChainLink | None = None,
        takes_parent: bool = False,
        member: ChordMember | None = None,
    ) -> tuple[str, OutgoingMessage]:
        """Check, encode and (optionally) sign one message. Hot path: keep it lean.

        Workflows: ``task_id`` fixes the id, ``then`` is the chain step that
        follows, ``takes_parent`` says the parent's value comes first (checked
        against the signature with a stand-in, then added by the worker),
        ``member`` names the chord that counts this task.
        """
        return self._build(
            self._plan(opts), args, kwargs, opts, task_id, then, takes_parent, member
        )

    def _build(
        self,
        plan: _Plan,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        opts: EnqueueOptions,
        task_id: str | None = None,
        then: ChainLink | None = None,
        takes_parent: bool = False,
        member: ChordMember | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[str, OutgoingMessage]:
        """:meth:`build_message` with the options' plan already in hand; ``headers``
        (the ``enqueue`` middleware's) stand for the options' trace context, so a
        hooked call needs no options of its own, nor their plan."""
        spec = self.spec
        plain = not takes_parent and spec.plain_call(args, kwargs)
        if not plain:
            try:
                spec.check((None, *args) if takes_parent else args, kwargs)
            except TypeError as exc:
                raise self._bad_call(exc) from None
        try:
            encoded_args = _encode(args)
            encoded_kwargs = _encode(kwargs) if kwargs else _EMPTY_MAP
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise self._unencodable(exc) from exc
        config = self.config
        name = config.name
        if not plain and config.check_arguments and not takes_parent:
            # A step that takes its parent's value is checked by the worker, once
            # that value is known.
            spec.check_types(name, args, kwargs, encoded_args, encoded_kwargs)
        client = self.client
        now = client.clock()
        fixed_id = task_id or plan.task_id
        task_id = fixed_id or os.urandom(16).hex()
        delay = 0.0
        expires: float | None = None
        if plan.timed:
            delay, expires = self._timing(opts, now)
        unique_key = None
        if plan.unique:
            unique_key = opts.unique_key
            if unique_key is None and plan.unique_mode is not None:
                unique_key = name  # one waiting run per task
            elif unique_key is None:
                digest = hashlib.sha256(encoded_args + b"|" + encoded_kwargs).hexdigest()[:32]
                unique_key = f"{name}:{digest}"
        payload = encode_envelope(
            Envelope(
                WIRE_VERSION,
                task_id,
                name,
                msgspec.Raw(encoded_args),
                msgspec.Raw(encoded_kwargs) if kwargs else _NO_KWARGS_RAW,
                plan.queue,
                now,
                0,
                plan.timeout,
                plan.max_retries,
                expires,
                plan.shadow,
                unique_key,
                plan.trace if headers is None else (dict(headers) or None),
                then,
                member,
            )
        )
        codec = client.codec
        if codec.signing_key is not None:
            payload = codec.seal(payload)
        if len(payload) > client.settings.max_payload_bytes:
            raise self._too_large(len(payload))
        if unique_key is None and not delay and self.limits is None:
            # The usual message: nothing to work out for the fields it leaves at default.
            message = OutgoingMessage(
                task_id, name, payload, fixed_id is not None, 0, "", 0, plan.priority
            )
            return plan.queue, message
        message = OutgoingMessage(
            task_id,
            name,
            payload,
            fixed_id is not None,
            int(delay * 1000) if delay > 0 else 0,
            unique_key or "",
            # The lock covers the wait for the ETA too, then unique_for of queue/run time;
            # a debounced task also waits its window (unique_for) and then runs.
            int((max(plan.unique_for, 1.0) + delay + (3600 if plan.unique_mode else 0)) * 1000)
            if unique_key
            else 0,
            plan.priority,
            self.limits.pack(args, kwargs) if self.limits is not None else b"",
        )
        return plan.queue, message

    def call_of(
        self, item: tuple[Any, ...] | TaskCall[Any]
    ) -> tuple[tuple[Any, ...], Mapping[str, Any]]:
        """The arguments of one ``enqueue_many`` item: a tuple of positional
        arguments or a ``task.call(...)``."""
        if isinstance(item, tuple):
            return item, _NO_KWARGS
        if isinstance(item, TaskCall):
            return item.args, item.kwargs
        raise EnqueueError(
            f"enqueue_many takes tuples of arguments or {self.name}.call(...), "
            f"got {type(item).__name__}"
        )

    def build_messages(
        self, calls: Sequence[tuple[Any, ...] | TaskCall[Any]], opts: EnqueueOptions
    ) -> list[OutgoingMessage]:
        """``build_message`` for a batch (``enqueue_many``'s items): every call
        checked and encoded, the first bad one raising before anything is sent.

        Calls with plain options (no delay, expiry, unique key, fixed id or
        limits, the common case) share what does not change from one message
        to the next: the options, the clock reading, one draw of random ids.
        No object per call survives but the message (which the garbage
        collector does not track): a big batch must not set off a full collection.
        """
        plan = self._plan(opts)
        call_of = self.call_of
        if plan.timed or plan.unique or plan.task_id is not None or self.limits is not None:
            return [self.build_message(*call_of(item), opts)[1] for item in calls]
        spec, name = self.spec, self.config.name
        check_types = spec.check_types if self.config.check_arguments else None
        plain_call = spec.plain_call
        client = self.client
        seal = client.codec.seal if client.codec.signing_key is not None else None
        limit = client.settings.max_payload_bytes
        now = client.clock()
        queue, timeout, retries, shadow, trace = (
            plan.queue,
            plan.timeout,
            plan.max_retries,
            plan.shadow,
            plan.trace,
        )
        priority = plan.priority
        ids = os.urandom(16 * len(calls)).hex()
        messages: list[OutgoingMessage] = []
        add = messages.append
        for at, item in enumerate(calls):
            if type(item) is tuple:
                args, kwargs = item, _NO_KWARGS
            else:
                args, kwargs = call_of(item)
            plain = plain_call(args, kwargs)
            if not plain:
                try:
                    spec.check(args, kwargs)
                except TypeError as exc:
                    raise self._bad_call(exc) from None
            try:
                encoded_args = _encode(args)
                encoded_kwargs = _encode(kwargs) if kwargs else _EMPTY_MAP
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                raise self._unencodable(exc) from exc
            if not plain and check_types is not None:
                check_types(name, args, kwargs, encoded_args, encoded_kwargs)
            task_id = ids[32 * at : 32 * at + 32]
            payload = encode_envelope(
                Envelope(
                    WIRE_VERSION,
                    task_id,
                    name,
                    msgspec.Raw(encoded_args),
                    msgspec.Raw(encoded_kwargs) if kwargs else _NO_KWARGS_RAW,
                    queue,
                    now,
                    0,
                    timeout,
                    retries,
                    None,
                    shadow,
                    None,
                    trace,
                )
            )
            if seal is not None:
                payload = seal(payload)
            if len(payload) > limit:
                raise self._too_large(len(payload))
            add(OutgoingMessage(task_id, name, payload, False, 0, "", 0, priority))
        return messages

    def _bad_call(self, exc: TypeError) -> EnqueueError:
        return EnqueueError(f"{self.name}{self.spec.call_signature}: {exc}")

    def _unencodable(self, exc: Exception) -> SerializationError:
        return SerializationError(
            f"arguments of {self.name} can't be encoded with msgspec: {exc}. "
            "Pass builtins, msgspec Structs, dataclasses, datetimes, UUIDs or Decimals"
        )

    def _too_large(self, size: int) -> PayloadTooLarge:
        limit = self.client.settings.max_payload_bytes
        return PayloadTooLarge(
            f"{self.name} message is {size:,} bytes, over max_payload_bytes={limit:,}. Store "
            "large data elsewhere (object storage, a database) and pass a reference"
        )

    def _timing(self, opts: EnqueueOptions, now: float) -> tuple[float, float | None]:
        """(delay in seconds, absolute expiry or None) for a delayed or expiring message."""
        delay = opts.delay or 0.0
        if opts.eta is not None:
            delay = max(delay, opts.eta.timestamp() - now)
        expires: float | None = None
        if isinstance(opts.expires, datetime):
            expires = opts.expires.timestamp()
        elif opts.expires is not None:
            expires = now + opts.expires
        elif self.config.expires is not None:
            expires = now + delay + self.config.expires
        return delay, expires


_OPTION_NAMES = {f for f in EnqueueOptions.__dataclass_fields__}


def _merge(opts: EnqueueOptions, options: Mapping[str, Any]) -> EnqueueOptions:
    for key in options:
        if key not in _OPTION_NAMES:
            raise ConfigError(f"unknown enqueue option {key!r}{did_you_mean(key, _OPTION_NAMES)}")
    values = dict(options)
    for name in ("timeout", "delay", "unique_for"):
        if name in values:
            values[name] = _seconds(values[name], name)
    if "expires" in values and not isinstance(values["expires"], datetime):
        values["expires"] = _seconds(values["expires"], "expires")
    if values.get("priority") is not None:
        check_priority(values["priority"], "options()")
    if "unique_mode" in values:
        check_mode(values["unique_mode"])
    retries = values.get("retries")
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise ConfigError("retries must be a non-negative integer")
    return replace(opts, **values)


TaskFunction = Callable[P, Awaitable[R]] | Callable[P, R]
