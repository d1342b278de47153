"""aqueue's test kit: pytest fixtures, a worker that runs until idle, a private Redis.

pytest loads :mod:`aqueue.testing.plugin` by itself (entry point
``pytest11``); its fixtures are ``aqueue_redis``, ``aqueue_app`` and
``aqueue_worker``. See ``docs/testing.md``.
"""

from .server import RedisServer
from .worker import EnqueuedTask, FinishedTask, TestWorker, WorkStuck

__all__ = ["EnqueuedTask", "FinishedTask", "RedisServer", "TestWorker", "WorkStuck"]
