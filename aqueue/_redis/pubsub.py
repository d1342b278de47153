"""A pub/sub subscription, the only way aqueue listens to Redis.

One connection carries any number of channels: the result waiter of a
process subscribes to each queue's completion channel on it, a worker to its
queues' control channels. Messages come back as plain tuples, so the code
above never sees redis-py's message dictionaries.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import redis.asyncio as aioredis

__all__ = ["Message", "Subscription"]


class Message(NamedTuple):
    kind: str
    """'message', or a confirmation: 'subscribe', 'unsubscribe'."""
    channel: bytes
    data: bytes


class Subscription:
    """Channels subscribed on one dedicated connection (opened on first subscribe)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._pubsub: Any = client.pubsub()

    async def subscribe(self, *channels: str | bytes) -> None:
        await self._pubsub.subscribe(*channels)

    async def next(self, timeout: float, confirmations: bool = True) -> Message | None:  # noqa: ASYNC109
        """The next message within ``timeout`` seconds (None: nothing came)."""
        msg = await self._pubsub.get_message(
            ignore_subscribe_messages=not confirmations, timeout=timeout
        )
        if msg is None:
            return None
        data = msg["data"]
        return Message(str(msg["type"]), msg["channel"], data if isinstance(data, bytes) else b"")

    async def reconnect(self) -> None:
        """Open a new connection and subscribe every channel again."""
        await self._pubsub.connect()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
