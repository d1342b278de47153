"""Small parts of the worker runtime: task slots, counters, outage logging, backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import msgspec

from .._redis.connection import is_out_of_memory
from ..core.status import TaskStatus

__all__ = ["Backoff", "Capacity", "Outage", "WorkerStats"]

# Everything a worker says goes to one logger, which users filter on.
logger = logging.getLogger("aqueue.worker")


class Capacity:
    """A bounded pool of task slots that can be taken several at a time."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._urgent = 0
        #: Waiters woken by a release that have not run yet: the slot is theirs.
        self._woken = 0

    async def reserve(self, most: int, urgent: bool = False) -> int:
        """Wait for at least one free slot, then take up to ``most``.

        An urgent caller (reclaiming stalled work) goes before every other
        waiter and newcomer: a fetch loop takes its slots back right after each
        empty blocking read, and would otherwise starve it for ever.
        """
        if urgent:
            self._urgent += 1
        # First come, first served: a newcomer queues behind the waiters, else a
        # loop that releases its slots and reserves again at once (a fetch loop
        # after an empty read) takes them back for ever and the others starve
        # (with one slot and two queues, the second queue never ran).
        woken = False
        try:
            while (
                self.free <= 0
                or (self._urgent and not urgent)
                or ((self._waiters or self._woken) and not woken and not urgent)
            ):
                waiter = asyncio.get_running_loop().create_future()
                if urgent:
                    self._waiters.appendleft(waiter)
                else:
                    self._waiters.append(waiter)
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        self._woken -= 1
                        self.release(0)  # woken, then cancelled: wake the next one
                    raise
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                self._woken -= 1
                woken = True
            taken = min(self.free, most)
            self.free -= taken
            if self.free > 0 and not urgent:
                self.release(0)  # slots left: the next waiter may take them
        finally:
            if urgent:
                self._urgent -= 1
                self.release(0)  # let the next waiter see what is left
        return taken

    def try_reserve(self, most: int) -> int:
        taken = max(0, min(self.free, most))
        self.free -= taken
        return taken

    def release(self, n: int = 1) -> None:
        self.free += n
        while self._waiters and self.free > 0:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                break

    @property
    def busy(self) -> int:
        return self.total - self.free


class WorkerStats(msgspec.Struct):
    """Counters since the worker started."""

    started_at: float = msgspec.field(default_factory=time.time)
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0
    aborted: int = 0
    reclaimed: int = 0
    fenced: int = 0
    handed_back: int = 0

    def count(self, outcome: TaskStatus) -> None:
        """Count one recorded outcome."""
        if outcome is TaskStatus.SUCCEEDED:
            self.succeeded += 1
        elif outcome is TaskStatus.FAILED:
            self.failed += 1
        elif outcome is TaskStatus.RETRYING:
            self.retried += 1
        elif outcome is TaskStatus.DEAD:
            self.dead += 1
        elif outcome is TaskStatus.EXPIRED:
            self.expired += 1
        elif outcome is TaskStatus.ABORTED:
            self.aborted += 1

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed + self.retried + self.dead + self.expired + self.aborted


class Outage:
    """What a worker's loops share about Redis being away: one line when it goes,
    one when it is back, however many loops notice."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.failing: set[str] = set()
        self.since: float | None = None
        self.out_of_memory = False

    def failed(self, doing: str, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.out_of_memory = is_out_of_memory(exc)
            if self.out_of_memory:
                logger.warning(
                    "Redis at %s is out of memory (over maxmemory with noeviction: it refuses "
                    "writes) while %s; every loop of this worker backs off and retries until "
                    "memory is freed, and outcomes are kept until they can be recorded",
                    self.where,
                    doing,
                )
            else:
                logger.warning(
                    "lost the connection to Redis at %s while %s (%s); reconnecting with backoff",
                    self.where,
                    doing,
                    exc,
                )
        self.failing.add(doing)

    def succeeded(self, doing: str) -> None:
        self.failing.discard(doing)
        if self.since is not None and not self.failing:
            logger.warning(
                "%s Redis at %s after %.1fs",
                "memory freed on" if self.out_of_memory else "reconnected to",
                self.where,
                time.monotonic() - self.since,
            )
            self.since = None


class Backoff:
    """Exponential backoff for one loop; logging goes through the worker's outage."""

    def __init__(self, doing: str, outage: Outage) -> None:
        self.doing = doing
        self.outage = outage
        self.delay = 0.1
        self.failing = False

    async def failed(self, exc: BaseException, sleep: bool = True) -> None:
        self.failing = True
        self.outage.failed(self.doing, exc)
        if sleep:
            await asyncio.sleep(self.delay)
            self.delay = min(self.delay * 2, 5.0)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            self.delay = 0.1
            self.outage.succeeded(self.doing)
