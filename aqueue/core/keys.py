"""Every Redis key and channel name aqueue uses, built in one place.

All keys of one queue share the hash tag ``{queue}``, so a queue's keys live
in one Redis Cluster slot and every script touches a single slot.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "CONSUMER_GROUP",
    "SHARDED_MARK",
    "QueueKeys",
    "events_key",
    "queue_registry_key",
    "schedule_keys",
    "worker_info_key",
]

#: The one consumer group every worker of a queue joins.
CONSUMER_GROUP = "aqueue"

#: Leads the name of a sharded pub/sub channel (Redis Cluster): the scripts
#: SPUBLISH to it and subscriptions SSUBSCRIBE to it, without the mark.
SHARDED_MARK = "!"


def worker_info_key(prefix: str, worker: str) -> str:
    """String holding one live worker's self-description (JSON, with a TTL).

    Not tied to a queue (a worker may read several), so it has no hash tag;
    it is only ever read and written on its own.
    """
    return f"{prefix}:worker:{worker}"


def schedule_keys(prefix: str) -> tuple[str, str]:
    """(hash of schedules kept in Redis by name, counter bumped on every change).

    Both share one hash tag, so a change and its counter bump are one
    transaction, on Redis Cluster too; schedulers read the counter each second.
    """
    return f"{prefix}:{{schedules}}:all", f"{prefix}:{{schedules}}:version"


def queue_registry_key(prefix: str) -> str:
    """Set of every queue name anything was ever enqueued to or read from.

    So a queue that no task declares (``task.options(queue="high")``) can be
    found by ``app.result(id)``, ``aqueue status``, ``inspect`` and ``check``.
    Not tied to a queue, so it has no hash tag; only one-key commands touch it.
    Bounded by the number of queue names in use.
    """
    return f"{prefix}:queues"


def events_key(prefix: str, queue: str | None = None) -> str:
    """Capped stream of task and worker events.

    One per app (``queue`` None); on Redis Cluster one per queue under the
    queue's hash tag, since the scripts that write it touch a single slot.
    """
    if queue is None:
        return f"{prefix}:events"
    return f"{prefix}:{{{queue}}}:events"


class QueueKeys(msgspec.Struct, frozen=True):
    """Key names of one queue under one prefix."""

    prefix: str
    queue: str
    #: The channels are sharded (on Redis Cluster: pushes stay on the queue's node).
    sharded: bool = False

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
        return f"{SHARDED_MARK if self.sharded else ''}{self.base}:done"

    @property
    def control_channel(self) -> str:
        """Pub/sub channel for commands to this queue's workers (abort)."""
        return f"{SHARDED_MARK if self.sharded else ''}{self.base}:control"

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

    # Flow control (see lua/_flow.lua for the rest of its keys) -------------------

    @property
    def urgent(self) -> str:
        """Sorted set of waiting tasks with a priority above 0 (most urgent first)."""
        return f"{self.base}:prio"

    @property
    def urgent_payloads(self) -> str:
        """Hash task id -> encoded message of every task in :attr:`urgent`."""
        return f"{self.base}:prio:m"

    @property
    def urgent_stream(self) -> str:
        """The stream urgent tasks are delivered from (entry ids ``0-N``)."""
        return f"{self.base}:pstream"

    @property
    def held(self) -> str:
        """Hash task id -> encoded message of every task waiting for a concurrency token."""
        return f"{self.base}:held"

    @property
    def wait_keys(self) -> str:
        """Set of the concurrency keys whose waiting list is not empty."""
        return f"{self.base}:waitkeys"

    def waiting(self, limit_key: str) -> str:
        """List of the ids of tasks waiting for a token of ``limit_key``, oldest first."""
        return f"{self.base}:wait:{limit_key}"

    def tokens(self, limit_key: str) -> str:
        """Sorted set of the ids of tasks holding a token of ``limit_key``."""
        return f"{self.base}:conc:{limit_key}"
