"""Interpreter settings that make a worker process cheaper per task.

Two things, both measured with ``benchmarks/costs.py`` (see benchmarks/README.md):

* :func:`settle_heap`: once the app and the worker are built, everything alive
  is start-up state (modules, classes, the app, the task registry) that lives
  as long as the process. Moving it to the collector's permanent generation
  means the periodic full collections stop walking it again and again. It
  also raises the youngest generation's threshold (``YOUNG_THRESHOLD``): a
  worker holding concurrency + prefetch jobs has ~1,500 young objects alive
  at any moment, all freed by reference counting, yet at Python's default
  (700) the collector walked them every few dozen tasks (about 4,000
  instructions of every task's ~56,000). The ``aqueue worker`` command calls
  it; a program that embeds a Worker may too, since it affects the whole
  process.
* :func:`task_starter`: how a job's asyncio task is created on the worker's
  loop. On Python 3.12 and later its coroutine begins at once, inside the
  call, instead of on the loop's next turn: a coroutine that finishes without
  suspending (a quick task) then never waits in the loop's ready queue at
  all; one that suspends goes on as a normal asyncio task. On Python 3.11 it
  is the loop's own ``create_task``, called directly (``asyncio.create_task``
  looks the running loop up and names the task on every call).
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["TaskStarter", "settle_heap", "task_starter"]

#: Creates (and on Python 3.12+ starts) the asyncio task of one job.
TaskStarter = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


#: Net new container objects between two collections of the youngest generation
#: (Python's default: 700). Cyclic garbage waits at most this many allocations.
YOUNG_THRESHOLD = 5000


def settle_heap() -> None:
    """Collect once, keep what survived out of every later collection, and
    collect the youngest generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def task_starter(loop: asyncio.AbstractEventLoop) -> TaskStarter:
    """Creates the asyncio task of one job on ``loop``: eagerly started where
    Python can (3.12+)."""
    factory = getattr(asyncio, "eager_task_factory", None)
    if factory is None:  # Python 3.11
        return loop.create_task
    start: TaskStarter = functools.partial(factory, loop)
    return start
