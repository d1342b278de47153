"""aqueue: an asyncio-native distributed task queue on Redis streams.

::

    app = aqueue.App("redis://localhost:6379/0")

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    result = await add.enqueue(1, 2)   # AsyncResult[int]
    assert await result == 3

    # Workflows: aqueue.chain(add.s(1, 2), double), aqueue.group(...),
    # aqueue.chord(aqueue.group(...), total); see docs/workflows.md.

Run workers with ``aqueue worker module:app``.
"""

from ._version import __version__
from .app import App
from .canvas import Chain, Signature, chain
from .core.config import Settings
from .core.context import Context
from .core.errors import (
    AqueueError,
    ConfigError,
    ConnectionFailed,
    EnqueueError,
    PayloadTooLarge,
    ResultTimeout,
    ResultTooLarge,
    Retry,
    SerializationError,
    TaskAborted,
    TaskDead,
    TaskExpired,
    TaskFailed,
    UnknownTask,
    WorkerCrashed,
)
from .core.events import Event
from .core.hooks import JobInfo, Middleware, WorkerInfo
from .core.records import TaskInfo
from .core.status import TaskStatus
from .groups import Chord, Group, GroupResult, chord, group
from .inline import install_inline_runner as _install_inline_runner
from .result import AsyncResult
from .runtime.eager import run_inline as _run_inline
from .runtime.worker import Worker
from .sync import SyncResult
from .task import Task

# Eager mode (``app.eager()``) runs tasks with the runtime's executor; the client
# side only holds the slot, so it never imports the runtime.
_install_inline_runner(_run_inline)

__all__ = [
    "App",
    "AqueueError",
    "AsyncResult",
    "Chain",
    "Chord",
    "ConfigError",
    "ConnectionFailed",
    "Context",
    "EnqueueError",
    "Event",
    "Group",
    "GroupResult",
    "JobInfo",
    "Middleware",
    "PayloadTooLarge",
    "ResultTimeout",
    "ResultTooLarge",
    "Retry",
    "SerializationError",
    "Settings",
    "Signature",
    "SyncResult",
    "Task",
    "TaskAborted",
    "TaskDead",
    "TaskExpired",
    "TaskFailed",
    "TaskInfo",
    "TaskStatus",
    "UnknownTask",
    "Worker",
    "WorkerCrashed",
    "WorkerInfo",
    "__version__",
    "chain",
    "chord",
    "group",
]
