"""What a running task can learn about itself (Celery's ``bind=True``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Context"]


@dataclass(slots=True)
class Context:
    """Handed to a task that declares a parameter annotated ``aqueue.Context``.

    That parameter is not part of the task's enqueue signature: callers never
    pass it, the worker fills it in.
    """

    id: str
    task: str
    queue: str
    attempt: int
    """1 for the first run; counts retries and redeliveries after a crash."""
    enqueued_at: float
    """Epoch seconds."""
    deadline: float | None
    """Epoch seconds by which the task must finish (its timeout), if any."""
    state: dict[str, Any] = field(default_factory=dict)
    """Resources the worker's lifespan made (DB pools, HTTP clients, ...)."""
    _report: Callable[[str, Any, str], Coroutine[Any, Any, None]] | None = field(
        default=None, repr=False
    )
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    async def progress(self, value: Any, message: str = "") -> None:
        """Publish progress (any msgspec-encodable value) for ``AsyncResult.progress()``."""
        if self._report is not None:
            await self._report(self.id, value, message)

    def progress_sync(self, value: Any, message: str = "", timeout: float = 10.0) -> None:
        """:meth:`progress` for a plain ``def`` task: call it from the task's thread.

        Blocks until the value is stored (at most ``timeout`` seconds).
        """
        if self._report is None or self._loop is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("in an async def task, use `await ctx.progress(...)`")
        future = asyncio.run_coroutine_threadsafe(self._report(self.id, value, message), self._loop)
        future.result(timeout)
