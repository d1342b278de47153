"""Eager mode's switch and slot: ``enqueue()`` runs the task here, without Redis.

``app.eager()`` turns the switch on for one App's Client. The runner itself
(the worker's Executor) lives in the runtime, which this layer must not
import: the package facade, which sits above every layer, installs it with
:func:`install_inline_runner` when ``aqueue`` is imported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .core.errors import ConfigError
from .core.protocol import OutgoingMessage
from .core.records import Record

if TYPE_CHECKING:  # the handles load with the first eager run: the facade imports this module
    from .client import Client
    from .result import FinishedResult
    from .sync import FinishedSyncResult

__all__ = [
    "EagerMode",
    "InlineRunner",
    "install_inline_runner",
    "refuse_in_eager_mode",
    "run_eagerly",
    "run_eagerly_sync",
]


class InlineRunner(Protocol):
    """Runs one message of a task in this process; returns the record a worker would write."""

    async def __call__(self, task: Any, queue: str, message: OutgoingMessage) -> Record: ...


class EagerMode:
    """``app.eager()``: a sync or async context manager; nests."""

    #: What runs the messages (installed once by ``aqueue/__init__.py``).
    runner: ClassVar[InlineRunner | None] = None

    def __init__(self, client: Client) -> None:
        self._client = client

    def __enter__(self) -> EagerMode:
        self._client.eager += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.eager -= 1

    async def __aenter__(self) -> EagerMode:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


def install_inline_runner(runner: InlineRunner) -> None:
    """Set what runs tasks inside ``app.eager()``."""
    EagerMode.runner = runner


async def run_eagerly(task: Any, queue: str, message: OutgoingMessage) -> FinishedResult[Any]:
    """Run the message of ``task`` (a :class:`~aqueue.task.Task`) now; a finished handle."""
    runner = EagerMode.runner
    if runner is None:
        raise ConfigError("eager mode needs aqueue's runtime: `import aqueue` first")
    record = await runner(task, queue, message)
    from .result import FinishedResult

    return FinishedResult(task.client, message.task_id, queue, task.result_decoder, record)


def run_eagerly_sync(task: Any, queue: str, message: OutgoingMessage) -> FinishedSyncResult[Any]:
    """``task.delay()`` in eager mode: run the message now, from synchronous code.

    The run gets an event loop of its own (a thread's, when this thread
    already runs one: a ``def`` called from ``async def`` code), so a Django
    view or a script under ``app.eager()`` needs no Redis and no loop.
    """
    runner = EagerMode.runner
    if runner is None:
        raise ConfigError("eager mode needs aqueue's runtime: `import aqueue` first")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        record = asyncio.run(runner(task, queue, message))
    else:
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="aqueue-eager-delay"
        ) as thread:
            record = thread.submit(asyncio.run, runner(task, queue, message)).result()
    from .sync import FinishedSyncResult

    return FinishedSyncResult(message.task_id, queue, task.result_decoder, record)


def refuse_in_eager_mode(what: str, eager: int) -> None:
    """Chains and chords are handed on by workers: eager mode does not run them."""
    if eager:
        raise ConfigError(
            f"{what} can't run in eager mode: its steps are handed on by workers. "
            "Test workflows with the Redis-backed fixtures (aqueue_worker.run_until_idle())"
        )
