"""Task states as stored in Redis and shown to callers."""

from __future__ import annotations

import enum

__all__ = ["FINAL_STATES", "TaskStatus"]


class TaskStatus(enum.StrEnum):
    """Where a task is in its life. Its value is what Redis stores."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    EXPIRED = "expired"
    DEAD = "dead"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """True once the task will not change state again."""
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.ABORTED,
        TaskStatus.EXPIRED,
        TaskStatus.DEAD,
    }
)
