"""AsyncResult: an awaitable handle on one task, by id.

``await add.enqueue(1, 2)`` gives an ``AsyncResult[int]``; ``await`` it for
the value (typed by the task's return annotation) or a :class:`TaskFailed`.
The waiting itself is the Client's :class:`~aqueue.waiter.ResultWaiter`.
"""

from __future__ import annotations

import collections
import typing
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from .core.frames import decode_progress
from .core.records import Record, TaskInfo, value_of
from .core.status import TaskStatus

if TYPE_CHECKING:
    from .client import Client

__all__ = ["AsyncResult", "ChunkStream", "FinishedResult", "TaskInfo"]

R = TypeVar("R")
T = TypeVar("T")

#: How long one read of a chunk stream blocks before the task's state is checked.
_CHUNK_WAIT_MS = 500
#: Makes the decoder that types a task's value (built on first use).
Decoder = Callable[[], msgspec.msgpack.Decoder[Any]]


class AsyncResult(Generic[R]):
    """A handle on one task. ``await`` it for the value (or :class:`TaskFailed`).

    Made by ``enqueue`` (queue known) or ``app.result(id)`` (queue found on
    first use among ``search``, the App's queues).
    """

    __slots__ = ("_client", "_decoder", "_search", "id", "parent", "queue")

    def __init__(
        self,
        client: Client,
        task_id: str,
        queue: str | None,
        decoder: Decoder | None = None,
        search: Sequence[str] = (),
    ) -> None:
        self._client = client
        self._decoder = decoder
        self._search = search
        self.id = task_id
        self.queue = queue
        #: Workflows: the result of the chain step before this one (None if first).
        self.parent: AsyncResult[Any] | None = None

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
        rec = await self._client.waiter.wait(queue, self.id, timeout)
        value: R = value_of(self.id, rec, self._decoder() if self._decoder else None)
        return value

    async def status(self) -> TaskStatus:
        """The task's current state; UNKNOWN when no record exists (or it expired)."""
        return (await self.info()).status

    async def info(self) -> TaskInfo:
        """A snapshot of the task's record (state, attempt, worker, times, error)."""
        queue = await self._resolve_queue()
        rec = await self._client.waiter.fetch(queue, self.id)
        return TaskInfo.from_record(self.id, queue, rec)

    async def progress(self) -> tuple[Any, str] | None:
        """The last ``(value, message)`` the task reported with ``ctx.progress``."""
        queue = await self._resolve_queue()
        rec = await self._client.waiter.fetch(queue, self.id)
        raw = rec.get(b"progress")
        return decode_progress(raw) if raw else None

    async def abort(self) -> bool:
        """Abort the task: a waiting task never starts, a running one is cancelled.

        True only when the task will not run, or its running copy was cancelled
        and recorded ABORTED: for a running task this waits for its outcome
        (normally milliseconds). False when the task had already finished, or
        finished before its worker could cancel it.
        """
        queue = await self._resolve_queue()
        return await self._client.abort(queue, self.id)

    async def abort_chain(self) -> int:
        """Abort this chain step and every step before it (``.parent``) not finished.

        Steps not enqueued yet are marked aborted and never run; returns how many
        steps were stopped. Call it on the handle ``chain.enqueue()`` returned.
        """
        steps: list[AsyncResult[Any]] = []
        step: AsyncResult[Any] | None = self
        while step is not None:
            steps.append(step)
            step = step.parent
        stopped = 0
        # Last to first: a step that finishes meanwhile finds its successor aborted.
        for step in steps:
            queue = await step._resolve_queue()
            if await self._client.abort_step(queue, step.id):
                stopped += 1
        return stopped

    def stream(
        self: AsyncResult[list[T]], *, from_start: bool = True, after: str | None = None
    ) -> ChunkStream[T]:
        """The chunks of a streaming task (an ``async def`` that yields), as they come.

        From the first chunk (a reader that comes late misses nothing), or with
        ``from_start=False`` only those yielded from now on; ``after`` resumes
        after the chunk whose id a previous stream's ``position`` gave. Ends when
        the task has ended; ``await`` the result for its outcome.
        """
        return ChunkStream(self, from_start, after)

    async def _resolve_queue(self) -> str:
        if self.queue is None:
            self.queue = await self._client.find_queue(self.id, self._search)
        return self.queue


class FinishedResult(AsyncResult[R]):
    """The handle eager mode returns: the task already ran here, its record is held.

    Nothing is read from Redis: ``await``, ``status()`` and ``info()`` answer
    from the record the inline run produced.
    """

    __slots__ = ("record",)

    def __init__(
        self,
        client: Client,
        task_id: str,
        queue: str,
        decoder: Decoder | None,
        record: Record,
    ) -> None:
        super().__init__(client, task_id, queue, decoder)
        self.record = record

    async def get(self, timeout: float | None = None) -> R:  # noqa: ASYNC109
        value: R = value_of(self.id, self.record, self._decoder() if self._decoder else None)
        return value

    async def info(self) -> TaskInfo:
        return TaskInfo.from_record(self.id, self.queue, self.record)

    async def progress(self) -> tuple[Any, str] | None:
        return None

    async def abort(self) -> bool:
        return False  # it has finished

    def stream(
        self: AsyncResult[list[T]], *, from_start: bool = True, after: str | None = None
    ) -> ChunkStream[T]:
        """A streaming task's chunks, from its held result (eager mode keeps them all)."""
        return _HeldChunks(self, from_start, after)


class ChunkStream(Generic[T]):
    """An async iterator over a streaming task's chunks; ``position`` is where it is.

    Chunks live in a capped Redis stream under ids ``<attempt>-<n>``, so a
    reader that stops can resume with ``result.stream(after=stream.position)``
    and gets every later chunk once. A retried task streams again from its
    first chunk, under its new attempt number.
    """

    __slots__ = ("_buffer", "_decoder", "_done", "_from_start", "_result", "position")

    def __init__(self, result: AsyncResult[Any], from_start: bool, after: str | None) -> None:
        self._result = result
        self._from_start = from_start
        self._done = False
        self._buffer: collections.deque[tuple[str, bytes]] = collections.deque()
        self._decoder: msgspec.msgpack.Decoder[Any] | None = None
        #: The id of the last chunk yielded (None before the first).
        self.position: str | None = after

    def __aiter__(self) -> ChunkStream[T]:
        return self

    async def __anext__(self) -> T:
        chunk = await self._next()
        if chunk is None:
            raise StopAsyncIteration
        value: T = self._chunk_decoder().decode(chunk)
        return value

    def _chunk_decoder(self) -> msgspec.msgpack.Decoder[Any]:
        if self._decoder is None:
            made = self._result._decoder() if self._result._decoder else None
            args = typing.get_args(made.type) if made is not None else ()
            self._decoder = msgspec.msgpack.Decoder(args[0] if args else Any)
        return self._decoder

    async def _next(self) -> bytes | None:
        if self._buffer:
            entry_id, chunk = self._buffer.popleft()
            self.position = entry_id
            return chunk
        result = self._result
        queue = await result._resolve_queue()
        broker = result._client.broker
        if self.position is None:
            self.position = "0-0"
            if not self._from_start:
                self.position = await broker.last_chunk_id(queue, result.id)
        while True:
            entries = await broker.read_chunks(queue, result.id, self.position, None)
            if not entries and not self._done:
                entries = await broker.read_chunks(queue, result.id, self.position, _CHUNK_WAIT_MS)
            if entries:
                self._buffer.extend(entries)
                entry_id, chunk = self._buffer.popleft()
                self.position = entry_id
                return chunk
            if self._done:
                return None
            # Nothing new for a while: has the task ended? Its chunks were all
            # written before its outcome, so one more read finds any left.
            self._done = (await result.status()).is_final


class _HeldChunks(ChunkStream[T]):
    """The chunks of a task that ran in eager mode: its value is the list of them."""

    __slots__ = ()

    async def _next(self) -> bytes | None:
        if not self._done:
            self._done = True
            record: Record = getattr(self._result, "record", {})
            attempt = record.get(b"attempt", b"1").decode()
            held = record.get(b"result")
            chunks = msgspec.msgpack.decode(held, type=list[msgspec.Raw]) if held else []
            skip = -1
            if self.position is not None:
                skip = int(self.position.rpartition("-")[2])
            elif not self._from_start:
                skip = len(chunks) - 1  # only chunks yielded from now on: none
            self._buffer.extend(
                (f"{attempt}-{i}", bytes(chunk)) for i, chunk in enumerate(chunks) if i > skip
            )
        if not self._buffer:
            return None
        entry_id, chunk = self._buffer.popleft()
        self.position = entry_id
        return chunk
