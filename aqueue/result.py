"""Awaitable handles on tasks, woken by one shared pub/sub subscription.

Every waiter in a process shares one pub/sub connection (one subscription per
queue). A waiter registers, *then* reads the task's record, so a completion
published in between is not missed; a slow poll backs the push up across
reconnects and for tasks whose queue is not known here.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import struct
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
import redis.exceptions

from .batching import Coalescer
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
_LENGTH = struct.Struct(">I")
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
    """Waits for task records on behalf of every AsyncResult of one App.

    A push names finished task ids; the records of those being waited for are
    read in one pipeline and handed to their waiters. A single poller re-reads
    records nobody pushed (lost pub/sub messages, reconnects), backing off per
    task from ``poll_interval`` to 8x that.
    """

    def __init__(self, broker: Broker, poll_interval: float) -> None:
        self._broker = broker
        self._poll_interval = poll_interval
        self._waiters: dict[_Key, list[asyncio.Future[dict[bytes, bytes]]]] = {}
        self._channels: dict[bytes, str] = {}
        self._subscribed: dict[str, asyncio.Event] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._poll_due: list[tuple[float, float, _Key]] = []
        self._poll_wakeup = asyncio.Event()
        self._reads: Coalescer[str, str, dict[bytes, bytes]] = Coalescer(self._read_records)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- coalesced record reads -------------------------------------------------

    async def fetch(self, queue: str, task_id: str) -> dict[bytes, bytes]:
        """Read one record; concurrent reads share one pipeline."""
        return await self._reads.submit(queue, task_id)

    async def _read_records(self, queue: str, ids: list[str]) -> list[dict[bytes, bytes]]:
        records: list[dict[bytes, bytes]] = []
        for start in range(0, len(ids), 1000):
            records += await self._broker.records(queue, ids[start : start + 1000])
        return records

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
        key = (queue, task_id)
        future: asyncio.Future[dict[bytes, bytes]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._subscribe(queue)  # before the first read: no push slips by
                rec = await self.fetch(queue, task_id)
                if _status(rec).is_final:
                    return rec
                self._schedule_poll(key, self._poll_interval)
                # The deadline again: redis-py swallows the cancellation that enforces
                # it when that lands while a connection is being made (first use).
                async with asyncio.timeout_at(deadline):
                    return await future
        except TimeoutError:
            rec = await self.fetch(queue, task_id)
            if _status(rec).is_final:
                return rec
            raise ResultTimeout(
                f"task {task_id} did not finish within {timeout}s (status: {_status(rec).value})"
            ) from None
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
                if not waiters:
                    del self._waiters[key]

    def _resolve(self, key: _Key, rec: dict[bytes, bytes]) -> None:
        for f in self._waiters.get(key, ()):
            if not f.done():
                f.set_result(rec)

    async def _check(self, queue: str, ids: list[str]) -> list[str]:
        """Read records of waited-for ids, resolve the final ones; returns the others."""
        ids = [i for i in ids if (queue, i) in self._waiters]
        if not ids:
            return []
        records = await self._read_records(queue, ids)
        unfinished = []
        for task_id, rec in zip(ids, records, strict=True):
            if _status(rec).is_final:
                self._resolve((queue, task_id), rec)
            else:
                unfinished.append(task_id)
        return unfinished

    def _schedule_poll(self, key: _Key, delay: float) -> None:
        heapq.heappush(self._poll_due, (time.monotonic() + delay, delay, key))
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_loop(), name="aqueue-result-poll")
        elif len(self._poll_due) == 1:
            self._poll_wakeup.set()

    async def _poll_loop(self) -> None:
        """The fallback for pushes that never came."""
        ceiling = self._poll_interval * 8
        while not self._closed:
            if not self._poll_due:
                self._poll_wakeup.clear()
                await self._poll_wakeup.wait()
                continue
            wait = self._poll_due[0][0] - time.monotonic()
            if wait > 0:
                self._poll_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poll_wakeup.wait(), wait)
                continue
            now = time.monotonic()
            due: dict[str, list[tuple[str, float]]] = {}
            while self._poll_due and self._poll_due[0][0] <= now:
                _, delay, key = heapq.heappop(self._poll_due)
                if key in self._waiters:
                    due.setdefault(key[0], []).append((key[1], delay))
            for queue, items in due.items():
                delays = dict(items)
                try:
                    unfinished = await self._check(queue, list(delays))
                except (redis.exceptions.ConnectionError, OSError) as exc:
                    logger.debug("result poll failed: %s", exc)
                    unfinished = list(delays)
                for task_id in unfinished:
                    delay = min(delays[task_id] * 2, ceiling)
                    heapq.heappush(
                        self._poll_due, (time.monotonic() + delay, delay, (queue, task_id))
                    )

    async def _subscribe(self, queue: str) -> None:
        event = self._subscribed.get(queue)
        if event is not None and event.is_set():
            return
        if event is None:
            event = self._subscribed[queue] = asyncio.Event()
            channel = self._broker.keys(queue).done_channel
            self._channels[channel.encode()] = queue

            async def open_subscription() -> None:
                try:
                    if self._pubsub is None:
                        self._pubsub = self._broker.client.pubsub()
                    await self._pubsub.subscribe(channel)
                except Exception:
                    del self._subscribed[queue]
                    raise
                if self._reader is None or self._reader.done():
                    self._reader = asyncio.create_task(self._read_loop(), name="aqueue-results")

            # In a task of its own, shielded: redis-py swallows a cancellation (the
            # caller's timeout) that lands while subscribe() connects, which left
            # get(timeout=...) waiting forever.
            opening = asyncio.create_task(open_subscription())
            self._tasks.add(opening)
            opening.add_done_callback(self._tasks.discard)
            opening.add_done_callback(_settle)
            await asyncio.shield(opening)
        # Until confirmed, the poll covers us; don't hold the caller up for long.
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses the caller's
        # cancellation (its get() timeout) when the event is set at the same moment.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._poll_interval):
                await event.wait()

    async def _read_loop(self) -> None:
        backoff = 0.05
        while not self._closed:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any one failure
                logger.warning("result subscription lost (%r); reconnecting", exc)
                for event in self._subscribed.values():
                    event.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                try:
                    await self._pubsub.connect()  # resubscribes every channel
                except Exception:
                    continue
                self._recheck_all()  # pushes sent while we were away are lost
                continue
            backoff = 0.05
            if msg is None:
                continue
            kind = msg["type"]
            queue = self._channels.get(msg["channel"])
            if queue is None:
                continue
            if kind == "subscribe":
                confirmed = self._subscribed.get(queue)
                if confirmed is not None and not confirmed.is_set():
                    confirmed.set()
            elif kind == "message":
                try:
                    self._pushed(queue, msg["data"])
                except Exception:
                    logger.exception("unreadable completion push on %s; polling instead", queue)
                    self._recheck_all()

    def _pushed(self, queue: str, data: bytes) -> None:
        """Resolve waiters from a completion push; read records the push left out."""
        to_read: list[str] = []
        if data[:1] == b"\0":
            for task_id, state, body in _parse_push(data):
                key = (queue, task_id)
                if key not in self._waiters:
                    continue
                if body:
                    field = b"result" if state == b"succeeded" else b"error"
                    self._resolve(key, {b"state": state, field: body})
                else:
                    to_read.append(task_id)
        else:
            to_read = [
                task_id
                for task_id in (raw.decode() for raw in data.split(b"\n"))
                if (queue, task_id) in self._waiters
            ]
        if to_read:
            self._spawn(self._check_pushed(queue, to_read))

    async def _check_pushed(self, queue: str, ids: list[str]) -> None:
        try:
            await self._check(queue, ids)
        except (redis.exceptions.ConnectionError, OSError) as exc:
            logger.debug("reading pushed results failed (%s); the poll will retry", exc)

    def _recheck_all(self) -> None:
        for key in list(self._waiters):
            self._schedule_poll(key, 0.0)

    async def close(self) -> None:
        self._closed = True
        for task in (self._reader, self._poller, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._reader, self._poller):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        self._pubsub = None


def _parse_push(data: bytes) -> list[tuple[str, bytes, bytes]]:
    """(task id, state, result-or-error) of each task in a framed push (see finish.lua)."""
    out = []
    pos, end = 1, len(data)
    unpack = _LENGTH.unpack_from
    while pos < end:
        parts = []
        for _ in range(3):
            (n,) = unpack(data, pos)
            pos += 4
            parts.append(data[pos : pos + n])
            pos += n
        out.append((parts[0].decode(), parts[1], parts[2]))
    return out


def _settle(task: asyncio.Task[Any]) -> None:
    """Drop a finished background task, retrieving its error (its caller may be gone)."""
    if not task.cancelled():
        task.exception()


def encode_progress(value: Any, message: str) -> bytes:
    return encode_value((value, message))
