"""A task's attempts, one row each: start, end, worker, outcome, error.

A task's record keeps only its last attempt (its start, finish, worker and
error are overwritten by the next). With events on, the event stream holds
every attempt's ``started`` and the event that ended it, so the task page
reads its task's events back: one bounded read, newest first, between the
task's enqueue and (once it has finished) its finish, at most
:data:`TASK_ENTRIES` stream entries. Without events, or when the stream no
longer reaches back, the record's last attempt is what there is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from ..client import Client
from ..core.events import Event, decode_events
from ..core.records import TaskInfo
from ..core.status import TaskStatus

__all__ = ["TASK_ENTRIES", "Attempt", "Attempts", "read_attempts"]

#: Stream entries read at most for one task page.
TASK_ENTRIES = 500
#: Events that end an attempt (or a task that never ran).
_ENDINGS = {"retrying", "succeeded", "failed", "aborted", "expired", "dead"}


@dataclass(frozen=True)
class Attempt:
    number: int
    """1 for the first run; 0 for an ending before any run (aborted while waiting)."""
    worker: str | None = None
    started: float | None = None
    ended: float | None = None
    outcome: str | None = None
    """The state it ended in; None while it runs, or when its worker was lost."""
    error: str | None = None
    duration: float | None = None


@dataclass(frozen=True)
class Attempts:
    rows: list[Attempt]
    from_events: bool
    """True: read from the event stream (every attempt it still holds)."""
    complete: bool = True
    """False when the read stopped at :data:`TASK_ENTRIES` before the task's enqueue
    (or, not from events, when events are on but what was read held none of its)."""


async def read_attempts(client: Client, info: TaskInfo) -> Attempts:
    """The attempts of the task ``info`` describes, from its events when events are
    on and the stream still holds them, else the last one from its record."""
    if client.settings.events and info.queue is not None:
        events, complete = await _task_events(client, info)
        if events:
            return Attempts(_from_events(events), True, complete)
        # On, but the stream no longer reaches back to this task's events.
        return Attempts(_from_record(info), False, complete=False)
    return Attempts(_from_record(info), False)


async def _task_events(client: Client, info: TaskInfo) -> tuple[list[Event], bool]:
    """The task's events, oldest first; False when the read was cut short."""
    assert info.queue is not None
    stream = client.broker.events.key(info.queue)
    oldest_ms = int((info.enqueued_at or time.time() - 3600) * 1000)
    # Entry ids come from the same clock as the record's times, a little later.
    ended = info.finished_at if info.status.is_final else None  # a retrying task goes on
    newest = f"{int(ended * 1000) + 1000}-0" if ended else None
    entries = await client.broker.events.newest(stream, oldest_ms, TASK_ENTRIES, newest)
    needle = info.id.encode()
    events = [
        event
        for entry_id, data in reversed(entries)
        if needle in data  # most entries are other tasks': don't decode them
        for event in decode_events(entry_id, data)
        if event.task_id == info.id
    ]
    return events, len(entries) < TASK_ENTRIES


def _from_events(events: list[Event]) -> list[Attempt]:
    rows: list[Attempt] = []
    for event in events:
        at = event.at.timestamp()
        if event.state == "started":
            rows.append(Attempt(event.attempt, event.worker or None, started=at))
        elif event.state in _ENDINGS:
            error = f"{event.error_type}: {event.error_message or ''}" if event.error_type else None
            open_row = next(
                (
                    n
                    for n in range(len(rows) - 1, -1, -1)
                    if rows[n].number == event.attempt and rows[n].outcome is None
                ),
                None,
            )
            if open_row is not None and event.attempt > 0:
                rows[open_row] = replace(
                    rows[open_row],
                    ended=at,
                    outcome=event.state,
                    error=error,
                    duration=event.duration,
                )
            else:  # ended without a run of its own seen (aborted while waiting, ...)
                rows.append(
                    Attempt(
                        event.attempt,
                        event.worker or None,
                        ended=at,
                        outcome=event.state,
                        error=error,
                        duration=event.duration,
                    )
                )
    return rows


def _from_record(info: TaskInfo) -> list[Attempt]:
    if not info.attempt and info.started_at is None:
        return []
    ended = info.status.is_final or info.status is TaskStatus.RETRYING
    return [
        Attempt(
            info.attempt,
            info.worker,
            started=info.started_at,
            ended=info.finished_at if ended else None,
            outcome=info.status.value if ended else None,
            error=info.error,
            duration=(
                info.finished_at - info.started_at
                if ended and info.finished_at and info.started_at
                else None
            ),
        )
    ]
