"""Registered tasks: the typed enqueue side of a task function."""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import msgspec

from .broker import OutgoingMessage
from .context import Context
from .envelope import WIRE_VERSION, Envelope, encode_envelope, sign
from .errors import ConfigError, EnqueueError, PayloadTooLarge, SerializationError

if TYPE_CHECKING:
    from .app import App
    from .result import AsyncResult
    from .sync import SyncResult

__all__ = ["EnqueueOptions", "Task", "TaskCall", "TaskConfig"]

P = ParamSpec("P")
R = TypeVar("R")

_MAX_TASK_ID = 200
_encode = msgspec.msgpack.Encoder().encode
_EMPTY_MAP = _encode({})


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


class ArgSpec:
    """How a task's arguments are checked on the producer and typed on the worker."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.signature = inspect.signature(fn)
        self._hints: dict[str, Any] | None = None
        self._struct: type[msgspec.Struct] | None = None
        self.context_param: str | None = None
        params = []
        for p in self.signature.parameters.values():
            if (
                p.annotation is Context
                or p.annotation == "Context"
                or (isinstance(p.annotation, str) and p.annotation.endswith(".Context"))
            ):
                self.context_param = p.name
            else:
                params.append(p)
        self.call_signature = self.signature.replace(parameters=params)
        self.has_variadic = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
        # Fast path: a call with positional arguments only, to a function whose
        # parameters are all positional, is valid when the count fits.
        self._positional = all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
        )
        self._max_args = len(params)
        self._min_args = sum(1 for p in params if p.default is p.empty)
        self._plain_types: list[type] | None = None

    def hints(self) -> dict[str, Any]:
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.fn)
            except Exception:  # unresolvable forward references: fall back to no typing
                self._hints = {}
        return self._hints

    def return_type(self) -> Any:
        return self.hints().get("return", Any)

    def check(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError when the call does not fit the signature."""
        if not kwargs and self._positional and self._min_args <= len(args) <= self._max_args:
            return
        self.call_signature.bind(*args, **kwargs)

    def _plain(self) -> list[type] | None:
        """The parameters' types when every one is a builtin scalar (or untyped)."""
        if self._plain_types is None:
            hints = self.hints()
            types: list[type] = []
            for p in self.call_signature.parameters.values():
                tp = hints.get(p.name, object)
                if tp is Any:
                    tp = object
                if tp not in (int, str, float, bool, bytes, object):
                    self._plain_types = []
                    return None
                types.append(tp)
            self._plain_types = types
        return self._plain_types or None

    def _args_struct(self) -> type[msgspec.Struct]:
        if self._struct is None:
            hints = self.hints()
            fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
            for p in self.call_signature.parameters.values():
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                tp = hints.get(p.name, Any)
                if p.default is p.empty:
                    fields.append((p.name, tp))
                else:
                    fields.append((p.name, tp, p.default))
            self._struct = msgspec.defstruct("Arguments", fields, kw_only=True)
        return self._struct

    def bind(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Turn decoded wire arguments into typed call arguments.

        Raises TypeError or msgspec.ValidationError when they don't fit.
        """
        if not kwargs and self._positional and self._min_args <= len(args) <= self._max_args:
            plain = self._plain() if args else None
            if not args or (
                plain is not None
                and all(tp is object or type(v) is tp for v, tp in zip(args, plain, strict=False))
            ):
                return args, {}
        bound = self.call_signature.bind(*args, **kwargs)
        if self.has_variadic:
            # Variadic signatures are passed through as decoded.
            return list(bound.args), dict(bound.kwargs)
        typed = msgspec.convert(bound.arguments, self._args_struct(), strict=False)
        call_kwargs = {name: getattr(typed, name) for name in typed.__struct_fields__}
        positional = [
            call_kwargs.pop(p.name)
            for p in self.call_signature.parameters.values()
            if p.kind is p.POSITIONAL_ONLY
        ]
        return positional, call_kwargs


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
        app = task.app
        queue, message = task._message(args, kwargs, self._opts)
        task_id = await app._broker_for_enqueue().enqueue(queue, message)
        return app._result(task_id, queue, task)

    async def enqueue_many(
        self, calls: Iterable[tuple[Any, ...] | TaskCall[R]]
    ) -> list[AsyncResult[R]]:
        """Enqueue many runs in one round trip per 1,000 messages.

        Each item is a tuple of positional arguments or a ``task.call(...)``.
        """
        task = self._task
        app = task.app
        by_queue: dict[str, list[OutgoingMessage]] = {}
        order: list[tuple[str, int]] = []
        for item in calls:
            if isinstance(item, TaskCall):
                args, kwargs = item.args, item.kwargs
            elif isinstance(item, tuple):
                args, kwargs = item, {}
            else:
                raise EnqueueError(
                    f"enqueue_many takes tuples of arguments or {task.name}.call(...), "
                    f"got {type(item).__name__}"
                )
            queue, message = task._message(args, kwargs, self._opts)
            batch = by_queue.setdefault(queue, [])
            order.append((queue, len(batch)))
            batch.append(message)
        if self._opts.task_id is not None and len(order) > 1:
            raise EnqueueError("a fixed task_id can't be used for more than one message")
        broker = app._broker_for_enqueue()
        ids = {queue: await broker.enqueue_many(queue, msgs) for queue, msgs in by_queue.items()}
        return [app._result(ids[queue][i], queue, task) for queue, i in order]

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> SyncResult[R]:
        """Enqueue from synchronous code (no event loop needed); a blocking handle.

        ``add.delay(1, 2).get(timeout=5)``. In ``async def`` code use
        ``await enqueue(...)``: this blocks the calling thread until Redis
        acknowledges. See :mod:`aqueue.sync`.
        """
        task = self._task
        return task.app._sync().delay(task, self._opts, args, kwargs)

    def call(self, *args: P.args, **kwargs: P.kwargs) -> TaskCall[R]:
        """Bind arguments now, enqueue later (``enqueue_many([t.call(1), ...])``)."""
        self._task.spec.check(args, kwargs)
        return TaskCall(self._task, args, kwargs)


class BoundTask(_Enqueuer[P, R]):
    """A task with per-call options; made by :meth:`Task.options`."""

    def __init__(self, task: Task[P, R], opts: EnqueueOptions) -> None:
        self._task = task
        self._opts = opts

    def options(self, **options: Any) -> BoundTask[P, R]:
        return BoundTask(self._task, _merge(self._opts, options))


class Task(_Enqueuer[P, R]):
    """A registered task. Call it to run it here; ``enqueue`` it to run it on a worker."""

    def __init__(self, app: App, fn: Callable[..., Any], config: TaskConfig) -> None:
        self.app = app
        self.fn = fn
        self.config = config
        self.spec = ArgSpec(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
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
        ``delay``, ``eta``, ``expires``, ``shadow``, ``unique_key``, ``unique_for``."""
        return BoundTask(self, _merge(self._opts, options))

    def result_decoder(self) -> msgspec.msgpack.Decoder[Any]:
        if self._result_decoder is None:
            rtype = self.spec.return_type()
            if rtype is type(None):
                rtype = Any
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
            unique=opts.unique_key is not None or cfg.unique,
            unique_for=opts.unique_for if opts.unique_for is not None else cfg.unique_for,
        )
        if len(self._plans) > 64:
            self._plans.clear()
        self._plans[id(opts)] = (opts, plan)
        return plan

    def _message(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], opts: EnqueueOptions
    ) -> tuple[str, OutgoingMessage]:
        """Check, encode and (optionally) sign one message. Hot path: keep it lean."""
        plan = self._plan(opts)
        try:
            self.spec.check(args, kwargs)
        except TypeError as exc:
            raise EnqueueError(f"{self.name}{self.spec.call_signature}: {exc}") from None
        try:
            encoded_args = _encode(args)
            encoded_kwargs = _encode(kwargs) if kwargs else _EMPTY_MAP
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"arguments of {self.name} can't be encoded with msgspec: {exc}. "
                "Pass builtins, msgspec Structs, dataclasses, datetimes, UUIDs or Decimals"
            ) from exc
        app = self.app
        now = app._clock()
        task_id = plan.task_id or os.urandom(16).hex()
        delay = 0.0
        expires: float | None = None
        if plan.timed:
            delay, expires = self._timing(opts, now)
        unique_key = None
        if plan.unique:
            unique_key = opts.unique_key
            if unique_key is None:
                digest = hashlib.sha256(encoded_args + b"|" + encoded_kwargs).hexdigest()[:32]
                unique_key = f"{self.name}:{digest}"
        payload = encode_envelope(
            Envelope(
                WIRE_VERSION,
                task_id,
                self.config.name,
                msgspec.Raw(encoded_args),
                msgspec.Raw(encoded_kwargs),
                plan.queue,
                now,
                0,
                plan.timeout,
                plan.max_retries,
                expires,
                plan.shadow,
                unique_key,
                plan.trace,
            )
        )
        if app._signing_key is not None:
            payload = sign(payload, app._signing_key)
        if len(payload) > app.settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"{self.name} message is {len(payload):,} bytes, over max_payload_bytes="
                f"{app.settings.max_payload_bytes:,}. Store large data elsewhere (object "
                "storage, a database) and pass a reference"
            )
        message = OutgoingMessage(
            task_id,
            self.config.name,
            payload,
            plan.task_id is not None,
            int(delay * 1000) if delay > 0 else 0,
            unique_key or "",
            # The lock covers the wait for the ETA too, then unique_for of queue/run time.
            int((max(plan.unique_for, 1.0) + delay) * 1000) if unique_key else 0,
        )
        return plan.queue, message

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
    import difflib

    for key in options:
        if key not in _OPTION_NAMES:
            close = difflib.get_close_matches(key, _OPTION_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown enqueue option {key!r}{hint}")
    values = dict(options)
    for name in ("timeout", "delay", "unique_for"):
        if name in values:
            values[name] = _seconds(values[name], name)
    if "expires" in values and not isinstance(values["expires"], datetime):
        values["expires"] = _seconds(values["expires"], "expires")
    retries = values.get("retries")
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise ConfigError("retries must be a non-negative integer")
    return replace(opts, **values)


TaskFunction = Callable[P, Awaitable[R]] | Callable[P, R]
