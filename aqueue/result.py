"""Awaitable handles on tasks, woken by one shared pub/sub subscription.

Every waiter in a process shares one pub/sub connection (one subscription per
queue). A waiter registers, *then* reads the task's record, so a completion
published in between is not missed; a slow poll backs the push up across
reconnects and for tasks whose queue is not known here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
import redis.exceptions

from .envelope import decode_error, encode_value
from .errors import (
    AqueueError,
    ResultTimeout,
    TaskAborted,
    TaskDead,
    TaskExpired,
    TaskFailed,
)
from .status import TaskStatus

if TYPE_CHECKING:
    from .app import App
    from .broker import Broker
    from .task import Task

__all__ = ["AsyncResult", "TaskInfo"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

_any_decoder = msgspec.msgpack.Decoder()
_FAILURES: dict[TaskStatus, type[TaskFailed]] = {
    TaskStatus.FAILED: TaskFailed,
    TaskStatus.ABORTED: TaskAborted,
    TaskStatus.EXPIRED: TaskExpired,
    TaskStatus.DEAD: TaskDead,
}


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A snapshot of a task's record."""

    id: str
    queue: str | None
    status: TaskStatus
    name: str | None = None
    attempt: int = 0
    worker: str | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    eta: float | None = None
    error: str | None = None

    @classmethod
    def from_record(cls, task_id: str, queue: str | None, rec: dict[bytes, bytes]) -> TaskInfo:
        if not rec:
            return cls(task_id, queue, TaskStatus.UNKNOWN)

        def ms(field: bytes) -> float | None:
            raw = rec.get(field)
            return int(raw) / 1000 if raw else None

        error = None
        if rec.get(b"error"):
            info = decode_error(rec[b"error"])
            error = f"{info.type}: {info.message}"
        return cls(
            id=task_id,
            queue=queue,
            status=_status(rec),
            name=rec[b"name"].decode() if b"name" in rec else None,
            attempt=int(rec.get(b"attempt", 0)),
            worker=rec[b"worker"].decode() if b"worker" in rec else None,
            enqueued_at=ms(b"enq"),
            started_at=ms(b"started"),
            finished_at=ms(b"finished"),
            eta=ms(b"eta"),
            error=error,
        )


def _status(rec: dict[bytes, bytes]) -> TaskStatus:
    raw = rec.get(b"state")
    if raw is None:
        return TaskStatus.UNKNOWN
    try:
        return TaskStatus(raw.decode())
    except ValueError:
        return TaskStatus.UNKNOWN


class AsyncResult(Generic[R]):
    """A handle on one task. ``await`` it for the value (or :class:`TaskFailed`)."""

    __slots__ = ("_app", "_task", "id", "queue")

    def __init__(
        self, app: App, task_id: str, queue: str | None, task: Task[Any, R] | None = None
    ) -> None:
        self._app = app
        self._task = task
        self.id = task_id
        self.queue = queue

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id} queue={self.queue!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __await__(self) -> Generator[Any, None, R]:
        return self.get().__await__()

    async def get(self, timeout: float | None = None) -> R:  # noqa: ASYNC109
        """The task's return value, waiting up to ``timeout`` seconds (forever if None).

        Raises :class:`ResultTimeout` (a ``TimeoutError``) when it is not done in
        time, and :class:`TaskFailed` (or a subclass) when it ended without a value.
        """
        queue = await self._resolve_queue()
        rec = await self._app._waiter().wait(queue, self.id, timeout)
        return self._value(rec)

    async def status(self) -> TaskStatus:
        """The task's current state; UNKNOWN when no record exists (or it expired)."""
        return (await self.info()).status

    async def info(self) -> TaskInfo:
        """A snapshot of the task's record (state, attempt, worker, times, error)."""
        queue = await self._resolve_queue()
        rec = await self._app._waiter().fetch(queue, self.id)
        return TaskInfo.from_record(self.id, queue, rec)

    async def progress(self) -> tuple[Any, str] | None:
        """The last ``(value, message)`` the task reported with ``ctx.progress``."""
        queue = await self._resolve_queue()
        rec = await self._app._waiter().fetch(queue, self.id)
        raw = rec.get(b"progress")
        if not raw:
            return None
        value, message = _any_decoder.decode(raw)
        return value, message

    async def abort(self) -> bool:
        """Abort the task: a waiting task never starts, a running one is cancelled.

        Returns False (and changes nothing) when the task had already finished.
        """
        queue = await self._resolve_queue()
        return await self._app._abort(queue, self.id)

    def _value(self, rec: dict[bytes, bytes]) -> R:
        status = _status(rec)
        if status is TaskStatus.SUCCEEDED:
            raw = rec.get(b"result", b"")
            decoder = self._task.result_decoder() if self._task is not None else _any_decoder
            try:
                value: R = decoder.decode(raw) if raw else None  # type: ignore[assignment]
            except msgspec.ValidationError as exc:
                raise AqueueError(
                    f"task {self.id} returned a value that doesn't match its annotation: {exc}"
                ) from exc
            return value
        info = decode_error(rec.get(b"error", b""))
        if status is TaskStatus.DEAD and not rec.get(b"error"):
            info = info.__class__("DeadLetter", "moved to the dead-letter stream")
        failure = _FAILURES.get(status, TaskFailed)
        raise failure(self.id, info.type, info.message, info.traceback)

    async def _resolve_queue(self) -> str:
        if self.queue is None:
            self.queue = await self._app._find_queue(self.id)
        return self.queue


_Key = tuple[str, str]


class ResultWaiter:
    """Waits for task records on behalf of every AsyncResult of one App."""

    def __init__(self, broker: Broker, poll_interval: float) -> None:
        self._broker = broker
        self._poll_interval = poll_interval
        self._waiters: dict[_Key, set[asyncio.Future[None]]] = {}
        self._channels: dict[bytes, str] = {}
        self._subscribed: dict[str, asyncio.Event] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._fetches: dict[str, dict[str, list[asyncio.Future[dict[bytes, bytes]]]]] = {}
        self._fetch_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- coalesced record reads -------------------------------------------------

    async def fetch(self, queue: str, task_id: str) -> dict[bytes, bytes]:
        """Read one record, batched with concurrent reads into one pipeline."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[bytes, bytes]] = loop.create_future()
        self._fetches.setdefault(queue, {}).setdefault(task_id, []).append(future)
        if not self._fetch_scheduled:
            self._fetch_scheduled = True
            loop.call_soon(self._flush_fetches)
        return await future

    def _flush_fetches(self) -> None:
        self._fetch_scheduled = False
        pending, self._fetches = self._fetches, {}
        for queue, by_id in pending.items():
            self._spawn(self._fetch_batch(queue, by_id))

    async def _fetch_batch(
        self, queue: str, by_id: dict[str, list[asyncio.Future[dict[bytes, bytes]]]]
    ) -> None:
        ids = list(by_id)
        try:
            records: list[dict[bytes, bytes]] = []
            for start in range(0, len(ids), 1000):
                records += await self._broker.records(queue, ids[start : start + 1000])
        except Exception as exc:
            for futures in by_id.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
            return
        for task_id, rec in zip(ids, records, strict=True):
            for f in by_id[task_id]:
                if not f.done():
                    f.set_result(rec)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- waiting ----------------------------------------------------------------

    async def wait(
        self,
        queue: str,
        task_id: str,
        timeout: float | None,  # noqa: ASYNC109
    ) -> dict[bytes, bytes]:
        """The task's record once it reaches a final state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        key = (queue, task_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, set()).add(future)
        try:
            await self._subscribe(queue)  # before the first read: no completion slips by
            while True:
                rec = await self.fetch(queue, task_id)
                if _status(rec).is_final:
                    return rec
                wait = self._poll_interval
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ResultTimeout(
                            f"task {task_id} did not finish within {timeout}s "
                            f"(status: {_status(rec).value})"
                        )
                    wait = min(wait, left)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), wait)
                if future.done():
                    future = asyncio.get_running_loop().create_future()
                    self._waiters[key].add(future)
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[key]

    async def _subscribe(self, queue: str) -> None:
        event = self._subscribed.get(queue)
        if event is None:
            event = self._subscribed[queue] = asyncio.Event()
            channel = self._broker.keys(queue).done_channel
            self._channels[channel.encode()] = queue
            try:
                if self._pubsub is None:
                    self._pubsub = self._broker.client.pubsub()
                await self._pubsub.subscribe(channel)
            except Exception:
                del self._subscribed[queue]
                raise
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_loop(), name="aqueue-results")
        # Until confirmed, polling covers us; don't hold the caller up for long.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self._poll_interval)

    async def _read_loop(self) -> None:
        backoff = 0.05
        while not self._closed:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.ConnectionError, OSError) as exc:
                logger.warning("result subscription lost (%s); reconnecting", exc)
                for event in self._subscribed.values():
                    event.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                try:
                    await self._pubsub.connect()
                    # Resubscribes on connect; missed pushes are re-read below.
                except (redis.exceptions.ConnectionError, OSError):
                    continue
                self._wake_all()
                continue
            backoff = 0.05
            if msg is None:
                continue
            kind = msg["type"]
            if kind == "subscribe":
                queue = self._channels.get(msg["channel"])
                if queue is not None:
                    confirmed = self._subscribed.get(queue)
                    if confirmed is not None and not confirmed.is_set():
                        confirmed.set()
                        self._wake_queue(queue)
            elif kind == "message":
                queue = self._channels.get(msg["channel"])
                if queue is None:
                    continue
                for raw in msg["data"].split(b"\n"):
                    waiters = self._waiters.get((queue, raw.decode()))
                    if waiters:
                        for f in waiters:
                            if not f.done():
                                f.set_result(None)

    def _wake_queue(self, queue: str) -> None:
        for (q, _), futures in self._waiters.items():
            if q == queue:
                for f in futures:
                    if not f.done():
                        f.set_result(None)

    def _wake_all(self) -> None:
        for futures in self._waiters.values():
            for f in futures:
                if not f.done():
                    f.set_result(None)

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for task in list(self._tasks):
            task.cancel()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        self._pubsub = None


def encode_progress(value: Any, message: str) -> bytes:
    return encode_value((value, message))
