"""The event stream in Redis: where it is, writing a worker's own events, reading.

Task events are written by the scripts that change state (see ``emit`` in
``lua/_common.lua``); the broker passes them the stream with
:meth:`EventStream.script_extras`. One stream per app; on Redis Cluster one
per queue under the queue's hash tag, since a script touches a single slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from ..core.config import Settings
from ..core.keys import events_key

__all__ = ["EventStream"]


class EventStream:
    """The event stream(s) of one App."""

    def __init__(self, client: aioredis.Redis, settings: Settings, cluster: bool) -> None:
        self.client = client
        self.settings = settings
        self.cluster = cluster

    def key(self, queue: str) -> str:
        """The stream ``queue``'s events go to."""
        return events_key(self.settings.prefix, queue if self.cluster else None)

    def script_extras(
        self, queue: str, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[Sequence[str], Sequence[Any]]:
        """A script's keys and arguments with what its events need when events are
        on: the stream after its keys, queue and maxlen after its arguments (see
        ``events_from`` in _common.lua). Off, they go unchanged."""
        if not self.settings.events:
            return keys, args
        return [*keys, self.key(queue)], [*args, queue, self.settings.events_maxlen]

    async def worker_event(self, queues: Sequence[str], worker: str, state: str) -> None:
        """Publish a worker's ``worker_online`` / ``worker_offline``, once per queue."""
        if not self.settings.events:
            return
        from ..core.events import encode_worker_event  # the events' format: only with events on

        for queue in queues:
            await self.client.xadd(
                self.key(queue),
                {"e": encode_worker_event(queue, worker, state, 0)},
                maxlen=self.settings.events_maxlen,
                approximate=True,
            )

    async def read(
        self, positions: dict[str, str], count: int, block_ms: int | None
    ) -> list[tuple[str, str, bytes]]:
        """Entries after each stream's position: ``(stream, entry id, data)``,
        waiting up to ``block_ms`` for the first (None: not at all). On Redis
        Cluster the streams live in different slots: one read each, none blocking."""
        if self.cluster and len(positions) > 1:
            out: list[tuple[str, str, bytes]] = []
            for stream, position in positions.items():
                out += await self.read({stream: position}, count, None)
            return out
        streams: Any = positions
        reply: Any = await self.client.xread(streams, count=count, block=block_ms)
        if not reply:
            return []
        items = reply.items() if isinstance(reply, dict) else reply
        found: list[tuple[str, str, bytes]] = []
        for stream, value in items:
            # RESP3 may wrap the entries in one more list.
            entries = value[0] if value and isinstance(value[0], list) else value
            found.extend(
                (_text(stream), _text(entry_id), fields.get(b"e", b""))
                for entry_id, fields in entries
            )
        return found

    async def newest(
        self, stream: str, oldest_ms: int, count: int, before: str | None = None
    ) -> list[tuple[str, bytes]]:
        """Up to ``count`` entries of ``stream``, newest first, added at ``oldest_ms``
        or later and (when given) before the entry ``before``: ``(entry id, data)``."""
        high = f"({before}" if before else "+"
        found: Any = await self.client.xrevrange(stream, high, f"{oldest_ms}-0", count=count)
        return [(_text(entry_id), fields.get(b"e", b"")) for entry_id, fields in found]

    async def last_id(self, stream: str) -> str:
        """The newest entry's id in ``stream`` ("0-0" when there is none)."""
        last: Any = await self.client.xrevrange(stream, count=1)
        return _text(last[0][0]) if last else "0-0"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
