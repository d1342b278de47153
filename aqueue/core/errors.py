"""Everything aqueue raises derives from :class:`AqueueError`.

::

    AqueueError
    ├── ConfigError              invalid App/worker configuration
    ├── ConnectionFailed         Redis unreachable (also a ConnectionError)
    ├── EnqueueError             the producer refused a message; nothing was enqueued
    │   ├── SerializationError   an argument msgspec cannot encode
    │   ├── PayloadTooLarge      the encoded message is over ``max_payload_bytes``
    │   └── UnknownTask          no task of that name is registered
    ├── ResultTimeout            ``AsyncResult.get(timeout=...)`` ran out (also a TimeoutError)
    ├── ResultTooLarge           a task's value is over ``max_result_bytes``: the task fails with it
    ├── WorkerCrashed            a worker stopped on an internal error, not because it was asked to
    ├── TaskFailed               the task ended without a value; carries the remote error as data
    │   ├── TaskAborted          it was aborted before or while running
    │   ├── TaskExpired          its ``expires`` passed before a worker started it
    │   └── TaskDead             it was moved to the dead-letter stream
    └── Retry                    raised *inside* a task to ask for another attempt

Remote exceptions are never unpickled: a failure travels as its type name,
message and traceback text, and is raised on the caller as :class:`TaskFailed`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

__all__ = [
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
    "did_you_mean",
]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` naming the closest of ``choices``, or ``""``.

    Every message about an unknown name (option, task, setting) ends with it.
    """
    import difflib  # only a mistake needs it: a worker process never loads it

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class AqueueError(Exception):
    """Root of every exception aqueue raises itself."""


class ConfigError(AqueueError, ValueError):
    """A configuration value is missing, malformed or unknown."""


class ConnectionFailed(AqueueError, ConnectionError):
    """Redis could not be reached; the operation did not take effect."""


class EnqueueError(AqueueError):
    """The message was refused before it reached Redis; nothing was enqueued."""


class SerializationError(EnqueueError, TypeError):
    """An argument (or a return value) cannot be encoded with msgspec."""


class PayloadTooLarge(EnqueueError):
    """The encoded message is larger than the configured ``max_payload_bytes``."""


class UnknownTask(EnqueueError, LookupError):
    """No task is registered under this name."""


class ResultTimeout(AqueueError, TimeoutError):
    """The task did not finish within the time the caller was willing to wait."""


class ResultTooLarge(AqueueError):
    """A task returned a value whose encoding is over ``max_result_bytes``.

    The task fails with this error (its type name and message travel as
    data, raised on the caller as :class:`TaskFailed`): the value is not stored.
    """


class WorkerCrashed(AqueueError):
    """A worker loop failed on an internal error; the worker shut down because of it.

    ``Worker.run()`` raises it after the graceful shutdown, so ``aqueue worker``
    exits non-zero and a supervisor (``--processes``, systemd, Kubernetes)
    restarts the process.
    """


class TaskFailed(AqueueError):
    """The task ended without a value.

    ``exc_type`` is the remote exception's qualified type name, ``message`` its
    text and ``traceback`` the formatted remote traceback (may be empty).
    """

    def __init__(
        self,
        task_id: str,
        exc_type: str,
        message: str,
        traceback: str = "",
    ) -> None:
        self.task_id = task_id
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"task {task_id} failed: {exc_type}: {message}")

    def __reduce__(self) -> tuple[type[TaskFailed], tuple[str, str, str, str]]:
        return (type(self), (self.task_id, self.exc_type, self.message, self.traceback))


class TaskAborted(TaskFailed):
    """The task was aborted: it never started, or it was cancelled while running."""


class TaskExpired(TaskFailed):
    """The task's ``expires`` time passed before a worker could start it."""


class TaskDead(TaskFailed):
    """The message was moved to the dead-letter stream (see ``aqueue dead list``)."""


class Retry(AqueueError):
    """Raise inside a task to run it again later.

    ``delay`` overrides the task's backoff for this retry. The retry counts
    against the task's ``retries`` limit; once that is used up the task fails
    with this exception's message.
    """

    def __init__(self, delay: float | timedelta | None = None, message: str = "") -> None:
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        self.delay = delay
        super().__init__(message or "retry requested")
