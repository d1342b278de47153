"""Every Redis key and channel name aqueue uses, built in one place.

All keys of one queue share the hash tag ``{queue}``, so a queue's keys live
in one Redis Cluster slot and every script touches a single slot.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONSUMER_GROUP", "QueueKeys", "events_key", "worker_info_key"]

#: The one consumer group every worker of a queue joins.
CONSUMER_GROUP = "aqueue"


def worker_info_key(prefix: str, worker: str) -> str:
    """String holding one live worker's self-description (JSON, with a TTL).

    Not tied to a queue (a worker may read several), so it has no hash tag;
    it is only ever read and written on its own.
    """
    return f"{prefix}:worker:{worker}"


def events_key(prefix: str, queue: str | None = None) -> str:
    """Capped stream of task and worker events.

    One per app (``queue`` None); on Redis Cluster one per queue under the
    queue's hash tag, since the scripts that write it touch a single slot.
    """
    if queue is None:
        return f"{prefix}:events"
    return f"{prefix}:{{{queue}}}:events"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Key names of one queue under one prefix."""

    prefix: str
    queue: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}"

    @property
    def stream(self) -> str:
        """The stream tasks are read from (one consumer group)."""
        return f"{self.base}:stream"

    @property
    def delayed(self) -> str:
        """Sorted set of task ids waiting for their ETA (score: due time, ms)."""
        return f"{self.base}:delayed"

    @property
    def delayed_payloads(self) -> str:
        """Hash task id -> encoded message of every delayed task."""
        return f"{self.base}:delayed:payloads"

    @property
    def dead(self) -> str:
        """Dead-letter stream: messages that can't or won't run, with the reason."""
        return f"{self.base}:dead"

    @property
    def outbox(self) -> str:
        """Stream of workflow hand-offs (next steps) written with this queue's outcomes."""
        return f"{self.base}:outbox"

    @property
    def workers(self) -> str:
        """Sorted set of consumer names by last heartbeat (ms)."""
        return f"{self.base}:workers"

    @property
    def done_channel(self) -> str:
        """Pub/sub channel announcing finished tasks of this queue."""
        return f"{self.base}:done"

    @property
    def control_channel(self) -> str:
        """Pub/sub channel for commands to this queue's workers (abort)."""
        return f"{self.base}:control"

    @property
    def task_prefix(self) -> str:
        return f"{self.base}:task:"

    def task(self, task_id: str) -> str:
        """Hash holding one task's state, attempt, result or error."""
        return f"{self.base}:task:{task_id}"

    def chunks(self, task_id: str) -> str:
        """Capped stream of a streaming task's chunks; entry ids are ``<attempt>-<n>``."""
        return f"{self.base}:chunks:{task_id}"

    @property
    def chord_prefix(self) -> str:
        return f"{self.base}:chord:"

    def chord(self, chord_id: str) -> str:
        """Hash of one chord whose callback runs in this queue: size, count, the
        members' outcomes (until the callback is enqueued), the callback's message."""
        return f"{self.base}:chord:{chord_id}"

    def unique(self, unique_key: str) -> str:
        """String holding the id of the live task that owns ``unique_key``."""
        return f"{self.base}:unique:{unique_key}"

    def periodic(self, name: str) -> str:
        """String holding the last tick claimed for a periodic task."""
        return f"{self.base}:periodic:{name}"
