"""Threads of plain ``def`` tasks: they can't be stopped, so they are tracked.

A thread can't be interrupted: a job cancelled (abort, lost lease, shutdown)
or timed out while its thread runs leaves that thread running. The worker
must not run the job's entry again meanwhile, so :class:`TaskThreads` keeps
each call's pool future by stream entry until its thread has returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["GATE_TIMEOUT", "TaskThreads", "ThreadGate"]

#: Longest a thread waits for the worker to let a gated call run (its loop may be busy).
GATE_TIMEOUT = 30.0


class ThreadGate:
    """Holds a call that waited for a free thread until the worker says it may run."""

    __slots__ = ("opened", "run")

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.run = True

    async def wait(
        self,
        keeper: Callable[[bool], Awaitable[bool]],
        begun: asyncio.Future[None],
        future: asyncio.Future[Any],
    ) -> bool:
        """Every thread is taken: ``keeper(False)`` shows the task queued until a
        thread begins it, ``keeper(True)`` then marks it running. Returns False
        when it was aborted meanwhile: the thread returns without running it."""
        try:
            await keeper(False)
            await asyncio.wait([begun, future], return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                self.run = await keeper(True)
        except asyncio.CancelledError:
            self.run = False
            future.cancel()  # withdraws the call if no thread has begun it
            raise
        finally:
            self.opened.set()
        if not self.run:
            await asyncio.wait([future])
        return self.run


class TaskThreads:
    """The worker's thread pool for ``def`` tasks, with each call known by its entry."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self.pool = pool
        self._calls: dict[str, concurrent.futures.Future[Any]] = {}

    def saturated(self) -> bool:
        """True when every thread is taken: a call submitted now waits in line."""
        busy = sum(1 for thread in self._calls.values() if not thread.done())
        return busy >= self.pool._max_workers

    def start(
        self, entry_id: str, call: Callable[[], Any], gate: ThreadGate | None = None
    ) -> tuple[asyncio.Future[None], asyncio.Future[Any]]:
        """Submit ``call``: (set once a thread begins it, its outcome).

        Cancelling the outcome withdraws the call only if no thread has begun
        it (a thread already running it runs on). With every thread busy the
        call waits in the pool's line; its timeout counts only from ``begun``.
        """
        loop = asyncio.get_running_loop()
        begun: asyncio.Future[None] = loop.create_future()

        def mark_begun() -> None:
            if not begun.done():
                begun.set_result(None)

        def run() -> Any:
            with contextlib.suppress(RuntimeError):  # the worker's loop is closed
                loop.call_soon_threadsafe(mark_begun)
            if gate is not None:
                # The worker marks it running (or finds it aborted) before it runs.
                gate.opened.wait(GATE_TIMEOUT)
                if not gate.run:
                    return None
            return call()

        thread = self.pool.submit(run)
        self._calls[entry_id] = thread
        thread.add_done_callback(functools.partial(self._ended, loop, entry_id))
        return begun, asyncio.wrap_future(thread)

    def running(self, entry_id: str) -> bool:
        """True while a thread runs (or may still begin) the job of ``entry_id``."""
        thread = self._calls.get(entry_id)
        if thread is None:
            return False
        if thread.done():
            del self._calls[entry_id]
            return False
        return True

    def withdraw(self, entry_id: str) -> bool:
        """Take back a job's call that no thread has begun yet.

        Returns True when it was withdrawn (or there was none): the job can be
        cancelled and handed back. False: a thread runs it now and will run on.
        """
        thread = self._calls.get(entry_id)
        if thread is None or thread.done() or thread.cancel():
            self._calls.pop(entry_id, None)
            return True
        return False

    async def until_ended(self, entry_id: str) -> None:
        """Wait for the thread of ``entry_id`` to return (at once if none runs it)."""
        thread = self._calls.get(entry_id)
        if thread is not None:
            # asyncio.wait: the call's own exception is of no interest here.
            await asyncio.wait([asyncio.wrap_future(thread)])
            self._calls.pop(entry_id, None)

    def _ended(
        self,
        loop: asyncio.AbstractEventLoop,
        entry_id: str,
        thread: concurrent.futures.Future[Any],
    ) -> None:
        """Forget a call once its thread returned (runs in that thread, or at once
        if the call was withdrawn)."""

        def forget() -> None:
            if self._calls.get(entry_id) is thread:
                del self._calls[entry_id]

        with contextlib.suppress(RuntimeError):  # the worker's loop is already closed
            loop.call_soon_threadsafe(forget)
