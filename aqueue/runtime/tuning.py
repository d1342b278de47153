"""Interpreter settings that make a worker process cheaper per task.

Two things, both measured with ``benchmarks/costs.py`` (see benchmarks/README.md):

* :func:`settle_heap`: once the app and the worker are built, everything alive
  is start-up state (modules, classes, the app, the task registry) that lives
  as long as the process. Moving it to the collector's permanent generation
  means the periodic full collections stop walking it again and again. The
  ``aqueue worker`` command calls it; a program that embeds a Worker may too,
  since it affects the whole process.
* :func:`start_task`: on Python 3.12 and later a task's coroutine begins at
  once, inside the call, instead of on the loop's next turn. A coroutine that
  finishes without suspending (a quick task) then never waits in the loop's
  ready queue at all; one that suspends goes on as a normal asyncio task. On
  Python 3.11 this is ``asyncio.create_task``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["settle_heap", "start_task"]


def settle_heap() -> None:
    """Collect once, then keep what survived out of every later collection."""
    gc.collect()
    gc.freeze()


def _eager_factory() -> Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]:
    factory = getattr(asyncio, "eager_task_factory", None)
    if factory is None:  # Python 3.11
        return asyncio.create_task

    def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = factory(asyncio.get_running_loop(), coro)
        return task

    return start


#: Creates the asyncio task of one job: eagerly started where Python can (3.12+).
start_task = _eager_factory()
