"""The broker: every state change aqueue makes in Redis, one script each.

Every multi-key state change (enqueue, start, finish, retry, promote,
reclaim, hand-back, abort, purge, replay, periodic tick) is one Lua script
over the keys of one queue, so it is atomic and stays in one Redis Cluster
slot. Reads that change nothing live in :mod:`.views`.
"""

# Over 400 lines: one method per state change, each a thin wrapper of its script.

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

from ..core.batching import Coalescer
from ..core.config import Settings
from ..core.errors import ConfigError, ConnectionFailed
from ..core.frames import encode_progress
from ..core.handoffs import HANDOFF_ABORT, Handoff
from ..core.keys import CONSUMER_GROUP, QueueKeys, queue_registry_key, schedule_keys
from ..core.protocol import Delivery, FinishItem, OutgoingMessage
from .connection import (
    REDIS_ERRORS,
    DirectLine,
    NotReplicated,
    as_failover,
    is_cluster,
    packed_head,
)
from .events import EventStream
from .pubsub import Subscription
from .scripts import RegisteredScripts, ScriptSources, clocked_source
from .slotwait import call_replicated_on_slot
from .topology import describe_topology, placement
from .views import RedisViews

__all__ = ["ENQUEUE_CHUNK", "Broker"]

#: The broker speaks only when it repaired something under the caller.
logger = logging.getLogger(__name__)

#: Pauses before an enqueue whose connection was lost is sent again (seconds):
#: three more tries within about a third of a second.
ENQUEUE_RESENDS = (0.05, 0.1, 0.2)


def _not_a_lost_connection(exc: redis.exceptions.ConnectionError) -> bool:
    """A ConnectionError that sending again would not cure: credentials, or this
    process out of connections or file descriptors."""
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
        return True
    text = str(exc)
    return any(
        words in text
        for words in ("Too many open files", "Too many connections", "No connection available")
    )


#: What an enqueue says plainly (``Broker._enqueue_failed``) or, for a lost
#: connection, sends again; other replies (a script error) go up as they are.
_ENQUEUE_ERRORS = (*REDIS_ERRORS, redis.exceptions.OutOfMemoryError)

#: Largest number of messages sent in one enqueue script call.
ENQUEUE_CHUNK = 1000

#: Largest payload, in bytes, sent in one enqueue script call. Concurrent
#: ``enqueue()`` calls are merged into one batch; without a cap, 600 messages
#: of 0.95 MB made one 570 MB request, over Redis's 512 MB limit, and the
#: server dropped the connection. Each call stays a few MiB.
ENQUEUE_CHUNK_BYTES = 4 * 1024 * 1024

#: About how many chunks a streaming task's chunk stream keeps (oldest dropped).
CHUNK_MAXLEN = 100_000

#: A lone enqueue's EVALSHA after its packed head (``packed_head``): task id, task
#: name (packed once per name), payload, fresh.
_LONE_TAIL = b"%b$%d\r\n%b\r\n%b$%d\r\n%b\r\n$1\r\n%b\r\n"

#: Encodes the row arrays of batched script calls (read by cmsgpack in Lua).
_rows = msgspec.msgpack.Encoder()


class Broker:
    """Redis commands and scripts for one App (one key prefix)."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._keys: dict[str, QueueKeys] = {}
        self._groups_ready: set[str] = set()
        #: Queues this process already put in the queue registry (one SADD each).
        self._registered: set[str] = set()
        self._enqueuer: Coalescer[str, OutgoingMessage, str] = Coalescer(self.enqueue_many)
        self._enqueue_targets: dict[str, _EnqueueTarget] = {}
        self.direct = DirectLine(client)
        #: A Redis Cluster client: no script pipelines, no direct path.
        self.cluster = is_cluster(client)
        #: How long a durable change waits for its replicas (replicas_ack).
        self._wait_ms = int(settings.connect_timeout * 1000)
        if settings.replicas_ack and not self.direct.enabled and not self.cluster:
            raise ConfigError(
                "replicas_ack needs hiredis on a standalone or Sentinel client "
                "(pip install 'redis[hiredis]')"
            )
        #: Reads that change nothing (queue figures, worker registry, lookups).
        self.views = RedisViews(client, settings.prefix)
        #: Task and worker events (issue 13): passed to the scripts, read by app.events().
        self.events = EventStream(client, settings, self.cluster)
        self._sources = ScriptSources()  # each composed and registered on first use
        self._scripts: dict[str, AsyncScript] = RegisteredScripts(client, self._sources)
        #: A test's virtual clock (epoch seconds), set only by aqueue.testing: the
        #: scripts then take "now" from it instead of Redis' TIME.
        self.test_clock: Callable[[], float] | None = None
        self._clocked: dict[str, AsyncScript] = {}
        #: (queue, consumer) -> the id of the stream's last entry when that fetch
        #: found it dry (None: it did not), where :meth:`wait_and_fetch` waits from.
        self._dry_after: dict[tuple[str, str], str | None] = {}

    def keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            # On a cluster, completion and control pushes use sharded channels.
            keys = self._keys[queue] = QueueKeys(self.settings.prefix, queue, self.cluster)
        return keys

    async def _script(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        durable: bool = False,
        events: str | None = None,
    ) -> Any:
        """Run a script; ``durable`` changes wait for ``replicas_ack`` replicas;
        ``events``: the queue whose events the script writes (when events are on)."""
        if events is not None:
            keys, args = self.events.script_extras(events, keys, args)
        try:
            return await self._call_script(name, keys, args, durable)
        except redis.exceptions.ResponseError as exc:
            # The stream's first key: every script that reads the group has it first.
            if "NOGROUP" not in str(exc) or not keys:
                raise
        await self._recreate_group(keys[0])
        return await self._call_script(name, keys, args, durable)

    async def _recreate_group(self, stream: str) -> None:
        """The queue's keys were deleted under us (FLUSHDB, DEL): recreate its group."""
        try:
            await self.client.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return
        logger.warning(
            "the consumer group of %s was gone (its keys were deleted, e.g. by FLUSHDB); "
            "recreated it. Tasks whose keys were deleted are lost with them",
            stream,
        )

    async def _call_script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], durable: bool
    ) -> Any:
        if self.test_clock is not None:
            return await self._call_clocked(name, keys, args)
        if not self.direct.enabled:
            if durable and self.cluster and self.settings.replicas_ack:
                # WAIT on the connection that ran the script, on the slot's master.
                sha = self._scripts[name].sha
                return await call_replicated_on_slot(
                    self.client,
                    keys[0],
                    self.settings.replicas_ack,
                    self._wait_ms,
                    ("EVALSHA", sha, len(keys), *keys, *args),
                    self._sources[name],
                )
            return await self._scripts[name](keys=list(keys), args=list(args))
        sha = self._scripts[name].sha
        replicas = self.settings.replicas_ack if durable else 0
        try:
            if replicas:
                return await self.direct.call_replicated(
                    replicas, self._wait_ms, "EVALSHA", sha, len(keys), *keys, *args
                )
            return await self.direct.call("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            await self.direct.call("SCRIPT", "LOAD", self._sources[name])
            if replicas:
                return await self.direct.call_replicated(
                    replicas, self._wait_ms, "EVALSHA", sha, len(keys), *keys, *args
                )
            return await self.direct.call("EVALSHA", sha, len(keys), *keys, *args)

    async def _call_clocked(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """A script's test-clock variant, "now" (ms) passed as one more argument."""
        assert self.test_clock is not None
        script = self._clocked.get(name)
        if script is None:
            script = self._clocked[name] = self.client.register_script(clocked_source(name))
        now_ms = int(self.test_clock() * 1000)
        return await script(keys=list(keys), args=[*args, now_ms])

    async def close(self) -> None:
        """Close aqueue's own connections (the client is closed by its owner)."""
        await self.direct.close()

    async def ping(self) -> None:
        await self.client.ping()

    async def topology(self) -> str:
        """Where commands go, without secrets (Sentinel's current master, cluster nodes)."""
        return await describe_topology(self.client)

    async def placement(self, queue: str) -> tuple[int, str] | None:
        """On a cluster, the queue's slot and the master that serves it."""
        return await placement(self.client, self.keys(queue).stream)

    async def register_queue(self, queue: str) -> None:
        """Put ``queue`` in the queue registry, once per process and queue.

        A queue no task declares (``options(queue=...)``) is found through it
        by ``app.result(id)`` and the operator commands.
        """
        if queue not in self._registered:
            key = queue_registry_key(self.settings.prefix)
            if self.direct.enabled:  # the enqueue's own connections, within their bound
                await self.direct.call("SADD", key, queue)
            else:
                await self.client.sadd(key, queue)
            self._registered.add(queue)

    def subscription(self) -> Subscription:
        """A new pub/sub subscription (one connection, any number of channels)."""
        return Subscription(self.client)

    # -- enqueue ---------------------------------------------------------------

    async def enqueue(self, queue: str, message: OutgoingMessage) -> str:
        """Enqueue one message; concurrent callers share one script call.

        Returns the id of the task that represents the message (another id when
        a live task already holds the message's unique key). A plain message
        while no other enqueue() of its queue is under way (the usual case) goes
        straight to ``enqueue_lone.lua`` once its queue took one.
        """
        enqueuer = self._enqueuer
        if not enqueuer.alone(queue):
            return await enqueuer.submit(queue, message)  # with the next batch
        try:
            target = self._enqueue_targets.get(queue)
            if (
                target is None
                or not target.lone_head  # made by the first lone send, when the path is open
                or not _plain(message)
                or self.test_clock is not None
            ):
                (task_id,) = await self.enqueue_many(queue, (message,))
                return task_id
            try:
                await self.direct.call_packed(target.lone_command(message))
            except redis.exceptions.NoScriptError:  # Redis lost its scripts: loaded on the way
                (task_id,) = await self.enqueue_many(queue, (message,))
                return task_id
            except _ENQUEUE_ERRORS as exc:
                await self._send_again(queue, (message,), exc)
            return message.task_id
        finally:
            enqueuer.done(queue)

    def _enqueue_target(self, queue: str) -> _EnqueueTarget:
        """What the enqueue script needs of a queue's key names, built once per queue."""
        target = self._enqueue_targets.get(queue)
        if target is None:
            target = self._enqueue_targets[queue] = _EnqueueTarget(self.keys(queue))
        return target

    def _enqueue_args(
        self, target: _EnqueueTarget, messages: Sequence[OutgoingMessage]
    ) -> list[str | bytes]:
        keys = target.keys
        # One flat row array (enqueue.lua reads ROW values per message).
        rows: list[Any] = []
        add = rows.extend
        for m in messages:
            add(
                (
                    m.task_id,
                    m.task_name,
                    len(m.payload),
                    1 if m.fresh else 0,
                    m.delay_ms,
                    keys.unique(m.unique_key) if m.unique_key else "",
                    m.unique_ttl_ms,
                    m.priority,
                    len(m.flow),
                )
            )
        # A message's limits (flow control) follow its payload in the blob.
        blob = b"".join([m.payload + m.flow if m.flow else m.payload for m in messages])
        return [target.task_prefix, target.control, _rows.encode(rows), blob, CONSUMER_GROUP]

    def _enqueue_calls(
        self, queue: str, messages: Sequence[OutgoingMessage], sha: str
    ) -> Iterator[tuple[Any, ...]]:
        """The EVALSHA of each chunk, made only when the one before is on its way."""
        target = self._enqueue_target(queue)
        script_keys = target.script_keys
        for start in range(0, len(messages), ENQUEUE_CHUNK):
            args = self._enqueue_args(target, messages[start : start + ENQUEUE_CHUNK])
            ev_keys, ev_args = self.events.script_extras(queue, script_keys, args)
            yield ("EVALSHA", sha, len(ev_keys), *ev_keys, *ev_args)

    async def enqueue_many(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Enqueue messages in as few round trips as possible (one per chunk).

        A send whose connection was lost (the command or its reply) goes again,
        the same messages under the same ids, up to ENQUEUE_RESENDS times: the
        scripts add nothing twice (already_enqueued), so a message that did get
        in is not added again, and a producer that drew its ids is not left
        guessing whether to send under a new one.
        """
        if queue not in self._registered:
            try:
                await self.register_queue(queue)
            except _ENQUEUE_ERRORS as exc:
                raise self._enqueue_failed(exc) from exc
        try:
            return await self._send_messages(queue, messages)
        except _ENQUEUE_ERRORS as exc:
            return await self._send_again(queue, messages, exc)

    async def _send_again(
        self, queue: str, messages: Sequence[OutgoingMessage], error: Exception
    ) -> list[str]:
        """After a send that raised ``error``: while it is a lost connection, the
        same messages again (see :meth:`enqueue_many`), else the error said plainly."""
        for pause in ENQUEUE_RESENDS:
            if not isinstance(error, redis.exceptions.ConnectionError) or _not_a_lost_connection(
                error
            ):
                break
            logger.debug("enqueue to %s lost its connection (%s); sending again", queue, error)
            await asyncio.sleep(pause)
            try:
                return await self._send_messages(queue, messages)
            except _ENQUEUE_ERRORS as exc:
                error = exc
        raise self._enqueue_failed(error) from error

    def _enqueue_failed(self, exc: Exception) -> Exception:
        """What an enqueue that failed with ``exc`` raises: what happened and what to do."""
        if isinstance(exc, redis.exceptions.AskError):
            if not self.cluster:
                return ConfigError(
                    f"Redis answered {str(exc).split()[0]}: it is a node of a Redis Cluster. "
                    "Use a redis+cluster://host:port[,host:port...] URL"
                )
            return ConnectionFailed(
                f"could not enqueue to Redis: the cluster is moving slots ({exc}). Nothing "
                "was acknowledged; try again"
            )
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            return ConnectionFailed(
                "could not enqueue: Redis is out of memory (used memory is over maxmemory and "
                "its policy, noeviction, refuses writes). Nothing was enqueued; free memory or "
                "raise maxmemory, then try again"
            )
        if isinstance(exc, redis.exceptions.ReadOnlyError):
            return ConnectionFailed(
                "could not enqueue: this Redis is a read-only replica (a failover is under way, "
                "or the URL names a replica). Nothing was acknowledged; try again, and use the "
                "master's URL or a redis+sentinel:// URL"
            )
        if isinstance(exc, NotReplicated):
            return ConnectionFailed(
                f"could not enqueue durably: {exc} (replicas_ack="
                f"{self.settings.replicas_ack}). It may be in Redis but was not acknowledged; "
                "check the replicas and try again"
            )
        if "Too many open files" in str(exc):
            return ConnectionFailed(
                "could not enqueue: this process ran out of file descriptors (ulimit -n) "
                "opening a connection to Redis; Redis itself was fine. Nothing was "
                "acknowledged; lower max_connections or raise the limit"
            )
        if "Too many connections" in str(exc) or "No connection available" in str(exc):
            return ConnectionFailed(
                f"could not enqueue: all {self.settings.max_connections} connections "
                "(max_connections) were in use by other calls of this process; Redis "
                "itself was fine. Nothing was acknowledged; send fewer at once "
                "(enqueue_many) or raise max_connections"
            )
        return ConnectionFailed(
            f"could not enqueue to Redis: {exc}. Nothing was acknowledged; "
            "check that Redis is reachable at the configured URL and try again"
        )

    async def _send_messages(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """One try at sending ``messages`` (see :meth:`enqueue_many`)."""
        target = self._enqueue_target(queue)
        script_keys = target.script_keys
        ids: list[str] = []
        if len(messages) == 1:
            lone = messages[0]
            if _plain(lone) and not self.settings.events:
                # A plain message alone: the script with the few helpers it needs.
                if (
                    self.direct.enabled
                    and self.test_clock is None
                    and not self.settings.replicas_ack
                ):
                    await self._send_lone(target, lone)
                    return [lone.task_id]
                await self._script(
                    "enqueue_lone",
                    target.lone_keys,
                    (
                        target.task_prefix,
                        lone.task_id,
                        lone.task_name,
                        lone.payload,
                        "1" if lone.fresh else "0",
                    ),
                    durable=True,
                )
                return [lone.task_id]
            size = len(lone.payload)
        else:
            size = sum([len(m.payload) for m in messages])
        if size > ENQUEUE_CHUNK_BYTES:
            # One call per chunk of a few MiB, in order, over the bounded direct path.
            for chunk in _byte_chunks(messages):
                args = self._enqueue_args(target, chunk)
                reply = await self._script("enqueue", script_keys, args, durable=True, events=queue)
                ids.extend(_represented(chunk, reply))
            return ids
        if len(messages) <= ENQUEUE_CHUNK:
            # One script call: no pipeline, whose execute() would first ask
            # SCRIPT EXISTS (an extra round trip on the latency path).
            reply = await self._script(
                "enqueue",
                script_keys,
                self._enqueue_args(target, messages),
                durable=True,
                events=queue,
            )
            return _represented(messages, reply)
        if self.cluster or self.settings.replicas_ack or self.test_clock is not None:
            # A cluster client refuses script pipelines: one call per chunk,
            # in order (all of them go to the queue's one node anyway).
            for start in range(0, len(messages), ENQUEUE_CHUNK):
                chunk = messages[start : start + ENQUEUE_CHUNK]
                args = self._enqueue_args(target, chunk)
                reply = await self._script("enqueue", script_keys, args, durable=True, events=queue)
                ids.extend(_represented(chunk, reply))
            return ids
        if self.direct.enabled:
            # Every message was checked before this call, so the chunks go out
            # one after another on one connection: Redis runs a chunk while the
            # next is prepared and sent. A resent chunk adds nothing twice
            # (already_enqueued), so on NOSCRIPT all go again once loaded.
            sha = self._scripts["enqueue"].sha
            try:
                replies = await self.direct.call_each(self._enqueue_calls(queue, messages, sha))
            except redis.exceptions.NoScriptError:
                await self.direct.call("SCRIPT", "LOAD", self._sources["enqueue"])
                replies = await self.direct.call_each(self._enqueue_calls(queue, messages, sha))
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                for start in range(0, len(messages), ENQUEUE_CHUNK):
                    chunk = messages[start : start + ENQUEUE_CHUNK]
                    ev_keys, ev_args = self.events.script_extras(
                        queue, script_keys, self._enqueue_args(target, chunk)
                    )
                    await self._scripts["enqueue"](keys=ev_keys, args=ev_args, client=pipe)
                replies = await pipe.execute()
        for start, reply in zip(range(0, len(messages), ENQUEUE_CHUNK), replies, strict=True):
            ids.extend(_represented(messages[start : start + ENQUEUE_CHUNK], reply))
        return ids

    async def _send_lone(self, target: _EnqueueTarget, message: OutgoingMessage) -> None:
        """``enqueue_lone.lua`` on the direct line, its unchanging head packed once per queue."""
        if not target.lone_head:
            target.lone_head = packed_head(
                9,
                "EVALSHA",
                self._scripts["enqueue_lone"].sha,
                1,
                *target.lone_keys,
                target.task_prefix,
            )
        packed = target.lone_command(message)
        try:
            await self.direct.call_packed(packed)
        except redis.exceptions.NoScriptError:
            await self.direct.call("SCRIPT", "LOAD", self._sources["enqueue_lone"])
            await self.direct.call_packed(packed)

    async def enqueue_keyed(
        self, queue: str, message: OutgoingMessage, mode: str, delay_ms: int
    ) -> tuple[str, str]:
        """Enqueue a message whose unique key debounces or replaces (``lua/unique.lua``).

        Returns ``("ok", id)``, ``("rebuild", id)`` (send it again carrying the
        waiting task's id) or ``("again", "")`` (that task started meanwhile).
        """
        keys = self.keys(queue)
        script_keys = (
            keys.stream,
            keys.delayed,
            keys.delayed_payloads,
            keys.unique(message.unique_key),
        )
        args = [
            keys.task_prefix,
            keys.control_channel,
            message.task_id,
            message.task_name,
            message.payload,
            mode,
            delay_ms,
            message.unique_ttl_ms,
        ]
        try:
            status, task_id = await self._script(
                "unique", script_keys, args, durable=True, events=queue
            )
        except NotReplicated as exc:
            raise ConnectionFailed(
                f"could not enqueue durably: {exc}. It may be in Redis but was not "
                "acknowledged; check the replicas and try again"
            ) from exc
        except REDIS_ERRORS as exc:
            raise ConnectionFailed(
                f"could not enqueue to Redis: {exc}. Nothing was acknowledged; "
                "check that Redis is reachable at the configured URL and try again"
            ) from exc
        return _text(status), _text(task_id)

    async def save_schedule(self, name: str, encoded: bytes) -> None:
        """Add or change a schedule kept in Redis; schedulers see it within a second."""
        table, version = schedule_keys(self.settings.prefix)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(table, name, encoded)
            pipe.incr(version)
            await pipe.execute()

    async def drop_schedule(self, name: str) -> bool:
        """Remove a schedule kept in Redis; False when there was none of that name."""
        table, version = schedule_keys(self.settings.prefix)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(table, name)
            pipe.incr(version)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def advance_tick(self, queue: str, schedule: str, tick_ms: int) -> None:
        """Mark a schedule's ticks up to ``tick_ms`` as claimed (never moves back)."""
        await self._script("tick_advance", (self.keys(queue).periodic(schedule),), [tick_ms])

    # -- worker side -----------------------------------------------------------

    async def ensure_group(self, queue: str) -> None:
        """Create the queue's stream and consumer group if they don't exist."""
        keys = self.keys(queue)
        try:
            await self.client.xgroup_create(keys.stream, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await self.register_queue(queue)
        self._groups_ready.add(queue)

    async def read(self, queue: str, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """New entries for this consumer: at most ``count``, waiting up to ``block_ms``."""
        keys = self.keys(queue)
        try:
            if self.direct.enabled:
                # On the latency path: a task enqueued on an idle queue wakes this read.
                raw = await self.direct.call(
                    "XREADGROUP", "GROUP", CONSUMER_GROUP, consumer, "COUNT", count,
                    "BLOCK", block_ms, "STREAMS", keys.stream, ">",
                )  # fmt: skip
                # RESP2 answers [[stream, entries]], RESP3 {stream: entries}; entries
                # are [id, [field, value, ...]].
                streams = raw.items() if isinstance(raw, dict) else (raw or [])
                return await self._without_bells(
                    queue,
                    [
                        (entry_id, dict(zip(flat[::2], flat[1::2], strict=True)), 1)
                        for _stream, entries in streams
                        for entry_id, flat in entries
                    ],
                )
            reply = await self.client.xreadgroup(
                CONSUMER_GROUP, consumer, {keys.stream: ">"}, count=count, block=block_ms
            )
        except redis.exceptions.ResponseError as exc:
            message = str(exc)
            # UNBLOCKED also comes with a failover ("instance state changed"): only
            # a deleted stream ("no longer exists") means the group must come back.
            deleted = "UNBLOCKED" in message and "no longer exists" in message
            if "NOGROUP" not in message and not deleted:
                classified = as_failover(exc)
                if classified is not exc:
                    raise classified from exc
                raise
            # The stream was deleted (e.g. purged) under us: recreate and retry later.
            await self._recreate_group(keys.stream)
            return []
        parsed: Any = reply or []
        return await self._without_bells(
            queue,
            [(entry_id, fields, 1) for _stream, entries in parsed for entry_id, fields in entries],
        )

    async def _without_bells(
        self, queue: str, entries: list[tuple[Any, dict[Any, Any], int]]
    ) -> list[Delivery]:
        """Deliveries of the entries read, dropping bells.

        A bell (flow control) is added to an idle queue's stream when an urgent
        task arrives, to wake a worker blocked here; the urgent task itself is
        taken by the next fetch.
        """
        bells = [entry_id for entry_id, fields, _n in entries if b"bell" in fields]
        if bells:
            stream = self.keys(queue).stream
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xack(stream, CONSUMER_GROUP, *bells)
                pipe.xdel(stream, *bells)
                await pipe.execute()
        return [_delivery(queue, e, fields, n) for e, fields, n in entries if b"bell" not in fields]

    async def fetch(
        self, queue: str, consumer: str, count: int, refused: list[Delivery] | None = None
    ) -> list[Delivery]:
        """New entries (at most ``count``), already marked running, without blocking.

        Entries refused at the door (dead-lettered by the script) are not
        returned; they are added to ``refused`` when given (``refused`` says why).
        When the stream ran dry, :meth:`wait_and_fetch` can wait for more.
        """
        keys, args = self._fetch_call(queue, consumer, count)
        try:
            flat = await self._script("fetch", keys, args, events=queue)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._recreate_group(keys[0])
            return []
        return self._fetched(queue, consumer, flat, refused)

    def _fetch_call(self, queue: str, consumer: str, count: int) -> tuple[list[str], list[Any]]:
        """The fetch script's keys and arguments (events' extras not added)."""
        keys = self.keys(queue)
        return [keys.stream, keys.dead, keys.outbox], [
            keys.task_prefix, CONSUMER_GROUP, consumer, count, *self._door_args(keys)
        ]  # fmt: skip

    def _fetched(
        self, queue: str, consumer: str, flat: list[Any], refused: list[Delivery] | None
    ) -> list[Delivery]:
        """The fetch script's reply as deliveries; notes where an idle wait starts."""
        # Replies are bytes (the client never decodes responses); the script
        # refused task ids that are not UTF-8. A last odd value: the stream ran
        # dry, and this is the id of its last entry.
        self._dry_after[queue, consumer] = _text(flat.pop()) if len(flat) % 4 else None
        out = []
        for i in range(0, len(flat), 4):
            d = Delivery(queue, _text(flat[i]), _text(flat[i + 1]), flat[i + 2], 1, flat[i + 3])
            if d.attempt > 0:
                out.append(d)
            elif refused is not None:  # the reason in place of the message
                d.refused, d.payload = _text(d.payload), b""
                refused.append(d)
        return out

    async def wait_and_fetch(
        self,
        queue: str,
        consumer: str,
        count: int,
        block_ms: int,
        refused: list[Delivery] | None = None,
    ) -> list[Delivery] | None:
        """:meth:`fetch`, once the stream has an entry past where the last fetch found
        it dry (or ``block_ms`` passed); None when that is not known (then
        :meth:`read` waits) or on a Redis Cluster or a test clock.

        One round trip: a blocking ``XREAD`` and the fetch script go together on
        one connection, and Redis runs the script the moment the read ends,
        instead of replying to the worker and waiting for it to ask again. The
        read takes nothing (every idle worker of the queue wakes; the first
        fetch takes the task, the others find the stream dry again, which is
        why the fetch script offers this wait only to queues of at most two
        workers) and starts from an id, not ``$``, so an entry added since that
        fetch ends it at once.
        """
        after = self._dry_after.pop((queue, consumer), None)
        if after is None or self.cluster or self.test_clock is not None:
            return None
        keys, args = self.events.script_extras(queue, *self._fetch_call(queue, consumer, count))
        wait = ("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", keys[0], after)
        try:
            if self.direct.enabled:
                script = ("EVALSHA", self._scripts["fetch"].sha, len(keys), *keys, *args)
                flat = (await self.direct.call_many((wait, script)))[1]
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.execute_command(*wait)
                    await self._scripts["fetch"](keys=list(keys), args=list(args), client=pipe)
                    flat = (await pipe.execute())[1]
        except redis.exceptions.ResponseError as exc:
            if isinstance(exc, redis.exceptions.NoScriptError) or "NOGROUP" in str(exc):
                # Redis restarted or the stream was deleted during the wait: the
                # plain fetch loads the script again or recreates the group.
                return await self.fetch(queue, consumer, count, refused)
            classified = as_failover(exc)
            if classified is not exc:
                raise classified from exc
            raise
        return self._fetched(queue, consumer, flat, refused)

    def _door_args(self, keys: QueueKeys) -> list[Any]:
        """What the door every delivery passes (``take_entry`` in the scripts) needs:
        max_deliveries, dead_letter_maxlen, result TTL (ms), completion channel."""
        s = self.settings
        return [s.max_deliveries, s.dead_letter_maxlen, int(s.result_ttl * 1000), keys.done_channel]

    async def start(self, queue: str, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """Mark deliveries running, setting their ``attempt``.

        0: aborted while waiting; -1: over a rate or concurrency limit, so it
        left the stream to wait in Redis (flow control), or, with ``refused``
        set, refused at the door and dead-lettered (``refused`` says why).
        """
        keys = self.keys(queue)
        # A first delivery with limits (flow control) is checked against them:
        # its limits and payload go in a blob.
        limited = [d for d in deliveries if d.flow and d.deliveries == 1]
        rows = _rows.encode(
            [
                (d.entry_id, d.task_id, len(d.flow), len(d.payload))
                if d.flow and d.deliveries == 1
                else (d.entry_id, d.task_id)
                for d in deliveries
            ]
        )
        blob = b"".join([d.flow + d.payload for d in limited])
        attempts = await self._script(
            "start",
            (keys.stream, keys.dead, keys.outbox),
            [keys.task_prefix, CONSUMER_GROUP, consumer, rows, *self._door_args(keys), blob],
            events=queue,
        )
        for d, attempt in zip(deliveries, attempts, strict=True):
            if isinstance(attempt, bytes):  # refused at the door: the reason
                d.attempt, d.refused = -1, _text(attempt)
            else:
                d.attempt = int(attempt)

    async def finish(self, queue: str, consumer: str, items: Sequence[FinishItem]) -> list[str]:
        """Record outcomes + XACK in one script call; returns the fenced-off entry ids."""
        keys = self.keys(queue)
        s = self.settings
        rows: list[Any] = []
        blob: list[bytes] = []
        events = s.events
        for item in items:
            values, parts = item.row(events)
            rows += values
            blob += parts
        args: list[Any] = [
            keys.task_prefix,
            CONSUMER_GROUP,
            consumer,
            int(s.result_ttl * 1000),
            keys.done_channel,
            s.dead_letter_maxlen,
            keys.control_channel,
            _rows.encode(rows),
            b"".join(blob),
        ]
        fenced = await self._script(
            "finish",
            (keys.stream, keys.delayed, keys.delayed_payloads, keys.dead, keys.outbox),
            args,
            durable=True,
            events=queue,
        )
        return [_text(x) for x in fenced]

    async def renew(
        self, queue: str, consumer: str, running: Sequence[tuple[str, str]]
    ) -> tuple[list[str], list[str]]:
        """Heartbeat and extend the leases of ``(entry_id, task_id)`` pairs.

        Returns (entries this worker lost, entries whose task is to be aborted).
        """
        keys = self.keys(queue)
        lease_ms = int(self.settings.visibility_timeout * 1000)
        args: list[Any] = [CONSUMER_GROUP, consumer, keys.task_prefix, lease_ms]
        for entry_id, task_id in running:
            args += (entry_id, task_id)
        lost, aborted = await self._script("renew", (keys.stream, keys.workers), args)
        return [_text(x) for x in lost], [_text(x) for x in aborted]

    async def claim_own_stale(
        self, queue: str, consumer: str, min_idle_ms: int, count: int, skip: set[str]
    ) -> list[Delivery]:
        """Re-claim entries pending for ``consumer`` itself, idle ``min_idle_ms`` or more,
        other than ``skip`` (what it runs): deliveries whose reply was lost with a
        dropped connection, which the consumer never saw."""
        keys = self.keys(queue)
        found = await self._claim_own_stale_in(
            queue, keys.stream, consumer, min_idle_ms, count, skip
        )
        if len(found) < count and await self.client.exists(keys.urgent_stream):
            # Urgent tasks (flow control) are delivered from a stream of their own.
            found += await self._claim_own_stale_in(
                queue, keys.urgent_stream, consumer, min_idle_ms, count - len(found), skip
            )
        return found

    async def _claim_own_stale_in(
        self, queue: str, stream: str, consumer: str, min_idle_ms: int, count: int, skip: set[str]
    ) -> list[Delivery]:
        pending: Any = await self.client.xpending_range(
            stream,
            CONSUMER_GROUP,
            min="-",
            max="+",
            count=count,
            consumername=consumer,
            idle=min_idle_ms,
        )
        delivered = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        ids: list[Any] = [entry for entry in delivered if entry not in skip]
        if not ids:
            return []
        # The idle condition again: a lease renewed meanwhile is not taken.
        claimed: Any = await self.client.xclaim(stream, CONSUMER_GROUP, consumer, min_idle_ms, ids)
        return await self._without_bells(
            queue,
            [
                (entry, fields, delivered.get(_text(entry), 0) + 1)
                for entry, fields in claimed
                if fields
            ],
        )

    async def reclaim(
        self, queue: str, consumer: str, count: int, refused: list[Delivery] | None = None
    ) -> list[Delivery]:
        """Claim entries of dead or hung workers (dead-lettering over-delivered ones).

        The claimed entries come back already marked running for this consumer;
        those refused at the door (dead-lettered by the script) are added to
        ``refused`` when given.
        """
        keys = self.keys(queue)
        flat = await self._reclaim_stream(queue, keys.stream, consumer, count)
        if len(flat) < 4 * count and await self.client.exists(keys.urgent_stream):
            # Urgent tasks (flow control) are delivered from a stream of their own.
            flat += await self._reclaim_stream(
                queue, keys.urgent_stream, consumer, count - len(flat) // 4
            )
        out: list[Delivery] = []
        for i in range(0, len(flat), 4):
            fields = flat[i + 1]
            as_dict = {fields[j]: fields[j + 1] for j in range(0, len(fields), 2)}
            for delivery in await self._without_bells(
                queue, [(flat[i], as_dict, int(flat[i + 2]))]
            ):
                delivery.attempt = int(flat[i + 3])
                if delivery.attempt > 0:
                    out.append(delivery)
                elif refused is not None:
                    delivery.refused = _text(as_dict.get(b"reason", b""))
                    refused.append(delivery)
        return out

    async def _reclaim_stream(self, queue: str, stream: str, consumer: str, count: int) -> Any:
        keys = self.keys(queue)
        s = self.settings
        visibility_ms = int(s.visibility_timeout * 1000)
        dead_after_ms = min(int(s.dead_worker_after * 1000), visibility_ms)
        return await self._script(
            "reclaim",
            (stream, keys.workers, keys.dead, keys.outbox),
            [
                CONSUMER_GROUP,
                consumer,
                visibility_ms,
                dead_after_ms,
                count,
                s.max_deliveries,
                keys.task_prefix,
                int(s.result_ttl * 1000),
                keys.done_channel,
                s.dead_letter_maxlen,
            ],
            events=queue,
        )

    async def thread_gate(
        self, queue: str, task_id: str, consumer: str, entry_id: str, resume: bool
    ) -> bool:
        """A ``def`` task waiting for a free thread: shown queued (``resume=False``),
        then running when a thread begins it (False: aborted meanwhile, don't run)."""
        mode = "resume" if resume else "park"
        done = await self._script(
            "thread",
            (self.keys(queue).task(task_id),),
            [mode, consumer, entry_id, task_id],
            events=queue,
        )
        return bool(done)

    async def abort(self, queue: str, task_id: str, error: bytes) -> str:
        """Abort a task; returns the state it was in ('' when unknown)."""
        keys = self.keys(queue)
        state = await self._script(
            "abort",
            (keys.delayed, keys.delayed_payloads, keys.outbox),
            [
                keys.task_prefix,
                task_id,
                int(self.settings.result_ttl * 1000),
                keys.done_channel,
                keys.control_channel,
                error,
            ],
            events=queue,
        )
        return _text(state)

    async def promote(self, queue: str, limit: int = 1000) -> tuple[int, int]:
        """Move due delayed tasks into the stream: (moved, ms until next due or -1)."""
        keys = self.keys(queue)
        moved, wait = await self._script(
            "promote",
            (keys.stream, keys.delayed, keys.delayed_payloads),
            [keys.task_prefix, limit, CONSUMER_GROUP],
            events=queue,
        )
        return int(moved), int(wait)

    async def leave(
        self, queue: str, consumer: str, keep: Sequence[str] = (), waiting: Sequence[str] = ()
    ) -> int:
        """Hand back anything still pending for this consumer, then forget it.

        Entries in ``keep`` (tasks still running in threads that can't be
        stopped) stay leased to the consumer, which then stays registered until
        its heartbeat is gone. A handed-back entry keeps its delivery count
        (``max_deliveries`` still applies), less the delivery of an entry in
        ``waiting`` (read ahead and never begun). Returns how many entries were
        handed back.
        """
        keys = self.keys(queue)
        args: list[Any] = [keys.task_prefix, CONSUMER_GROUP, consumer, *keep]
        if waiting:
            args += ("--waiting", *waiting)
        n = await self._script("leave", (keys.stream, keys.workers), args, events=queue)
        return int(n)

    async def purge(self, queue: str, error: bytes, limit: int = 1000) -> tuple[int, int]:
        """Remove up to ``limit`` waiting stream entries and delayed tasks.

        Returns (stream entries removed, delayed tasks removed); running tasks
        are not touched. Call again while either count is non-zero.
        """
        keys = self.keys(queue)
        from_stream, from_delayed = await self._script(
            "purge",
            (keys.stream, keys.delayed, keys.delayed_payloads, keys.outbox),
            [
                keys.task_prefix,
                CONSUMER_GROUP,
                int(self.settings.result_ttl * 1000),
                keys.done_channel,
                error,
                limit,
            ],
            events=queue,
        )
        return int(from_stream), int(from_delayed)

    async def set_progress(self, queue: str, task_id: str, value: Any, message: str) -> None:
        """Store a running task's latest progress report in its record."""
        key = self.keys(queue).task(task_id)
        if self.settings.events:  # one script: the progress and its event together
            await self._script(
                "progress", (key,), [task_id, encode_progress(value, message)], events=queue
            )
            return
        await self.client.hset(key, "progress", encode_progress(value, message))

    async def claim_tick(
        self, queue: str, schedule: str, tick_ms: int, message: OutgoingMessage
    ) -> tuple[str, str]:
        """Claim one tick of a periodic schedule and enqueue its run, atomically.

        Returns ``(outcome, task id)``; outcome is 'enqueued', 'claimed' (another
        scheduler had it), 'new' (first sight: recorded, not run) or 'skipped'
        (a singleton whose previous run is live).
        """
        keys = self.keys(queue)
        unique_key = keys.unique(message.unique_key) if message.unique_key else ""
        await self.register_queue(queue)
        outcome, task_id = await self._script(
            "tick",
            (keys.periodic(schedule), keys.stream),
            [
                keys.task_prefix,
                tick_ms,
                message.task_id,
                message.task_name,
                message.payload,
                unique_key,
                message.unique_ttl_ms,
            ],
            events=queue,
        )
        return _text(outcome), _text(task_id)

    # -- workflows (issue 12) ----------------------------------------------------

    async def handoffs(self, queue: str, count: int) -> list[tuple[str, dict[bytes, bytes]]]:
        """The oldest ``count`` entries of the queue's outbox: (entry id, fields). A
        finish call writes a field of encoded hand-off rows per outcome; the reclaimer
        writes ``dead`` (the message it dead-lettered) and ``deliveries``."""
        entries: Any = await self.client.xrange(self.keys(queue).outbox, count=count)
        return [(_text(entry_id), dict(fields)) for entry_id, fields in entries]

    async def forward(
        self,
        queue: str,
        handoffs: Sequence[Handoff],
        parents: Sequence[tuple[str, str]] | None = None,
    ) -> tuple[int, list[str]]:
        """Apply hand-offs that belong to ``queue``: enqueue or fail chain steps, count
        chord members. Idempotent: a step or member forwarded before is left alone.
        ``parents``: per hand-off, (task id, queue) of the step that handed it on
        (id "": not known), kept in the record of a step enqueued or failed here.

        Returns (steps enqueued, ids of chords whose callback is now due).
        """
        if parents is None:
            rows = _rows.encode(
                [(key, name, len(body), kind) for _, key, name, body, kind in handoffs]
            )
        else:
            rows = _rows.encode(
                [
                    (key, name, len(body), kind, parent, parent_queue)
                    for (_, key, name, body, kind), (parent, parent_queue) in zip(
                        handoffs, parents, strict=True
                    )
                ]
            )
        enqueued, complete, _settled = await self._forward(
            queue, rows, b"".join([handoff[3] for handoff in handoffs])
        )
        return int(enqueued), [_text(x) for x in complete]

    async def _forward(self, queue: str, rows: bytes, blob: bytes) -> Any:
        """One call of forward.lua: (steps enqueued, chords now due, steps settled)."""
        keys = self.keys(queue)
        await self.register_queue(queue)
        return await self._script(
            "forward",
            (keys.stream,),
            [
                keys.task_prefix,
                keys.done_channel,
                int(self.settings.result_ttl * 1000),
                keys.chord_prefix,
                rows,
                blob,
            ],
            events=queue,
        )

    async def abort_unsent(self, queue: str, task_id: str, error: bytes) -> bool:
        """Abort a workflow step that was not enqueued yet: its record says aborted, so
        it is never enqueued. False when it has a record (it was enqueued meanwhile)."""
        rows = _rows.encode([(task_id, "", len(error), HANDOFF_ABORT)])
        _enqueued, _complete, settled = await self._forward(queue, rows, error)
        return int(settled) == 1

    async def create_chord(
        self, queue: str, chord_id: str, size: int, allow_failures: bool, callback: OutgoingMessage
    ) -> None:
        """Record a chord before its members are sent: size, failure mode, callback."""
        await self.register_queue(queue)
        await self.client.hset(
            self.keys(queue).chord(chord_id),
            mapping={
                "n": size,
                "done": 0,
                "allow": 1 if allow_failures else 0,
                "cbid": callback.task_id,
                "cbname": callback.task_name,
                "cb": callback.payload,
            },
        )

    async def chord_state(self, queue: str, chord_id: str) -> dict[bytes, bytes]:
        """A chord's hash: ``n``, ``done``, ``allow``, ``cbid``, ``cbname``, ``cb``, ``m:<i>``."""
        state: Any = await self.client.hgetall(self.keys(queue).chord(chord_id))
        return dict(state)

    async def fire_chord(
        self, queue: str, chord_id: str, task_id: str, name: str, fail: bool, body: bytes
    ) -> bool:
        """Enqueue (or fail) a chord's callback unless done before; True if this call did."""
        keys = self.keys(queue)
        fired = await self._script(
            "chord",
            (keys.stream, keys.chord(chord_id)),
            [
                keys.task_prefix,
                keys.done_channel,
                int(self.settings.result_ttl * 1000),
                task_id,
                name,
                1 if fail else 0,
                body,
                chord_id,
            ],
            events=queue,
        )
        return bool(fired)

    async def drop_handoffs(self, queue: str, entry_ids: Sequence[str]) -> None:
        """Forget hand-offs that were forwarded."""
        if entry_ids:
            await self.client.xdel(self.keys(queue).outbox, *entry_ids)

    # -- streaming tasks (issue 12) ----------------------------------------------

    async def append_chunk(
        self, queue: str, task_id: str, attempt: int, index: int, chunk: bytes
    ) -> None:
        """Add chunk number ``index`` (from 1) of a streaming task's run ``attempt``."""
        key = self.keys(queue).chunks(task_id)
        ttl_ms = int(self.settings.result_ttl * 1000)
        await self._script("chunk", (key,), [f"{attempt}-{index}", chunk, CHUNK_MAXLEN, ttl_ms])

    async def read_chunks(
        self, queue: str, task_id: str, after: str, block_ms: int | None
    ) -> list[tuple[str, bytes]]:
        """Chunks after entry id ``after``, waiting up to ``block_ms`` (None: not at all)."""
        key = self.keys(queue).chunks(task_id)
        reply: Any = await self.client.xread({key: after}, count=1000, block=block_ms)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {key: [entries]} (or {key: entries})
            value = next(iter(reply.values()))
            entries = value[0] if value and isinstance(value[0], list) else value
        else:
            entries = reply[0][1]
        return [(_text(entry_id), fields[b"c"]) for entry_id, fields in entries]

    async def last_chunk_id(self, queue: str, task_id: str) -> str:
        """The id of the newest chunk ("0-0" when there is none)."""
        last: Any = await self.client.xrevrange(self.keys(queue).chunks(task_id), count=1)
        return _text(last[0][0]) if last else "0-0"

    # -- dead letters ----------------------------------------------------------

    async def replay_dead(self, queue: str, entry_ids: Sequence[str]) -> list[str]:
        """Re-enqueue dead-lettered messages; per id the new stream entry id ('' if unknown)."""
        if not entry_ids:
            return []
        keys = self.keys(queue)
        new = await self._script(
            "replay", (keys.stream, keys.dead), [keys.task_prefix, *entry_ids], events=queue
        )
        return [_text(x) for x in new]

    async def purge_dead(self, queue: str) -> int:
        """Delete a queue's dead-letter stream; returns how many entries it held."""
        dead = self.keys(queue).dead
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xlen(dead)
            pipe.delete(dead)
            n, _ = await pipe.execute()
        return int(n)

    async def delete_every_key(self) -> int:
        """Delete every key under this App's prefix (a demo's or a test's own).

        Scans the keyspace; returns how many keys were deleted.
        """
        deleted = 0
        batch: list[Any] = []
        async for key in self.client.scan_iter(match=f"{self.settings.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self.client.unlink(*batch)
        return deleted

    # -- records ---------------------------------------------------------------

    async def record(self, queue: str, task_id: str) -> dict[bytes, bytes]:
        """The task's record hash (empty when unknown or expired)."""
        key = self.keys(queue).task(task_id)
        if self.direct.enabled:
            reply = await self.direct.call("HGETALL", key)
            if isinstance(reply, dict):  # RESP3 (redis-py 8's default) answers with a map
                return reply
            return dict(zip(reply[::2], reply[1::2], strict=True))
        result: Any = await self.client.hgetall(key)
        return dict(result)

    async def records(self, queue: str, task_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        keys = self.keys(queue)
        if len(task_ids) == 1:
            return [await self.record(queue, task_ids[0])]
        if self.direct.enabled:
            direct = await self.direct.call_many([("HGETALL", keys.task(i)) for i in task_ids])
            return [
                r if isinstance(r, dict) else dict(zip(r[::2], r[1::2], strict=True))
                for r in direct
            ]
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(keys.task(task_id))
            replies: list[dict[bytes, bytes]] = await pipe.execute()
        return replies


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _byte_chunks(messages: Sequence[OutgoingMessage]) -> list[Sequence[OutgoingMessage]]:
    """Consecutive chunks of at most ``ENQUEUE_CHUNK`` messages and, unless one
    message is bigger alone, ``ENQUEUE_CHUNK_BYTES`` of payload."""
    chunks: list[Sequence[OutgoingMessage]] = []
    start = size = 0
    for i, message in enumerate(messages):
        n = len(message.payload)
        if i > start and (size + n > ENQUEUE_CHUNK_BYTES or i - start >= ENQUEUE_CHUNK):
            chunks.append(messages[start:i])
            start, size = i, 0
        size += n
    if start < len(messages):
        chunks.append(messages[start:])
    return chunks


def _delivery(queue: str, entry_id: bytes | str, fields: dict[Any, Any], n: int) -> Delivery:
    task_id = fields.get(b"id", b"")
    return Delivery(
        queue=queue,
        entry_id=_text(entry_id),
        task_id=task_id.decode("utf-8", "replace") if isinstance(task_id, bytes) else "",
        payload=fields.get(b"m", b""),
        deliveries=n,
        flow=fields.get(b"f", b""),
    )


class _EnqueueTarget:
    """A queue's key names as the enqueue script takes them."""

    __slots__ = (
        "control",
        "keys",
        "lone_head",
        "lone_keys",
        "lone_names",
        "script_keys",
        "task_prefix",
    )

    def __init__(self, keys: QueueKeys) -> None:
        self.keys = keys
        self.script_keys = (keys.stream, keys.delayed, keys.delayed_payloads)
        self.lone_keys = (keys.stream,)
        self.task_prefix = keys.task_prefix
        self.control = keys.control_channel
        #: The lone enqueue's EVALSHA up to its first message argument (made on first use).
        self.lone_head = b""
        #: Task names as the lone command carries them, packed once each.
        self.lone_names: dict[str, bytes] = {}

    def lone_command(self, message: OutgoingMessage) -> bytes:
        """``enqueue_lone.lua``'s EVALSHA of ``message``, packed (after ``lone_head``)."""
        name = self.lone_names.get(message.task_name)
        if name is None:
            encoded = message.task_name.encode()
            name = self.lone_names[message.task_name] = b"$%d\r\n%b\r\n" % (len(encoded), encoded)
        task_id, payload = message.task_id.encode(), message.payload
        return _LONE_TAIL % (
            self.lone_head,
            len(task_id),
            task_id,
            name,
            len(payload),
            payload,
            b"1" if message.fresh else b"0",
        )


def _plain(message: OutgoingMessage) -> bool:
    """Whether ``message`` alone can take ``enqueue_lone.lua``: no delay, unique key,
    priority or limits."""
    return not (message.delay_ms or message.unique_key or message.priority or message.flow)


def _represented(messages: Sequence[OutgoingMessage], reply: Sequence[Any]) -> list[str]:
    """The id of the task that represents each message, from ``enqueue.lua``'s reply
    (position, id) for those another task represents; the others are their own."""
    ids = [m.task_id for m in messages]
    for i in range(0, len(reply), 2):
        ids[int(reply[i]) - 1] = _text(reply[i + 1])
    return ids
