"""Group commit: concurrent calls share round trips, a lone call waits for nothing.

The first caller for a key sends its item at once. Callers that arrive while
that call is in flight queue up, and as soon as it returns they go out
together in one call, and so on. Under no contention this costs no extra
event-loop hops; under contention the batch size adapts to the round-trip time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Out = TypeVar("Out")


class _Lane(Generic[Item, Out]):
    __slots__ = ("busy", "futures", "items")

    def __init__(self) -> None:
        self.busy = False
        self.items: list[Item] = []
        self.futures: list[asyncio.Future[Out]] = []


class Coalescer(Generic[Key, Item, Out]):
    """Batches ``submit(key, item)`` calls into ``send(key, items) -> outputs``."""

    def __init__(self, send: Callable[[Key, list[Item]], Awaitable[list[Out]]]) -> None:
        self._send = send
        self._lanes: dict[Key, _Lane[Item, Out]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Key, item: Item) -> Out:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        if lane.busy:
            future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
            lane.items.append(item)
            lane.futures.append(future)
            return await future
        lane.busy = True
        try:
            (output,) = await self._send(key, [item])
        finally:
            self._next(key, lane)
        return output

    def alone(self, key: Key) -> bool:
        """Whether no call for ``key`` is in flight. If so, the caller's is now the
        one: it sends its item its own way (a shorter path than ``send``), then
        calls :meth:`done`, and callers that arrive meanwhile queue up as usual."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        if lane.busy:
            return False
        lane.busy = True
        return True

    def done(self, key: Key) -> None:
        """The end of a call begun by :meth:`alone`: the callers that queued up go out."""
        self._next(key, self._lanes[key])

    def _next(self, key: Key, lane: _Lane[Item, Out]) -> None:
        if not lane.items:
            lane.busy = False
            return
        items, futures = lane.items, lane.futures
        lane.items, lane.futures = [], []
        task = asyncio.create_task(self._send_batch(key, lane, items, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(
        self,
        key: Key,
        lane: _Lane[Item, Out],
        items: list[Item],
        futures: list[asyncio.Future[Out]],
    ) -> None:
        try:
            outputs = await self._send(key, items)
        except BaseException as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for future, output in zip(futures, outputs, strict=True):
                if not future.done():
                    future.set_result(output)
        finally:
            self._next(key, lane)
