"""The loops the dashboard runs beside its pages.

The throughput sampler, the completion listener and the event stream's
read-back each run as one asyncio task, started with the app and stopped with
it; :class:`BackgroundLoop` is that start and stop, written once.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["BackgroundLoop"]


class BackgroundLoop:
    """One background task: :meth:`start` runs :meth:`_run` (again after
    :meth:`stop`), :meth:`stop` cancels it and waits for it to end."""

    #: The asyncio task's name (it shows in debuggers and task dumps).
    task_name = "aqueue-dashboard"

    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop, unless it runs already."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
