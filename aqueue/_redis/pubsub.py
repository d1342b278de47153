"""A pub/sub subscription, the only way aqueue listens to Redis.

One subscription carries any number of channels: the result waiter of a
process subscribes to each queue's completion channel on it, a worker to its
queues' control channels. Messages come back as plain tuples, so the code
above never sees redis-py's message dictionaries.

Two things a listener must know, which redis-py hides:

* **Gaps.** redis-py reconnects a dropped pub/sub connection by itself and
  subscribes again, silently; whatever was published in between is lost.
  Every reconnect is reported as a ``gap`` message, so the listener can
  re-check what it waits for instead of trusting pushes that never came.
* **Sharded channels** (names that start with ``SHARDED_MARK``, used on Redis
  Cluster): each is subscribed with ``SSUBSCRIBE`` on the master that owns
  its slot, one connection per slot (a queue's channels share one slot), and
  followed to the new master after a failover. Servers without sharded
  pub/sub (before Redis 7) get a plain ``SUBSCRIBE`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, NamedTuple

import redis.asyncio as aioredis
import redis.exceptions
from redis.crc import key_slot

from ..core.keys import SHARDED_MARK
from .connection import is_cluster

__all__ = ["GAP", "Message", "Subscription"]

logger = logging.getLogger(__name__)


class Message(NamedTuple):
    kind: str
    """'message'; a confirmation, 'subscribe' or 'unsubscribe'; or 'gap': the
    connection was lost and made again, so messages may have been missed."""
    channel: bytes
    data: bytes


#: Reported after a reconnect: anything published meanwhile was not received.
GAP = Message("gap", b"", b"")

_KINDS = {"smessage": "message", "ssubscribe": "subscribe", "sunsubscribe": "unsubscribe"}


class Subscription:
    """Channels subscribed on one dedicated connection (opened on first subscribe);
    sharded channels on one connection per slot."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._pubsub: Any = client.pubsub()
        #: Reconnects of the plain connection not yet reported as a gap.
        self._gaps = 0
        self._watched: Any = None
        #: A message read after a reconnect, handed out after the gap.
        self._held: Message | None = None
        self._shards: _Shards | None = _Shards(client) if is_cluster(client) else None

    async def subscribe(self, *channels: str | bytes) -> None:
        plain = []
        for channel in channels:
            name = channel.decode() if isinstance(channel, bytes) else channel
            if name.startswith(SHARDED_MARK) and self._shards is not None:
                await self._shards.subscribe(name)
            else:
                plain.append(channel)
        if plain:
            await self._pubsub.subscribe(*plain)
            self._watch()

    def _watch(self) -> None:
        """Count the connection's reconnects (redis-py calls back on each)."""
        connection = self._pubsub.connection
        if connection is not None and connection is not self._watched:
            connection.register_connect_callback(self._reconnected)
            self._watched = connection

    async def _reconnected(self, _connection: Any) -> None:
        self._gaps += 1

    async def next(self, timeout: float, confirmations: bool = True) -> Message | None:  # noqa: ASYNC109
        """The next message within ``timeout`` seconds (None: nothing came)."""
        if self._gaps:
            self._gaps = 0
            return GAP
        if self._shards is not None and not self._pubsub.subscribed:
            return await self._shards.next(timeout, confirmations)
        if self._shards is not None and self._shards.subscribed:
            # Both kinds at once: take what the shards have, then the plain channels.
            got = await self._shards.next(0, confirmations)
            if got is not None:
                return got
        if self._held is not None:
            held, self._held = self._held, None
            return held
        msg = await self._pubsub.get_message(
            ignore_subscribe_messages=not confirmations, timeout=timeout
        )
        got = None
        if msg is not None:
            data = msg["data"]
            got = Message(
                str(msg["type"]), msg["channel"], data if isinstance(data, bytes) else b""
            )
        if self._gaps:
            # The reconnect came first (redis-py made it, then read this message):
            # tell of it first, so a listener sees the new confirmations after it.
            self._gaps = 0
            self._held = got
            return GAP
        return got

    async def reconnect(self) -> None:
        """Open a new connection and subscribe every channel again."""
        if self._pubsub.subscribed:
            await self._pubsub.connect()
            self._watch()
        if self._shards is not None:
            self._shards.wake()

    async def close(self) -> None:
        if self._shards is not None:
            await self._shards.close()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()


class _Shards:
    """Sharded channels of a cluster: one reader task per slot, one inbox."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._slots: dict[int, _Slot] = {}

    @property
    def subscribed(self) -> bool:
        return bool(self._slots)

    async def subscribe(self, marked: str) -> None:
        channel = marked[len(SHARDED_MARK) :]
        slot = key_slot(channel.encode())
        shard = self._slots.get(slot)
        if shard is None:
            shard = self._slots[slot] = _Slot(self._client, slot, self._inbox)
        await shard.add(channel)

    async def next(self, timeout: float, confirmations: bool) -> Message | None:  # noqa: ASYNC109
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                if timeout <= 0:
                    msg = self._inbox.get_nowait()
                else:
                    async with asyncio.timeout_at(deadline):
                        msg = await self._inbox.get()
            except (TimeoutError, asyncio.QueueEmpty):
                return None
            if confirmations or msg.kind in ("message", "gap"):
                return msg

    def wake(self) -> None:
        for shard in self._slots.values():
            shard.wake()

    async def close(self) -> None:
        for shard in self._slots.values():
            await shard.close()
        self._slots.clear()


class _Slot:
    """The sharded channels of one slot, followed to whichever master owns it."""

    def __init__(self, client: Any, slot: int, inbox: asyncio.Queue[Message]) -> None:
        self._client = client
        self._slot = slot
        self._inbox = inbox
        self._channels: list[str] = []
        self._pubsub: Any = None
        self._pool: Any = None
        self._plain = False
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._retry = asyncio.Event()

    async def add(self, channel: str) -> None:
        if channel in self._channels:
            return
        self._channels.append(channel)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name=f"aqueue-shard-{self._slot}")
        elif self._ready.is_set():
            with contextlib.suppress(*_LOST):
                await self._send_subscribe([channel])
                return
            self.wake()  # the reader reconnects and subscribes every channel

    def wake(self) -> None:
        self._retry.set()

    async def _send_subscribe(self, channels: list[str]) -> None:
        if self._plain:
            await self._pubsub.subscribe(*channels)
            return
        try:
            await self._pubsub.ssubscribe(*channels)
        except redis.exceptions.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            # Before Redis 7 the scripts PUBLISH these channels: subscribe plainly.
            self._plain = True
            await self._pubsub.subscribe(*channels)

    async def _open(self) -> None:
        """Connect to the slot's current master and subscribe every channel."""
        node = self._client.get_node_from_key(self._channels[0])
        if node is None:
            raise redis.exceptions.ConnectionError(f"no node serves slot {self._slot}")
        self._pool = aioredis.ConnectionPool(
            connection_class=node.connection_class, max_connections=1, **node.connection_kwargs
        )
        self._pubsub = aioredis.Redis(connection_pool=self._pool).pubsub()
        sent = 0
        while len(self._channels) > sent:  # more may be added while one is on its way
            batch, sent = self._channels[sent:], len(self._channels)
            await self._send_subscribe(batch)
        self._pubsub.connection.register_connect_callback(self._reconnected)

    async def _reconnected(self, _connection: Any) -> None:
        """redis-py made the connection again (and subscribed again) by itself."""
        self._inbox.put_nowait(GAP)

    async def _read(self) -> None:
        backoff = 0.05
        first = True
        while True:
            try:
                await self._open()
                if not first:
                    await self._inbox.put(GAP)
                first = False
                self._ready.set()
                backoff = 0.05
                while not self._retry.is_set():
                    msg = await self._pubsub.get_message(timeout=1.0)
                    if msg is not None:
                        kind = str(msg["type"])
                        if kind == "sunsubscribe":
                            # The server let go of the slot (its master became a
                            # replica, or the slot moved): follow it to its new master.
                            await self._refresh_routes()
                            break
                        data = msg["data"]
                        await self._inbox.put(
                            Message(
                                _KINDS.get(kind, kind),
                                SHARDED_MARK.encode() + msg["channel"],
                                data if isinstance(data, bytes) else b"",
                            )
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the reader must outlive any one failure
                logger.debug("sharded subscription of slot %d lost: %r", self._slot, exc)
                await self._refresh_routes()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._ready.clear()
                self._retry.clear()
                await self._drop()
            first = False

    async def _refresh_routes(self) -> None:
        """Ask the cluster who serves the slot now (after a failover or a move)."""
        with contextlib.suppress(Exception):
            await self._client.exists(self._channels[0])
        with contextlib.suppress(Exception):
            await self._client.nodes_manager.initialize()

    async def _drop(self) -> None:
        pubsub, pool = self._pubsub, self._pool
        self._pubsub = self._pool = None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.disconnect()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self._drop()


_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
