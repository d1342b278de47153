"""aqueue's test kit: pytest fixtures, a worker that runs until idle, a private Redis.

pytest loads :mod:`aqueue.testing.plugin` by itself (entry point
``pytest11``); its fixtures are ``aqueue_redis``, ``aqueue_app``,
``aqueue_worker``, ``aqueue_clock`` and ``aqueue_eager``. See ``docs/testing.md``.
"""

from .clock import ClockError, TestClock
from .server import RedisServer
from .worker import EnqueuedTask, FinishedTask, TestWorker, WorkStuck

__all__ = [
    "ClockError",
    "EnqueuedTask",
    "FinishedTask",
    "RedisServer",
    "TestClock",
    "TestWorker",
    "WorkStuck",
]
