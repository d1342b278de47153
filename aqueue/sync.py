"""Enqueueing from synchronous code: ``add.delay(1, 2).get(timeout=5)``.

A Django view, a management command or a script has no event loop. Each App
can own one private event loop running in a daemon thread; ``delay`` sends
the enqueue to that loop and blocks the calling thread until Redis has
acknowledged it. The loop has its own Redis client and result subscription,
so it never shares a connection with an event loop running elsewhere in the
process (an ASGI server, a test), and any number of threads may call
``delay`` and ``get`` at once. After ``os.fork`` the child starts a fresh
loop of its own on first use.

In ``async def`` code, use ``await task.enqueue(...)`` instead: ``delay``
would block the event loop while it waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from .broker import Broker
from .envelope import ErrorInfo, encode_error
from .errors import ConfigError
from .result import AsyncResult, ResultWaiter, TaskInfo
from .status import TaskStatus

if TYPE_CHECKING:
    from .app import App
    from .task import EnqueueOptions, Task

__all__ = ["SyncResult", "SyncRunner", "sync_result"]

R = TypeVar("R")
T = TypeVar("T")


class SyncRunner:
    """A private event loop in a daemon thread, with its own Redis client."""

    def __init__(self, app: App) -> None:
        if app._given_client is not None:
            raise ConfigError(
                "task.delay() needs an App made with a URL: the Redis client passed as "
                "App(redis=...) belongs to one event loop and can't be used from another"
            )
        self.app = app
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._broker: Broker | None = None
        self._waiter: ResultWaiter | None = None
        self._thread = threading.Thread(target=self._run, name="aqueue-sync-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the private loop and wait for its value in this thread."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("aqueue's sync API can't be called from its own event loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            settings = self.app.settings
            # Configured like the App's own client (see App.broker).
            client = aioredis.Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=settings.connect_timeout,
                socket_keepalive=True,
                health_check_interval=30,
                retry=Retry(
                    ExponentialBackoff(cap=0.5, base=0.05),
                    2,
                    supported_errors=(redis.exceptions.ConnectionError,),
                ),
            )
            self._broker = Broker(client, settings)
        return self._broker

    @property
    def waiter(self) -> ResultWaiter:
        if self._waiter is None:
            self._waiter = ResultWaiter(self.broker, self.app.settings.result_poll_interval)
        return self._waiter

    def delay(
        self,
        task: Task[Any, R],
        opts: EnqueueOptions,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> SyncResult[R]:
        # Checked and encoded here, so a bad argument raises in the caller's thread.
        queue, message = task._message(args, kwargs, opts)

        async def send() -> str:
            return await self.broker.enqueue(queue, message)

        return SyncResult(self, self.call(send()), queue, task)

    async def _close(self) -> None:
        if self._waiter is not None:
            await self._waiter.close()
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.client.aclose()

    def close(self) -> None:
        """Close the Redis client and stop the loop thread."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self._close(), timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


class SyncResult(Generic[R]):
    """A blocking handle on one task, returned by ``task.delay(...)``."""

    __slots__ = ("_runner", "_task", "id", "queue")

    def __init__(
        self, runner: SyncRunner, task_id: str, queue: str, task: Task[Any, R] | None = None
    ) -> None:
        self._runner = runner
        self._task = task
        self.id = task_id
        self.queue = queue

    def __repr__(self) -> str:
        return f"<SyncResult {self.id} queue={self.queue!r}>"

    def get(self, timeout: float | None = None) -> R:
        """Block until the task is done; its value, or raise like ``AsyncResult.get``.

        Raises :class:`~aqueue.ResultTimeout` after ``timeout`` seconds and
        :class:`~aqueue.TaskFailed` (or a subclass) when it ended without a value.
        """
        runner = self._runner

        async def wait() -> dict[bytes, bytes]:
            return await runner.waiter.wait(self.queue, self.id, timeout)

        rec = runner.call(wait())
        handle: AsyncResult[R] = AsyncResult(runner.app, self.id, self.queue, self._task)
        return handle._value(rec)

    def info(self) -> TaskInfo:
        """A snapshot of the task's record."""
        runner = self._runner

        async def fetch() -> dict[bytes, bytes]:
            return await runner.broker.record(self.queue, self.id)

        return TaskInfo.from_record(self.id, self.queue, runner.call(fetch()))

    def status(self) -> TaskStatus:
        return self.info().status

    def ready(self) -> bool:
        """True once the task has finished (whatever the outcome)."""
        return self.status().is_final

    def abort(self) -> bool:
        """Abort the task (as ``AsyncResult.abort``); False when it had already finished."""
        runner = self._runner

        async def abort() -> str:
            error = encode_error(ErrorInfo("TaskAborted", "aborted on request"))
            return await runner.broker.abort(self.queue, self.id, error)

        state = runner.call(abort())
        return state != "" and not TaskStatus(state).is_final


def sync_result(app: App, task_id: str, queue: str | None = None) -> SyncResult[Any]:
    """A blocking handle on any task by id (a status view in a Django project).

    Without ``queue``, the queues of the App's registered tasks are searched.
    """
    runner = app._sync()
    if queue is None:
        queues = app.queues

        async def find() -> str:
            broker = runner.broker
            for name in queues:
                if await broker.client.exists(broker.keys(name).task(task_id)):
                    return name
            return app.settings.default_queue

        queue = runner.call(find())
    return SyncResult(runner, task_id, queue)
