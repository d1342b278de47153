"""Middleware: code of yours around enqueue and execution, on retries, outcomes
and worker start/stop.

Subclass :class:`Middleware`, override the hooks you need and register an
instance with ``app.middleware(...)``. Hooks that are not overridden cost
nothing. ``enqueue`` and ``execute`` wrap the call: do something, ``await
call_next()``, do something after. The other hooks are told what happened.

Hooks observe, they never decide a task's fate: an exception raised by a hook
is logged (logger ``aqueue.hooks``) and the task goes on as if the hook were
not there; a hook that forgets ``call_next()`` is logged and the call is made
anyway; a task's own error reaches its outcome whatever a hook does with it.

Headers travel with the message (the envelope's ``trace`` field): set them in
``enqueue`` (``job.headers["tenant"] = ...``), read them in ``execute`` on the
worker. Trace context (W3C ``traceparent``) rides there too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec

from .errors import ConfigError
from .protocol import Codec, Envelope, ErrorInfo, OutgoingMessage
from .status import TaskStatus

__all__ = ["CallNext", "Hooks", "JobInfo", "Middleware", "WorkerInfo", "hooked", "hooked_message"]

logger = logging.getLogger("aqueue.hooks")

#: What ``enqueue`` and ``execute`` hooks await to go on with the call.
CallNext = Callable[[], Awaitable[None]]

T = TypeVar("T")


@dataclass(slots=True)
class JobInfo:
    """One task call as hooks see it.

    On the producer side ``task_id`` is known once ``call_next()`` has built
    the message, and ``attempt`` is 0. On the worker, after ``call_next()``
    (and in ``retry`` / ``outcome``) ``status``, ``error``, ``exception``,
    ``duration`` and ``retry_delay`` say how the run ended.
    """

    task_id: str
    name: str
    queue: str
    attempt: int
    headers: dict[str, str]
    """Strings that travel with the message; change them in ``enqueue``."""
    args: tuple[Any, ...] | list[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    status: TaskStatus | None = None
    error: ErrorInfo | None = None
    """The recorded error (type name, message, traceback text)."""
    exception: BaseException | None = None
    """The exception the task raised (worker side; for error trackers)."""
    duration: float | None = None
    """Seconds the run took."""
    retry_delay: float | None = None
    """Seconds until the retry, when ``status`` is RETRYING."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The worker that starts or stops."""

    name: str
    queues: tuple[str, ...]
    concurrency: int


class Middleware:
    """Base class of hooks; every method does nothing unless overridden."""

    async def enqueue(self, job: JobInfo, call_next: CallNext) -> None:
        """Around each message a producer sends (``enqueue``, ``enqueue_many``)."""
        await call_next()

    async def execute(self, job: JobInfo, call_next: CallNext) -> None:
        """Around each run on a worker, in the task's own asyncio task (context
        variables set here are seen by the task)."""
        await call_next()

    async def retry(self, job: JobInfo) -> None:
        """A run failed and the task will run again after ``job.retry_delay``."""

    async def outcome(self, job: JobInfo) -> None:
        """A task ended for good: succeeded, failed, expired, aborted or dead."""

    async def worker_start(self, worker: WorkerInfo) -> None:
        """A worker is ready, before it reads its first message."""

    async def worker_stop(self, worker: WorkerInfo) -> None:
        """A worker has handed back its work and is about to return."""


_HOOKS = ("enqueue", "execute", "retry", "outcome", "worker_start", "worker_stop")


class Hooks:
    """The middleware of one App, by hook, in the order registered (the first
    registered is the outermost around a call)."""

    def __init__(self) -> None:
        self.middleware: list[Middleware] = []
        self._by_hook: dict[str, list[Any]] = {name: [] for name in _HOOKS}
        #: Hooks told by :meth:`notify_soon` and not done yet.
        self._told: set[asyncio.Task[None]] = set()

    def add(self, middleware: Middleware) -> None:
        if not isinstance(middleware, Middleware):
            raise ConfigError(
                f"app.middleware() takes an aqueue.Middleware instance, got {middleware!r}"
            )
        self.middleware.append(middleware)
        for name in _HOOKS:
            if getattr(type(middleware), name) is not getattr(Middleware, name):
                self._by_hook[name].append(getattr(middleware, name))

    @property
    def active(self) -> bool:
        """Whether any middleware is registered (none: no hook costs anything)."""
        return bool(self.middleware)

    def has(self, hook: str) -> bool:
        return bool(self._by_hook[hook])

    async def around(self, hook: str, job: JobInfo, inner: Callable[[], Awaitable[T]]) -> T:
        """``inner()`` wrapped by every ``hook`` (``enqueue`` or ``execute``)."""
        results: list[T] = []

        async def innermost() -> None:
            results.append(await inner())

        call: CallNext = innermost
        for method in reversed(self._by_hook[hook]):
            call = _guarded(hook, method, job, call)
        await call()
        return results[0]

    async def notify(self, hook: str, payload: Any) -> None:
        """Tell every ``hook`` (retry, outcome, worker_start, worker_stop).

        ``worker_stop`` is told after every hook :meth:`notify_soon` began."""
        if hook == "worker_stop" and self._told:
            await asyncio.gather(*self._told, return_exceptions=True)
        for method in self._by_hook[hook]:
            try:
                await method(payload)
            except Exception:
                logger.exception("middleware %s hook %s raised; ignored", _owner(method), hook)

    def notify_soon(self, hook: str, payload: Any) -> None:
        """:meth:`notify` from code that can't wait: in an asyncio task of its own,
        kept here until it ends."""
        if not self._by_hook[hook]:
            return
        told = asyncio.get_running_loop().create_task(self.notify(hook, payload))
        self._told.add(told)
        told.add_done_callback(self._told.discard)


async def hooked_message(hooks: Hooks, queue: str, envelope: Envelope, codec: Codec) -> bytes:
    """``envelope`` packed inside the ``enqueue`` hooks, carrying the headers they
    leave on the job: a message of a workflow, whose task id is known before."""
    job = JobInfo(
        task_id=envelope.id,
        name=envelope.task,
        queue=queue,
        attempt=0,
        headers=dict(envelope.trace or {}),
        args=_plain(envelope.args, []),
        kwargs=_plain(envelope.kwargs, {}),
    )

    async def pack() -> bytes:
        headers = dict(job.headers) or None
        if headers == envelope.trace:
            return codec.pack(envelope)
        return codec.pack(msgspec.structs.replace(envelope, trace=headers))

    return await hooks.around("enqueue", job, pack)


class _HasHooks(Protocol):
    hooks: Hooks
    codec: Codec


async def hooked(client: _HasHooks, queue: str, message: OutgoingMessage) -> OutgoingMessage:
    """A workflow's message (built on the client side) packed again inside the App's
    ``enqueue`` middleware, with the headers it leaves (as is without such middleware)."""
    if not client.hooks.has("enqueue"):
        return message
    envelope = client.codec.unpack(message.payload)
    payload = await hooked_message(client.hooks, queue, envelope, client.codec)
    return msgspec.structs.replace(message, payload=payload)


def _plain(raw: msgspec.Raw, empty: Any) -> Any:
    """Encoded arguments as plain values, for hooks to look at (``empty``: unreadable)."""
    try:
        return msgspec.msgpack.decode(raw) if raw else empty
    except msgspec.DecodeError:
        return empty


def _guarded(hook: str, method: Any, job: JobInfo, after: CallNext) -> CallNext:
    async def guarded() -> None:
        called = False
        failure: BaseException | None = None

        async def call_next() -> None:
            nonlocal called, failure
            if called:
                return  # a second call would run the task twice
            called = True
            try:
                await after()
            except BaseException as exc:
                failure = exc
                raise

        try:
            await method(job, call_next)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if exc is not failure:
                logger.exception("middleware %s hook %s raised; ignored", _owner(method), hook)
        if not called:
            logger.warning(
                "middleware %s hook %s returned without awaiting call_next(); called it",
                _owner(method),
                hook,
            )
            await call_next()
        elif failure is not None:
            raise failure  # the call's own error, whatever the hook did with it

    return guarded


def _owner(method: Any) -> str:
    owner = getattr(method, "__self__", method)
    return type(owner).__qualname__
