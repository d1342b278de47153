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

import importlib as _importlib
import typing as _typing

from ._version import __version__
from .inline import install_inline_runner as _install_inline_runner

if _typing.TYPE_CHECKING:
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
    from .core.protocol import OutgoingMessage
    from .core.records import Record, TaskInfo
    from .core.status import TaskStatus
    from .groups import Chord, Group, GroupResult, chord, group
    from .result import AsyncResult
    from .runtime.worker import Worker
    from .sync import SyncResult
    from .task import Task

#: Where each public name lives. A name's module is imported when the name is
#: first used, so a process loads only what it touches (a worker process no
#: workflow groups, a web app no worker runtime).
_HOMES = {
    "App": "app",
    "Chain": "canvas",
    "Signature": "canvas",
    "chain": "canvas",
    "Settings": "core.config",
    "Context": "core.context",
    "Event": "core.events",
    "JobInfo": "core.hooks",
    "Middleware": "core.hooks",
    "WorkerInfo": "core.hooks",
    "TaskInfo": "core.records",
    "TaskStatus": "core.status",
    "Chord": "groups",
    "Group": "groups",
    "GroupResult": "groups",
    "chord": "groups",
    "group": "groups",
    "AsyncResult": "result",
    "Worker": "runtime.worker",
    "SyncResult": "sync",
    "Task": "task",
    **dict.fromkeys(
        (
            "AqueueError",
            "ConfigError",
            "ConnectionFailed",
            "EnqueueError",
            "PayloadTooLarge",
            "ResultTimeout",
            "ResultTooLarge",
            "Retry",
            "SerializationError",
            "TaskAborted",
            "TaskDead",
            "TaskExpired",
            "TaskFailed",
            "UnknownTask",
            "WorkerCrashed",
        ),
        "core.errors",
    ),
}


def __getattr__(name: str) -> _typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aqueue' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # found once; later uses are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


async def _run_inline(task: _typing.Any, queue: str, message: "OutgoingMessage") -> "Record":
    # The runtime's executor, imported by the first eager run, not by `import aqueue`.
    from .runtime.eager import run_inline

    return await run_inline(task, queue, message)


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
