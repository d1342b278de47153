"""The Client: what the enqueue side of one App holds for its whole lifespan.

A FastAPI app, a script or a worker reaches Redis through its App's Client.
The Client owns, per event loop, the Redis client, the broker and the result
waiter (a new loop — a new test, ``asyncio.run`` again — gets fresh ones,
unless the Redis client was injected), plus the codec that signs messages,
the clock that stamps them, and the private loop thread behind
``task.delay()``. Tasks, results, periodic schedules and dead-letter
operations ask the Client for what they need; nothing reaches into the App.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._redis.broker import Broker
from ._redis.connection import REDIS_ERRORS, connect
from ._redis.errors import explain as explain_redis_error
from ._redis.topology import settings_for
from ._redis.views import RedisViews
from .core.config import Settings
from .core.errors import ConfigError, ConnectionFailed, ResultTimeout
from .core.hooks import Hooks
from .core.protocol import Codec, ErrorInfo, encode_error
from .core.records import status_of
from .core.status import TaskStatus
from .core.urls import mask_url

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .waiter import ResultWaiter

__all__ = ["Client", "SyncRunner"]

T = TypeVar("T")

_ABORTED_ON_REQUEST = encode_error(ErrorInfo("TaskAborted", "aborted on request"))
_PURGED = encode_error(ErrorInfo("TaskAborted", "purged from the queue"))


class Client:
    """Connection-side state of one App: broker, codec, clock, result waiter, sync runner."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self.codec = Codec(settings.signing_key)
        #: Epoch seconds; stamps enqueue times and ETAs.
        self.clock = clock
        self._given_redis = redis
        self._redis = redis
        self._broker: Broker | None = None
        self._waiter: ResultWaiter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync_runner: SyncRunner | None = None
        self._sync_lock = threading.Lock()
        #: Above zero inside ``app.eager()``: enqueue runs tasks inline, without Redis.
        self.eager = 0
        #: A test's virtual clock (:meth:`use_test_clock`); None in production.
        self.test_clock: Callable[[], float] | None = None
        #: The App's middleware (``app.middleware(...)``), run by producers and workers.
        self.hooks = Hooks()

    @property
    def settings(self) -> Settings:
        return self._settings

    def configure(self, settings: Settings) -> None:
        """Use new settings; only before the first connection."""
        if self._broker is not None or self._sync_runner is not None:
            raise ConfigError(
                "settings (configure(), config_from_object()) must be changed before the "
                "App connects"
            )
        self._settings = settings
        self.codec = Codec(settings.signing_key)

    @property
    def injected(self) -> bool:
        """True when the Redis client was given to the App (``App(redis=...)``)."""
        return self._given_redis is not None

    # -- per event loop ------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """The broker, connected lazily on the running event loop."""
        loop = asyncio.get_running_loop()
        if self._broker is None or (self._given_redis is None and self._loop is not loop):
            if self._broker is not None and self._given_redis is None:
                # Used from another event loop (a new test, asyncio.run again):
                # the old client can't be awaited there, so start afresh.
                self._waiter = None
            self._loop = loop
            if self._given_redis is None:
                self._redis = connect(self._settings)
            assert self._redis is not None
            self._broker = Broker(self._redis, self._settings)
            self._broker.test_clock = self.test_clock
        return self._broker

    @property
    def views(self) -> RedisViews:
        """Read-only views of this App's keys (queue figures, workers, lookups)."""
        return self.broker.views

    @property
    def waiter(self) -> ResultWaiter:
        """The one result waiter of this loop: one subscription for every AsyncResult."""
        broker = self.broker
        if self._waiter is None:
            from .waiter import ResultWaiter  # not loaded by a worker that awaits no result

            self._waiter = ResultWaiter(broker, self._settings.result_poll_interval)
        return self._waiter

    async def topology(self) -> str:
        """Where this App's commands go, without secrets: the server, Sentinel's
        current master, or the cluster's nodes (also for an injected client)."""
        try:
            return await self.broker.topology()
        except REDIS_ERRORS as exc:
            raise ConnectionFailed(
                f"Redis at {mask_url(self._settings.redis_url)} did not answer: {exc}"
            ) from exc

    async def connect(self) -> None:
        """Check that Redis answers; raises ConnectionFailed if not."""
        try:
            await self.broker.ping()
        except Exception as exc:
            mistake = explain_redis_error(exc)
            if mistake is not None:
                raise ConfigError(mistake) from exc
            if not isinstance(exc, REDIS_ERRORS):
                raise
            raise ConnectionFailed(
                f"Redis at {mask_url(self._settings.redis_url)} did not answer: "
                f"{str(exc).rstrip('.')}. "
                "Is it running, and is the URL right (--url on the command line, "
                "AQUEUE_REDIS_URL, or App(url))?"
            ) from exc

    async def close(self) -> None:
        """Close the result subscription and (unless injected) the Redis client."""
        if self._waiter is not None:
            await self._waiter.close()
            self._waiter = None
        if self._broker is not None:
            await self._broker.close()
            if self._given_redis is None:
                with contextlib.suppress(Exception):
                    await self._broker.client.aclose()
        if self._given_redis is None:
            self._broker = None
            self._redis = None

    # -- operations that are not a task's --------------------------------------------

    async def find_queue(self, task_id: str, queues: Sequence[str]) -> str:
        """Which of ``queues`` holds the task (the default queue when none does)."""
        views = self.views
        found = await views.find_queue(task_id, queues)
        if found is None:
            # Sent to a queue no task declares (``options(queue=...)``): the registry knows it.
            others = [q for q in await views.registered_queues() if q not in queues]
            found = await views.find_queue(task_id, others)
        return found or self._settings.default_queue

    async def abort(self, queue: str, task_id: str) -> bool:
        """Abort a task; True only when it will not run, or its running copy was
        cancelled and recorded aborted.

        A waiting task is aborted at once. A running one is flagged and its
        worker told; it may still finish first (a worker had just begun it, or
        a delayed task had just come due), so the answer waits for its outcome:
        True when that is ABORTED, False when it succeeded or failed first (or
        had not ended within ``visibility_timeout + dead_worker_after``).
        """
        try:
            state = await self.broker.abort(queue, task_id, _ABORTED_ON_REQUEST)
        except REDIS_ERRORS as exc:
            limit = "Too many open files" in str(exc)
            raise ConnectionFailed(
                f"could not abort task {task_id}: "
                + (
                    "this process ran out of file descriptors (ulimit -n) opening a "
                    "connection to Redis; lower max_connections or raise the limit"
                    if limit
                    else f"Redis at {mask_url(self._settings.redis_url)} did not answer: {exc}"
                )
            ) from exc
        if state == "" or TaskStatus(state).is_final:
            return False
        if state != TaskStatus.RUNNING.value:
            return True
        settings = self._settings
        try:
            record = await self.waiter.wait(
                queue, task_id, settings.visibility_timeout + settings.dead_worker_after
            )
        except ResultTimeout:
            return False
        return status_of(record) is TaskStatus.ABORTED

    async def abort_step(self, queue: str, task_id: str) -> bool:
        """Abort a workflow step, enqueued or not yet; False when it had finished."""
        broker = self.broker
        while True:
            state = await broker.abort(queue, task_id, _ABORTED_ON_REQUEST)
            if state != "":
                return not TaskStatus(state).is_final
            # No record: not enqueued yet. Mark it aborted so it never is, unless it
            # was enqueued in between (then abort that on the next round).
            if await broker.abort_unsent(queue, task_id, _ABORTED_ON_REQUEST):
                return True

    async def purge(self, queue: str) -> tuple[int, int]:
        """Remove a queue's waiting and delayed tasks: (from the stream, delayed).

        Running tasks keep their leases; each purged task is recorded as aborted.
        """
        total_stream = total_delayed = 0
        while True:
            from_stream, from_delayed = await self.broker.purge(queue, _PURGED)
            total_stream += from_stream
            total_delayed += from_delayed
            if not from_stream and not from_delayed:
                return total_stream, total_delayed

    def use_test_clock(self, clock: Callable[[], float] | None) -> None:
        """Read time from ``clock`` (epoch seconds) instead of the real one, here and
        in the Lua scripts; ``None`` goes back to real time. For ``aqueue.testing``:
        nothing in production calls it."""
        self.test_clock = clock
        self.clock = time.time if clock is None else clock
        if self._broker is not None:
            self._broker.test_clock = clock
        runner = self._sync_runner
        if runner is not None:
            runner.client.use_test_clock(clock)

    # -- synchronous callers -----------------------------------------------------------

    def sync(self) -> SyncRunner:
        """The private event-loop thread behind ``task.delay`` (started on first use)."""
        settings = self._settings
        if self._given_redis is not None:
            # The injected client belongs to its own event loop: the private
            # loop gets a client of its own for the same server(s).
            derived = settings_for(self._given_redis, settings)
            if derived is None:
                raise ConfigError(
                    "task.delay() needs an App made with a URL: the Redis client passed as "
                    "App(redis=...) belongs to one event loop and can't be used from another"
                )
            settings = derived
        with self._sync_lock:
            runner = self._sync_runner
            if runner is None or runner.pid != os.getpid():  # new, or forked since
                runner = self._sync_runner = SyncRunner(settings, self.clock)
                runner.client.test_clock = self.test_clock
            return runner

    def close_sync(self) -> None:
        """Stop the thread behind ``task.delay`` (a daemon thread: optional)."""
        with self._sync_lock:
            runner, self._sync_runner = self._sync_runner, None
        if runner is not None and runner.pid == os.getpid():
            runner.close()


class SyncRunner:
    """A private event loop in a daemon thread, with a Client of its own.

    A Django view, a management command or a script has no event loop: the
    runner's loop sends their enqueues and blocks the calling thread until
    Redis has acknowledged. Its Client (same settings, same factory, so the
    same timeouts) never shares a connection with an event loop running
    elsewhere in the process, and any number of threads may use it at once.
    After ``os.fork`` the child starts a fresh runner on first use.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.client = Client(settings, clock=clock)
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

    def close(self) -> None:
        """Close the runner's Client and stop the loop thread."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self.client.close(), timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
