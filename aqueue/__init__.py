"""aqueue: an asyncio-native distributed task queue on Redis streams.

::

    app = aqueue.App("redis://localhost:6379/0")

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    result = await add.enqueue(1, 2)   # AsyncResult[int]
    assert await result == 3

Run workers with ``aqueue worker module:app``.
"""

from ._version import __version__
from .app import App
from .core.config import Settings
from .core.context import Context
from .core.errors import (
    AqueueError,
    ConfigError,
    ConnectionFailed,
    EnqueueError,
    PayloadTooLarge,
    ResultTimeout,
    Retry,
    SerializationError,
    TaskAborted,
    TaskDead,
    TaskExpired,
    TaskFailed,
    UnknownTask,
    WorkerCrashed,
)
from .core.records import TaskInfo
from .core.status import TaskStatus
from .result import AsyncResult
from .runtime.worker import Worker
from .sync import SyncResult
from .task import Task

__all__ = [
    "App",
    "AqueueError",
    "AsyncResult",
    "ConfigError",
    "ConnectionFailed",
    "Context",
    "EnqueueError",
    "PayloadTooLarge",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "Settings",
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
    "__version__",
]
