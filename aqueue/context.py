"""What a running task can learn about itself (Celery's ``bind=True``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
    _report: Callable[[str, Any, str], Awaitable[None]] | None = field(default=None, repr=False)

    async def progress(self, value: Any, message: str = "") -> None:
        """Publish progress (any msgspec-encodable value) for ``AsyncResult.progress()``."""
        if self._report is not None:
            await self._report(self.id, value, message)
