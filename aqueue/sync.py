"""Enqueueing from synchronous code: ``add.delay(1, 2).get(timeout=5)``.

A Django view, a management command or a script has no event loop. Each App
can own one private event loop running in a daemon thread (its Client's
:class:`~aqueue.client.SyncRunner`); ``delay`` sends the enqueue to that
loop and blocks the calling thread until Redis has acknowledged it. The loop
has its own Redis client, made by the same factory as the App's (same
timeouts), and its own result subscription, so it never shares a connection
with an event loop running elsewhere in the process (an ASGI server, a
test), and any number of threads may call ``delay`` and ``get`` at once.
After ``os.fork`` the child starts a fresh loop of its own on first use.

In ``async def`` code, use ``await task.enqueue(...)`` instead: ``delay``
would block the event loop while it waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .client import SyncRunner
from .core.protocol import OutgoingMessage
from .core.records import Record, TaskInfo, value_of
from .core.status import TaskStatus
from .result import Decoder

if TYPE_CHECKING:
    from .client import Client

__all__ = ["FinishedSyncResult", "SyncResult", "SyncRunner", "send", "sync_result"]

R = TypeVar("R")


class SyncResult(Generic[R]):
    """A blocking handle on one task, returned by ``task.delay(...)``."""

    __slots__ = ("_decoder", "_runner", "id", "queue")

    def __init__(
        self,
        runner: SyncRunner,
        task_id: str,
        queue: str,
        decoder: Decoder | None = None,
    ) -> None:
        self._runner = runner
        self._decoder = decoder
        self.id = task_id
        self.queue = queue

    def __repr__(self) -> str:
        return f"<SyncResult {self.id} queue={self.queue!r}>"

    def get(self, timeout: float | None = None) -> R:
        """Block until the task is done; its value, or raise like ``AsyncResult.get``.

        Raises :class:`~aqueue.ResultTimeout` after ``timeout`` seconds and
        :class:`~aqueue.TaskFailed` (or a subclass) when it ended without a value.
        """
        client = self._runner.client

        async def wait() -> dict[bytes, bytes]:
            return await client.waiter.wait(self.queue, self.id, timeout)

        value: R = value_of(
            self.id, self._runner.call(wait()), self._decoder() if self._decoder else None
        )
        return value

    def info(self) -> TaskInfo:
        """A snapshot of the task's record."""
        client = self._runner.client

        async def fetch() -> dict[bytes, bytes]:
            return await client.broker.record(self.queue, self.id)

        return TaskInfo.from_record(self.id, self.queue, self._runner.call(fetch()))

    def status(self) -> TaskStatus:
        return self.info().status

    def ready(self) -> bool:
        """True once the task has finished (whatever the outcome)."""
        return self.status().is_final

    def abort(self) -> bool:
        """Abort the task (as ``AsyncResult.abort``); False when it had already finished."""
        return self._runner.call(self._runner.client.abort(self.queue, self.id))


class FinishedSyncResult(SyncResult[R]):
    """What ``task.delay()`` returns in eager mode: the task already ran here.

    Nothing is read from Redis: ``get()``, ``status()`` and ``info()`` answer
    from the record the inline run produced.
    """

    __slots__ = ("record",)

    def __init__(self, task_id: str, queue: str, decoder: Decoder | None, record: Record) -> None:
        # No runner: every method below answers from the record.
        self._decoder = decoder
        self.id = task_id
        self.queue = queue
        self.record = record

    def get(self, timeout: float | None = None) -> R:
        value: R = value_of(self.id, self.record, self._decoder() if self._decoder else None)
        return value

    def info(self) -> TaskInfo:
        return TaskInfo.from_record(self.id, self.queue, self.record)

    def abort(self) -> bool:
        return False  # it has finished


def send(
    client: Client,
    queue: str,
    message: OutgoingMessage,
    decoder: Decoder | None = None,
) -> SyncResult[Any]:
    """Enqueue an encoded message through the client's private loop; block until acknowledged."""
    runner = client.sync()

    async def enqueue() -> str:
        return await runner.client.broker.enqueue(queue, message)

    return SyncResult(runner, runner.call(enqueue()), queue, decoder)


def sync_result(app: _HasClient, task_id: str, queue: str | None = None) -> SyncResult[Any]:
    """A blocking handle on any task by id (a status view in a Django project).

    Without ``queue``, the queues of the App's registered tasks are searched.
    """
    runner = app.client.sync()
    if queue is None:
        queue = runner.call(runner.client.find_queue(task_id, app.queues))
    return SyncResult(runner, task_id, queue)


class _HasClient(Protocol):
    """What :func:`sync_result` needs of an App."""

    @property
    def client(self) -> Client: ...
    @property
    def queues(self) -> Sequence[str]: ...
