"""Waiting for results: one subscription per process, a poll behind it.

Every AsyncResult of one Client waits through one :class:`ResultWaiter`:
one pub/sub connection (one channel per queue) carries the completion
pushes that ``finish.lua`` publishes. A waiter registers, subscribes, *then*
reads the task's record, so a completion published in between is not
missed; small results ride in the push itself, so most waits need no extra
read. A slow poll backs the push up across reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from typing import Any

from ._redis.broker import Broker
from ._redis.connection import REDIS_ERRORS
from ._redis.pubsub import Subscription
from .core.batching import Coalescer
from .core.errors import ResultTimeout
from .core.frames import parse_push
from .core.records import status_of
from .core.status import TaskStatus

__all__ = ["ResultWaiter"]

logger = logging.getLogger(__name__)

_SUCCEEDED = TaskStatus.SUCCEEDED.value.encode()

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
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._poll_due: list[tuple[float, float, _Key]] = []
        self._poll_wakeup = asyncio.Event()
        self._reads: Coalescer[str, str, dict[bytes, bytes]] = Coalescer(self._read_records)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        #: Queues whose channel was subscribed again after a gap, not yet re-checked.
        self._stale: set[str] = set()
        #: Queues being re-checked now; a re-check asked for meanwhile runs after.
        self._rechecking: set[str] = set()
        self._recheck_again: set[str] = set()

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
                rec = await self._fetch_cancellable(queue, task_id)
                if status_of(rec).is_final:
                    return rec
                self._schedule_poll(key, self._poll_interval)
                # The deadline again: redis-py swallows the cancellation that enforces
                # it when that lands while a connection is being made (first use).
                async with asyncio.timeout_at(deadline):
                    return await future
        except TimeoutError:
            rec = await self._fetch_cancellable(queue, task_id)
            if status_of(rec).is_final:
                return rec
            raise ResultTimeout(
                f"task {task_id} did not finish within {timeout}s (status: {status_of(rec).value})"
            ) from None
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
                if not waiters:
                    del self._waiters[key]

    async def _fetch_cancellable(self, queue: str, task_id: str) -> dict[bytes, bytes]:
        """:meth:`fetch` in a task of its own, so cancelling the caller always works.

        redis-py swallows a cancellation that lands while it (re)connects; a
        waiter whose cancel was swallowed there went on to wait for a push
        that never came, for ever (1 of 15,000 cancelled ``get()`` calls after a
        round of timeouts had dropped connections). The caller now waits on a
        plain task, whose cancellation can't be lost; the read itself finishes
        alone, which also spares the connection a cancel mid-reply.
        """
        read = asyncio.create_task(self.fetch(queue, task_id))
        self._tasks.add(read)
        read.add_done_callback(self._tasks.discard)
        read.add_done_callback(_settle)
        return await asyncio.shield(read)

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
            if status_of(rec).is_final:
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
                except REDIS_ERRORS as exc:
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
                    if self._subscription is None:
                        self._subscription = self._broker.subscription()
                    await self._subscription.subscribe(channel)
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
                assert self._subscription is not None
                msg = await self._subscription.next(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any one failure
                logger.warning("result subscription lost (%r); reconnecting", exc)
                for event in self._subscribed.values():
                    event.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                try:
                    assert self._subscription is not None
                    await self._subscription.reconnect()
                except Exception:
                    continue
                self._recheck_all()  # pushes sent while we were away are lost
                continue
            backoff = 0.05
            if msg is None:
                continue
            kind = msg.kind
            if kind == "gap":
                # redis-py reconnected and subscribed again by itself: pushes sent
                # meanwhile are lost. Once each channel is confirmed again, every
                # waiter of its queue is read again.
                for stale, event in self._subscribed.items():
                    event.clear()
                    self._stale.add(stale)
                continue
            queue = self._channels.get(msg.channel)
            if queue is None:
                continue
            if kind == "subscribe":
                confirmed = self._subscribed.get(queue)
                if confirmed is not None and not confirmed.is_set():
                    confirmed.set()
                if queue in self._stale:
                    self._stale.discard(queue)
                    self._recheck(queue)
            elif kind == "message":
                try:
                    self._pushed(queue, msg.data)
                except Exception:
                    logger.exception("unreadable completion push on %s; polling instead", queue)
                    self._recheck_all()

    def _pushed(self, queue: str, data: bytes) -> None:
        """Resolve waiters from a completion push; read records the push left out."""
        to_read: list[str] = []
        if data[:1] == b"\0":
            for task_id, state, body in parse_push(data):
                key = (queue, task_id)
                if key not in self._waiters:
                    continue
                if body:
                    field = b"result" if state == _SUCCEEDED else b"error"
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
        except REDIS_ERRORS as exc:
            logger.debug("reading pushed results failed (%s); the poll will retry", exc)

    def _recheck_all(self) -> None:
        for queue in {queue for queue, _ in self._waiters}:
            self._recheck(queue)

    def _recheck(self, queue: str) -> None:
        """Read the record of every waiter of ``queue`` now (after a gap in the pushes).

        Re-checks of one queue never overlap: one asked for while another runs
        runs once after it, however many gaps came meanwhile.
        """
        if queue in self._rechecking:
            self._recheck_again.add(queue)
            return
        self._rechecking.add(queue)
        self._spawn(self._recheck_queue(queue))

    async def _recheck_queue(self, queue: str) -> None:
        backoff = 0.05
        try:
            while not self._closed:
                self._recheck_again.discard(queue)
                ids = [task_id for q, task_id in self._waiters if q == queue]
                try:
                    await self._check(queue, ids)
                except REDIS_ERRORS as exc:
                    # Redis is away too: try again soon (each waiter's poll goes on).
                    logger.debug("re-checking waiters after a gap failed (%s)", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._poll_interval)
                    continue
                if queue not in self._recheck_again:
                    return
        finally:
            self._rechecking.discard(queue)

    async def close(self) -> None:
        self._closed = True
        for task in (self._reader, self._poller, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._reader, self._poller):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._subscription is not None:
            await self._subscription.close()
        self._subscription = None


def _settle(task: asyncio.Task[Any]) -> None:
    """Drop a finished background task, retrieving its error (its caller may be gone)."""
    if not task.cancelled():
        task.exception()
