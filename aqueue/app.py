"""The App: configuration, the task registry and the connection to Redis.

A web app holds one App for its whole lifespan; workers import the same App.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from .broker import REDIS_ERRORS, Broker
from .config import DEFAULT_REDIS_URL, Settings, mask_url
from .context import Context
from .envelope import ErrorInfo, encode_error
from .errors import AqueueError, ConfigError, ConnectionFailed, UnknownTask
from .result import AsyncResult, ResultWaiter
from .status import TaskStatus
from .sync import SyncRunner
from .task import Task, TaskConfig

if TYPE_CHECKING:
    from .deadletter import DeadLetter
    from .periodic import PeriodicDecorator

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")

Lifespan = Callable[["App"], contextlib.AbstractAsyncContextManager[dict[str, Any] | None]]


class App:
    """An aqueue application.

    ``App("redis://host:6379/0", **options)`` or ``App(redis=client)``. With no
    URL, ``AQUEUE_REDIS_URL`` is used, else ``redis://localhost:6379/0``.
    Options are the fields of :class:`aqueue.Settings`; unknown ones are
    rejected. ``AQUEUE_*`` environment variables fill in options not given.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        redis: aioredis.Redis | None = None,
        **options: Any,
    ) -> None:
        values = Settings.from_env()
        values.update(options)
        if redis_url is not None:
            values["redis_url"] = redis_url
        values.setdefault("redis_url", os.environ.get("AQUEUE_REDIS_URL", DEFAULT_REDIS_URL))
        self.settings = Settings.from_options(values)
        self._signing_key = (
            self.settings.signing_key.encode() if self.settings.signing_key is not None else None
        )
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._given_client = redis
        self._client: aioredis.Redis | None = redis
        self._broker: Broker | None = None
        self._result_waiter: ResultWaiter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lifespan: Lifespan | None = None
        self._clock = time.time
        self._sync_runner: SyncRunner | None = None
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<aqueue.App {mask_url(self.settings.redis_url)} tasks={len(self.tasks)}>"

    # -- declaring tasks --------------------------------------------------------

    # A first parameter annotated Context is filled in by the worker, so it is
    # not part of the enqueue signature: these overloads come first.
    @overload
    def task(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]], /
    ) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[Concatenate[Context, P], R], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        timeout: float | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: bool = True,
        retry_backoff_max: float = 600.0,
        retry_jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        expires: float | None = None,
        unique: bool = False,
        unique_for: float = 3600.0,
    ) -> _TaskFactory: ...

    def task(  # type: ignore[misc]
        self, fn: Callable[..., Any] | None = None, /, **options: Any
    ) -> Task[Any, Any] | _TaskFactory:
        """Register a function as a task (``@app.task`` or ``@app.task(...)``).

        ``async def`` tasks run on the worker's event loop; plain ``def`` tasks
        run in the worker's bounded thread pool.
        """
        if fn is not None:
            return self._register(fn, options)
        return _TaskFactory(self, options)

    def _register(self, fn: Callable[..., Any], options: dict[str, Any]) -> Task[Any, Any]:
        if not callable(fn):
            raise ConfigError(f"@app.task needs a function, got {fn!r}")
        allowed = set(TaskConfig.__dataclass_fields__)
        for key in options:
            if key not in allowed:
                import difflib

                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown task option {key!r}{hint}")
        name = options.pop("name", None) or f"{fn.__module__}.{fn.__qualname__}"
        queue = options.pop("queue", None) or self.settings.default_queue
        if "{" in queue or "}" in queue or not queue:
            raise ConfigError(f"queue name {queue!r} must be non-empty and without braces")
        if "retry_on" in options:
            retry_on = options["retry_on"]
            options["retry_on"] = (
                tuple(retry_on) if isinstance(retry_on, list | tuple) else (retry_on,)
            )
        config = TaskConfig(name=name, queue=queue, **options)
        if name in self.tasks:
            raise ConfigError(f"a task named {name!r} is already registered")
        task: Task[Any, Any] = Task(self, fn, config)
        self.tasks[name] = task
        return task

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        singleton: bool = False,
        **task_options: Any,
    ) -> PeriodicDecorator:
        """Register a task that is also enqueued on a schedule (see :mod:`aqueue.periodic`).

        ``@app.periodic(cron="0 3 * * MON", tz="Asia/Seoul")`` or
        ``@app.periodic(every=timedelta(minutes=5))``; ``args``/``kwargs`` are what
        each run gets; ``singleton=True`` skips a tick while the previous run is
        still queued or running. Other options (``name``, ``queue``, ``timeout``,
        ...) are those of :meth:`task`.
        """
        from .periodic import make_decorator

        return make_decorator(
            self,
            cron=cron,
            every=every,
            tz=tz,
            args=args,
            kwargs=kwargs,
            singleton=singleton,
            task_options=task_options,
        )

    def lifespan(self, fn: Lifespan) -> Lifespan:
        """Register an async context manager run once per worker process.

        It receives the App and may yield a dict of resources that tasks reach
        through ``ctx.state`` (see :class:`aqueue.Context`). A bare async
        generator function is wrapped with ``contextlib.asynccontextmanager``.
        If it raises before yielding, the worker does not start.
        """
        import inspect

        if inspect.isasyncgenfunction(fn):
            self._lifespan = contextlib.asynccontextmanager(fn)
        else:
            self._lifespan = fn
        return fn

    @property
    def queues(self) -> list[str]:
        """Every queue a registered task uses (the default queue first)."""
        found = [self.settings.default_queue]
        for task in self.tasks.values():
            if task.config.queue not in found:
                found.append(task.config.queue)
        return found

    # -- results -----------------------------------------------------------------

    async def send_task(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Enqueue a registered task by its name (Celery's ``send_task``).

        ``options`` are the per-call options of :meth:`Task.options`. Raises
        :class:`UnknownTask` when no task of that name is registered here.
        """
        task = self.tasks.get(name)
        if task is None:
            import difflib

            close = difflib.get_close_matches(name, list(self.tasks), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownTask(f"no task named {name!r} is registered on this App{hint}")
        enqueuer = task.options(**options) if options else task
        return await enqueuer.enqueue(*args, **dict(kwargs or {}))

    def result(self, task_id: str, queue: str | None = None) -> AsyncResult[Any]:
        """A handle on a task enqueued anywhere, by its id.

        Without ``queue``, the queues of this App's registered tasks are searched
        on first use.
        """
        return AsyncResult(self, task_id, queue)

    def _result(self, task_id: str, queue: str, task: Task[Any, R]) -> AsyncResult[R]:
        return AsyncResult(self, task_id, queue, task)

    async def _find_queue(self, task_id: str) -> str:
        broker = self.broker
        queues = self.queues
        async with broker.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.exists(broker.keys(queue).task(task_id))
            found = await pipe.execute()
        for queue, exists in zip(queues, found, strict=True):
            if exists:
                return queue
        return self.settings.default_queue

    async def _abort(self, queue: str, task_id: str) -> bool:
        error = encode_error(ErrorInfo("TaskAborted", "aborted on request"))
        state = await self.broker.abort(queue, task_id, error)
        return state not in ("",) and not TaskStatus(state).is_final

    # -- dead letters ------------------------------------------------------------

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages (newest first) of ``queue`` or of each of the app's queues."""
        from .deadletter import list_dead

        return await list_dead(self, queue, limit)

    async def replay_dead(
        self, entry_ids: Sequence[str] | None = None, queue: str | None = None
    ) -> list[tuple[str, str]]:
        """Put dead-lettered messages (all when ``entry_ids`` is None) back in their queue.

        Returns ``(queue, entry id)`` of each message replayed.
        """
        from .deadletter import replay_dead

        return await replay_dead(self, entry_ids, queue)

    async def purge_dead(self, queue: str | None = None) -> int:
        """Delete dead-lettered messages of ``queue`` (or of every app queue); returns the count."""
        from .deadletter import purge_dead

        return await purge_dead(self, queue)

    def _waiter(self) -> ResultWaiter:
        broker = self.broker
        if self._result_waiter is None:
            self._result_waiter = ResultWaiter(broker, self.settings.result_poll_interval)
        return self._result_waiter

    # -- connection --------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """The Redis adapter, connected lazily on the running event loop."""
        loop = asyncio.get_running_loop()
        if self._broker is None or (self._given_client is None and self._loop is not loop):
            if self._broker is not None and self._given_client is None:
                # Used from another event loop (a new test, asyncio.run again):
                # the old client can't be awaited there, so start afresh.
                self._result_waiter = None
            self._loop = loop
            if self._given_client is None:
                self._client = aioredis.Redis.from_url(
                    self.settings.redis_url,
                    socket_connect_timeout=self.settings.connect_timeout,
                    # Explicit (older redis-py versions default to none): a Redis that
                    # accepts connections but never answers must not hang
                    # enqueue() for ever. Longer than the workers' 2 s blocking reads.
                    socket_timeout=max(self.settings.connect_timeout, 5.0),
                    socket_keepalive=True,
                    health_check_interval=30,
                    max_connections=200,
                    # A pooled connection that Redis or the network dropped while
                    # idle fails on its next use; without retries that command
                    # fails even though Redis is up. Timeouts are not retried, so
                    # an unresponsive Redis still fails within one socket timeout.
                    retry=Retry(
                        ExponentialBackoff(cap=0.5, base=0.05),
                        2,
                        supported_errors=(redis.exceptions.ConnectionError,),
                    ),
                )
            assert self._client is not None
            self._broker = Broker(self._client, self.settings)
        return self._broker

    def _broker_for_enqueue(self) -> Broker:
        return self.broker

    async def connect(self) -> None:
        """Connect and check that Redis answers; raises ConnectionFailed if not."""
        try:
            await self.broker.client.ping()
        except REDIS_ERRORS as exc:
            raise ConnectionFailed(
                f"Redis at {mask_url(self.settings.redis_url)} did not answer: {exc}. "
                "Is it running? Set AQUEUE_REDIS_URL or pass the URL to App()"
            ) from exc

    async def close(self) -> None:
        """Close the result subscription and (unless injected) the Redis client."""
        if self._result_waiter is not None:
            await self._result_waiter.close()
            self._result_waiter = None
        if self._broker is not None:
            await self._broker.close()
        if self._broker is not None and self._given_client is None:
            with contextlib.suppress(Exception):
                await self._broker.client.aclose()
        if self._given_client is None:
            self._broker = None
            self._client = None

    async def __aenter__(self) -> App:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def run_lifespan(self) -> AsyncIterator[dict[str, Any]]:
        """Run the registered lifespan (if any) and yield its resources."""
        if self._lifespan is None:
            yield {}
            return
        async with contextlib.AsyncExitStack() as stack:
            try:
                state = await stack.enter_async_context(self._lifespan(self))
            except Exception as exc:
                raise AqueueError(
                    f"worker lifespan failed during startup: {type(exc).__name__}: {exc}"
                ) from exc
            yield dict(state or {})

    # -- synchronous callers and frameworks ---------------------------------------

    def _sync(self) -> SyncRunner:
        """The private event-loop thread behind ``task.delay`` (started on first use)."""
        with self._sync_lock:
            runner = self._sync_runner
            if runner is None or runner.pid != os.getpid():  # new, or forked since
                runner = self._sync_runner = SyncRunner(self)
            return runner

    def close_sync(self) -> None:
        """Stop the thread behind ``task.delay`` (a daemon thread: optional)."""
        with self._sync_lock:
            runner, self._sync_runner = self._sync_runner, None
        if runner is not None and runner.pid == os.getpid():
            runner.close()

    def config_from_object(self, source: object, namespace: str | None = None) -> None:
        """Take options from a settings object, module, mapping or import path.

        ``app.config_from_object("django.conf:settings", namespace="AQUEUE")``
        reads ``AQUEUE_REDIS_URL``, ``AQUEUE_PREFIX``, ... Unknown names under
        the namespace are rejected with the closest valid one. Call it before
        the App connects.
        """
        import dataclasses

        from .config_source import options_from_object

        if self._broker is not None or self._sync_runner is not None:
            raise ConfigError("config_from_object() must be called before the App connects")
        values = {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(Settings)}
        values.update(options_from_object(source, namespace))
        self.settings = Settings.from_options(values)
        key = self.settings.signing_key
        self._signing_key = key.encode() if key is not None else None

    def autodiscover_tasks(
        self, packages: list[str] | None = None, related_name: str = "tasks"
    ) -> list[str]:
        """Import ``<package>.tasks`` of each package (default: Django's installed apps)."""
        from .integrations.django import autodiscover_tasks

        return autodiscover_tasks(self, packages, related_name)


class _TaskFactory:
    """What ``@app.task(...)`` returns: applies the options to the function."""

    def __init__(self, app: App, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]], /
    ) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Context, P], R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> Task[Any, Any]:
        return self._app._register(fn, dict(self._options))
