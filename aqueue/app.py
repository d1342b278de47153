"""The App: settings, the task registry, decorators, lifespan, and a facade over its Client.

A web app holds one App for its whole lifespan; workers import the same App.
Everything that talks to Redis on the App's behalf is its
:class:`~aqueue.client.Client` (``app.client``); the App itself is what a
user declares: tasks, periodic schedules, a worker lifespan, settings.
"""

# Over 400 lines: the public facade, one documented method per entry point users call.

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from ._redis.broker import Broker
from .client import Client
from .core.config import DEFAULT_REDIS_URL, Settings, options_from_object
from .core.context import Context
from .core.errors import AqueueError, ConfigError, UnknownTask, did_you_mean
from .core.hooks import Middleware
from .core.limits import ConcurrencySpec, RateSpec
from .core.urls import mask_url
from .inline import EagerMode
from .result import AsyncResult
from .task import Task, TaskConfig

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .core.events import Event
    from .deadletter import DeadLetter
    from .events import Since
    from .periodic import PeriodicDecorator, PeriodicTask
    from .schedules import Schedules

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

M = TypeVar("M", bound=Middleware)

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
        #: What talks to Redis for this App: broker, codec, clock, result waiter.
        self.client = Client(Settings.from_options(values), redis)
        #: Registered tasks by name.
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: Periodic tasks by name (each is in :attr:`tasks` too).
        self.periodic_tasks: dict[str, PeriodicTask] = {}
        self._schedules: Schedules | None = None
        self._lifespan: Lifespan | None = None

    @property
    def settings(self) -> Settings:
        """The validated settings (change them with :meth:`configure`)."""
        return self.client.settings

    def configure(self, **options: Any) -> None:
        """Change settings before the App connects (``app.configure(redis_url=...)``).

        Options are validated like the constructor's; unknown ones are rejected.
        """
        self.client.configure(self.settings.replace(**options))

    def __repr__(self) -> str:
        return f"<aqueue.App {mask_url(self.settings.redis_url)} tasks={len(self.tasks)}>"

    # -- declaring tasks --------------------------------------------------------

    # A first parameter annotated Context is filled in by the worker, so it is
    # not part of the enqueue signature: these overloads come first.
    @overload
    def task(
        self, fn: Callable[Concatenate[Context, P], AsyncIterator[T]], /
    ) -> Task[P, list[T]]: ...
    @overload
    def task(self, fn: Callable[P, AsyncIterator[T]], /) -> Task[P, list[T]]: ...
    # workflows (issue 12): a ``def`` generator streams from its thread
    @overload
    def task(self, fn: Callable[Concatenate[Context, P], Iterator[T]], /) -> Task[P, list[T]]: ...
    @overload
    def task(self, fn: Callable[P, Iterator[T]], /) -> Task[P, list[T]]: ...
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
        check_arguments: bool = True,
        redact: bool | Callable[[Any], Any] = False,
        priority: int = 0,
        rate_limit: RateSpec | None = None,
        concurrency: ConcurrencySpec | None = None,
        unique_mode: Literal["debounce", "replace"] | None = None,
        executor: Literal["thread", "process"] | None = None,
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
                raise ConfigError(f"unknown task option {key!r}{did_you_mean(key, allowed)}")
        name = options.pop("name", None) or f"{_import_name(fn)}.{fn.__qualname__}"
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
        catch_up: Literal["latest", "all"] = "latest",
        **task_options: Any,
    ) -> PeriodicDecorator:
        """Register a task that is also enqueued on a schedule (see :mod:`aqueue.periodic`).

        ``@app.periodic(cron="0 3 * * MON", tz="Asia/Seoul")`` or
        ``@app.periodic(every=timedelta(minutes=5))``; ``args``/``kwargs`` are what
        each run gets; ``singleton=True`` skips a tick while the previous run is
        still queued or running; ``catch_up="all"`` runs every tick missed while
        no scheduler ran (default: only the latest). Other options (``name``,
        ``queue``, ``timeout``, ...) are those of :meth:`task`.
        """
        # Imported on first use: the schedule machinery (time zones, cron) is
        # not on a worker's start-up path unless the App declares schedules.
        from .periodic import PeriodicDecorator, make_schedule

        return PeriodicDecorator(
            self._register,
            self._unregister,
            self.periodic_tasks,
            make_schedule(cron, every, tz, args),
            args,
            kwargs or {},
            singleton,
            task_options,
            catch_up,
        )

    @property
    def schedules(self) -> Schedules:
        """Schedules kept in Redis: ``add``, ``remove``, ``pause``, ``resume``, ``list``
        (see :mod:`aqueue.schedules`); running workers pick changes up within a second."""
        if self._schedules is None:
            from .schedules import Schedules  # time zones and cron only when used

            self._schedules = Schedules(self)
        return self._schedules

    def _unregister(self, task: Task[Any, Any]) -> None:
        self.tasks.pop(task.name, None)

    def lifespan(self, fn: Lifespan) -> Lifespan:
        """Register an async context manager run once per worker process.

        It receives the App and may yield a dict of resources that tasks reach
        through ``ctx.state`` (see :class:`aqueue.Context`). A bare async
        generator function is wrapped with ``contextlib.asynccontextmanager``.
        If it raises before yielding, the worker does not start.
        """
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
            raise UnknownTask(
                f"no task named {name!r} is registered on this App{did_you_mean(name, self.tasks)}"
            )
        enqueuer = task.options(**options) if options else task
        return await enqueuer.enqueue(*args, **dict(kwargs or {}))

    def result(self, task_id: str, queue: str | None = None) -> AsyncResult[Any]:
        """A handle on a task enqueued anywhere, by its id.

        Without ``queue``, the queues of this App's registered tasks are searched
        on first use.
        """
        return AsyncResult(self.client, task_id, queue, search=self.queues)

    # -- dead letters ------------------------------------------------------------

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages (newest first) of ``queue`` or of each of the app's queues."""
        from .deadletter import list_dead  # operator tools: not loaded by workers

        return await list_dead(self.client, [queue] if queue else self.queues, limit)

    async def replay_dead(
        self, entry_ids: Sequence[str] | None = None, queue: str | None = None
    ) -> list[tuple[str, str]]:
        """Put dead-lettered messages (all when ``entry_ids`` is None) back in their queue.

        Returns ``(queue, entry id)`` of each message replayed.
        """
        from .deadletter import replay_dead

        return await replay_dead(self.client, [queue] if queue else self.queues, entry_ids)

    async def purge_dead(self, queue: str | None = None) -> int:
        """Delete dead-lettered messages of ``queue`` (or of every app queue); returns the count."""
        from .deadletter import purge_dead

        return await purge_dead(self.client, [queue] if queue else self.queues)

    # -- middleware and events (issue 13) -----------------------------------------

    def middleware(self, middleware: M) -> M:
        """Register middleware (an :class:`aqueue.Middleware` instance) and return it.

        Its hooks run around every enqueue of this App and every run on its
        workers, in the order registered (the first is the outermost). See
        docs/observability.md for Sentry, correlation id and tenancy recipes.
        """
        self.client.hooks.add(middleware)
        return middleware

    def events(
        self,
        queues: Sequence[str] | None = None,
        since: Since = None,
        follow: bool = True,
    ) -> AsyncIterator[Event]:
        """Task and worker events, as they happen (needs ``events=True``).

        ``async for ev in app.events(queues=["emails"], since=last_id)``: only
        new events without ``since``; ``since="0"`` from the oldest kept; an
        event's ``id`` to go on after it; a datetime from that time. Without
        ``queues``, every queue's events (on Redis Cluster: this App's queues).
        ``follow=False`` stops at the newest event that existed at the start.
        """
        from .events import read_events

        names = list(queues) if queues else self.queues
        return read_events(self.client, names, since, follow, only=list(queues or ()))

    # -- connection --------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """The Client's broker on the running event loop (connected lazily)."""
        return self.client.broker

    async def connect(self) -> None:
        """Connect and check that Redis answers; raises ConnectionFailed if not."""
        await self.client.connect()

    async def close(self) -> None:
        """Close the result subscription and (unless injected) the Redis client."""
        await self.client.close()

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

    # -- tests ---------------------------------------------------------------------

    def eager(self) -> EagerMode:
        """Run tasks inline at ``enqueue()``, without Redis (``with app.eager(): ...``).

        Also ``async with app.eager():``. Each ``enqueue()`` runs the task to
        its final outcome through the worker's executor (typed arguments,
        Context, timeout, retries at once) and returns a finished
        ``AsyncResult``. Leases, crashes, delays, unique keys and other
        processes are not modelled: see docs/testing.md.
        """
        return EagerMode(self.client)

    # -- synchronous callers and frameworks ---------------------------------------

    def close_sync(self) -> None:
        """Stop the thread behind ``task.delay`` (a daemon thread: optional)."""
        self.client.close_sync()

    def config_from_object(self, source: object, namespace: str | None = None) -> None:
        """Take options from a settings object, module, mapping or import path.

        ``app.config_from_object("django.conf:settings", namespace="AQUEUE")``
        reads ``AQUEUE_REDIS_URL``, ``AQUEUE_PREFIX``, ... Unknown names under
        the namespace are rejected with the closest valid one. Call it before
        the App connects.
        """
        self.configure(**options_from_object(source, namespace))

    def autodiscover_tasks(
        self, packages: list[str] | None = None, related_name: str = "tasks"
    ) -> list[str]:
        """Import ``<package>.tasks`` of each package (default: Django's installed apps)."""
        from .discovery import autodiscover_tasks

        return autodiscover_tasks(packages, related_name)


class _TaskFactory:
    """What ``@app.task(...)`` returns: applies the options to the function."""

    def __init__(self, app: App, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], AsyncIterator[T]], /
    ) -> Task[P, list[T]]: ...
    @overload
    def __call__(self, fn: Callable[P, AsyncIterator[T]], /) -> Task[P, list[T]]: ...
    # workflows (issue 12): a ``def`` generator streams from its thread
    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], Iterator[T]], /
    ) -> Task[P, list[T]]: ...
    @overload
    def __call__(self, fn: Callable[P, Iterator[T]], /) -> Task[P, list[T]]: ...
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


def _import_name(fn: Callable[..., Any]) -> str:
    """The name workers import ``fn``'s module by, which its task name starts with.

    A script run as ``python tasks_app.py`` is ``__main__`` to itself, but
    ``tasks_app`` to a worker started with ``aqueue worker tasks_app:app``: the
    name is found from how it was run (``python -m``) or from its file, else
    a warning says how to name the task.
    """
    module = fn.__module__
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name).removesuffix(".__main__")
    found = _module_name_of_file(getattr(main, "__file__", None))
    if found is not None:
        return found
    warnings.warn(
        f"task {fn.__qualname__!r} is registered from __main__ and its module's import "
        f"name can't be found, so it is named '__main__.{fn.__qualname__}', which no "
        "worker knows: move it into a module the worker imports, or give it a name "
        "with @app.task(name=...)",
        stacklevel=4,
    )
    return module


def _module_name_of_file(file: str | None) -> str | None:
    """The dotted name a file is imported by from ``sys.path``, or None."""
    if not file or not file.endswith(".py"):
        return None
    path = Path(file).resolve()
    names = []
    for entry in sys.path:
        try:
            relative = path.relative_to(Path(entry or os.getcwd()).resolve())
        except (ValueError, OSError):
            continue
        parts = [*relative.parent.parts, relative.stem]
        if all(part.isidentifier() for part in parts):
            names.append(".".join(parts))
    return min(names, key=len) if names else None
