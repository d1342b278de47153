"""Streaming tasks on the worker: each yielded chunk is stored as it comes.

An ``async def`` generator runs on the event loop; a ``def`` generator runs in
a worker thread and hands each chunk to the loop, in order. Either way every
chunk goes to the task's chunk stream through the worker's :data:`ChunkSink`
as soon as it is yielded, and the task's value is the list of all chunks.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from ..core.protocol import encode_value
from .threads import TaskThreads

__all__ = ["ChunkSink", "StreamCall", "relay_chunks"]

#: How a streaming task's chunk reaches Redis: (queue, task id, attempt, n from 1, chunk).
ChunkSink = Callable[[str, str, int, int, bytes], Coroutine[Any, Any, None]]

#: Put after a ``def`` generator's last chunk.
_END_OF_STREAM = object()


class StreamCall:
    """One run of a streaming task: where its chunks go and under which ids."""

    __slots__ = ("args", "attempt", "entry_id", "fn", "kwargs", "queue", "task_id")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        queue: str,
        task_id: str,
        attempt: int,
        entry_id: str,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.queue = queue
        self.task_id = task_id
        self.attempt = attempt
        self.entry_id = entry_id


async def relay_chunks(call: StreamCall, emit: ChunkSink | None, threads: TaskThreads) -> list[Any]:
    """Run the generator, storing each chunk as it is yielded; returns them all."""
    chunks: list[Any] = []

    async def store(chunk: Any) -> None:
        chunks.append(chunk)
        if emit is not None:
            await emit(call.queue, call.task_id, call.attempt, len(chunks), encode_value(chunk))

    if inspect.isasyncgenfunction(call.fn):
        async for chunk in call.fn(*call.args, **call.kwargs):
            await store(chunk)
    else:
        await _from_thread(call, threads, store)
    return chunks


async def _from_thread(
    call: StreamCall, threads: TaskThreads, store: Callable[[Any], Coroutine[Any, Any, None]]
) -> None:
    """A ``def`` generator in its thread; each chunk crosses to the loop in order.

    The thread can't be stopped, but a generator can: once the job is
    cancelled (abort, timeout, shutdown), the thread closes it at its next
    ``yield``.
    """
    loop = asyncio.get_running_loop()
    crossing: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        generator = call.fn(*call.args, **call.kwargs)
        try:
            for chunk in generator:
                loop.call_soon_threadsafe(crossing.put_nowait, chunk)
                if stop.is_set():
                    break
        finally:
            generator.close()

    _begun, future = threads.start(
        call.entry_id, functools.partial(contextvars.copy_context().run, produce)
    )
    # Runs on the loop after every chunk the thread handed over before it returned.
    future.add_done_callback(lambda _: crossing.put_nowait(_END_OF_STREAM))
    try:
        while (chunk := await crossing.get()) is not _END_OF_STREAM:
            await store(chunk)
        await future  # the generator's own exception, if it raised
    finally:
        stop.set()
