"""Unique tasks that debounce or replace (``unique_mode``).

Plain unique tasks (``unique=True`` or a ``unique_key``) answer a second
enqueue with the live task's handle and drop the new arguments. The two modes
here keep the newest arguments instead, for a task that has not started yet:

- ``"debounce"``: the task starts ``unique_for`` seconds after the *last*
  enqueue of its key, with that enqueue's arguments;
- ``"replace"``: the newest arguments win, the start time (``delay``/``eta``)
  stays the first enqueue's.

Every enqueue in between returns the same task id, so every caller holds the
same handle. A message names its own task id (and may be signed), so Redis
can't rewrite it: when a waiting task holds the key, the script answers with
that id and the message is built again carrying it, then swapped in
atomically if the task is still waiting (``lua/unique.lua``). Once the task
has started, the next enqueue makes a new task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from .core.errors import ConfigError, EnqueueError
from .core.protocol import OutgoingMessage

__all__ = ["UNIQUE_MODES", "UniqueMode", "check_mode", "enqueue_keyed"]

UniqueMode = Literal["debounce", "replace"]
UNIQUE_MODES: tuple[str, ...] = ("debounce", "replace")

#: Rounds before giving up: each lost round means the waiting task started
#: between two of our calls, which needs a task that starts (and a key taken)
#: that often while one enqueue is in flight.
_MAX_ROUNDS = 20


def check_mode(mode: object) -> UniqueMode | None:
    """``mode`` if it is a known unique mode or None; a clear error otherwise."""
    if mode is None:
        return None
    if mode == "debounce":
        return "debounce"
    if mode == "replace":
        return "replace"
    raise ConfigError(f"unique_mode must be 'debounce', 'replace' or None, got {mode!r}")


class KeyedBroker(Protocol):
    """What enqueuing a debounced or replacing message needs of the broker."""

    def enqueue_keyed(
        self, queue: str, message: OutgoingMessage, mode: str, delay_ms: int
    ) -> Awaitable[tuple[str, str]]: ...


async def enqueue_keyed(
    broker: KeyedBroker,
    build: Callable[[str | None], tuple[str, OutgoingMessage]],
    mode: UniqueMode,
    window: float,
) -> str:
    """Enqueue through ``lua/unique.lua``; returns the id of the task that runs it.

    ``build(task_id)`` builds the message (a new id for ``None``); ``window``
    is the debounce time in seconds.
    """
    task_id: str | None = None
    for _ in range(_MAX_ROUNDS):
        queue, message = build(task_id)
        # Debounce waits the window (or the message's own delay, if longer);
        # replace keeps the message's delay or ETA.
        delay_ms = message.delay_ms
        if mode == "debounce":
            delay_ms = max(int(window * 1000), delay_ms)
        status, answer = await broker.enqueue_keyed(queue, message, mode, delay_ms)
        if status == "ok":
            return answer
        task_id = answer if status == "rebuild" else None
    raise EnqueueError(
        f"could not enqueue {message.task_name} with unique_mode={mode!r}: the task "
        f"holding its unique key kept starting under {_MAX_ROUNDS} tries"
    )
